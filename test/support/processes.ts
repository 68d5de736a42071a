import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
export const gatewayMain = path.join(repoRoot, "dist/main.js")
export const everythingServer = path.join(repoRoot, "node_modules/@modelcontextprotocol/server-everything/dist/index.js")
export const filesystemServer = path.join(repoRoot, "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")

export const tempDir = (prefix = "gw-e2e-") => fs.mkdtempSync(path.join(os.tmpdir(), prefix))

/** A port nobody listens on right now (bound to 0, read, released). */
export const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

const waitForOutput = (child: ChildProcess, stream: "stdout" | "stderr", pattern: RegExp, timeoutMs: number, seen: () => string) =>
  new Promise<RegExpMatchArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${pattern}; output so far:\n${seen()}`)), timeoutMs)
    const check = () => {
      const match = seen().match(pattern)
      if (match) {
        clearTimeout(timer)
        child[stream]!.off("data", check)
        child.off("exit", onExit)
        resolve(match)
      }
    }
    const onExit = (code: number | null) => {
      clearTimeout(timer)
      reject(new Error(`process exited (${code}) before ${pattern}; output:\n${seen()}`))
    }
    child[stream]!.on("data", check)
    child.once("exit", onExit)
    check()
  })

const exited = (child: ChildProcess, timeoutMs: number) =>
  new Promise<number | null>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode)
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      resolve(null)
    }, timeoutMs)
    child.once("exit", (code) => {
      clearTimeout(timer)
      resolve(code)
    })
  })

/** Every process below `pid` (children, grandchildren, ... whatever their process group). */
export const descendants = (pid: number): Array<number> => {
  const table = processTable()
  const found: Array<number> = []
  const walk = (parent: number) => {
    for (const [child, ppid] of table) {
      if (ppid === parent) {
        found.push(child)
        walk(child)
      }
    }
  }
  walk(pid)
  return found
}

/**
 * The processes `pid` started itself: for a gateway, one per server process whether the server
 * runs as itself or in a sandbox (bwrap, which starts the sandbox's init, which starts the server).
 */
export const children = (pid: number): Array<number> => processTable().filter(([, ppid]) => ppid === pid).map(([child]) => child)

/** Every process's pid and parent's pid. */
const processTable = () =>
  // (Leaving out the `ps` that lists them, a child of this process while it runs.)
  execFileSync("ps", ["-eo", "pid=,ppid=,comm="], { encoding: "utf8" })
    .trim().split("\n").map((line) => line.trim().split(/\s+/))
    .filter(([, , comm]) => comm !== "ps")
    .map(([pid, ppid]) => [Number(pid), Number(ppid)] as [number, number])

/** Whether a process still runs (a zombie, dead but not yet reaped by its parent, does not). */
export const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    // /proc/{pid}/stat: "pid (comm) state ...": Z is a zombie.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z"
  } catch {
    return true
  }
}

/** Each process's pid, state and command line, for a failure's message ("gone" once it ended). */
export const describeProcesses = (pids: ReadonlyArray<number>) =>
  pids.map((pid) => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim()
      return `${pid} [${state}] ${cmdline}`
    } catch {
      return `${pid} (gone)`
    }
  }).join("; ")

export interface RunningGateway {
  readonly url: string
  readonly process: ChildProcess
  readonly stdout: () => string
  readonly stderr: () => string
  /** SIGTERM, then wait for exit; resolves with the exit code. */
  readonly stop: () => Promise<number | null>
}

/** Starts the built gateway (`node dist/main.js start`) on a free port and waits until it listens. */
export const startGateway = async (options: {
  readonly configFile?: string
  readonly args?: ReadonlyArray<string>
  readonly env?: Record<string, string>
  /** Run it as this unprivileged uid (and gid) instead of the test's user (setpriv; the test must be root). */
  readonly asUser?: number
}): Promise<RunningGateway> => {
  const gatewayArgs = [gatewayMain, "start", "--port", "0", ...(options.configFile ? ["--config", options.configFile] : []), ...(options.args ?? [])]
  // (setpriv execs node: the child's pid is the gateway's.)
  const [command, args] = options.asUser === undefined
    ? [process.execPath, gatewayArgs]
    : ["setpriv", [`--reuid=${options.asUser}`, `--regid=${options.asUser}`, "--clear-groups", "--", process.execPath, ...gatewayArgs]]
  const child = spawn(command, args, {
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let stdout = ""
  let stderr = ""
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d))
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d))
  const match = await waitForOutput(child, "stderr", /listening on (http:\/\/[^\s"]+)/, 60_000, () => stderr)
  return {
    url: match[1]!,
    process: child,
    stdout: () => stdout,
    stderr: () => stderr,
    stop: () => {
      child.kill("SIGTERM")
      return exited(child, 20_000)
    }
  }
}

/** Runs the gateway to completion (for start-up failures): exit code and output. */
export const runGateway = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [gatewayMain, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    child.once("exit", (code) => resolve({ code, stdout, stderr }))
  })

export interface RunningServer {
  readonly url: string
  readonly port: number
  readonly stop: () => Promise<unknown>
}

/** server-everything in streamableHttp mode on a free (or given) port; its MCP endpoint is /mcp. */
export const startEverythingHttp = (givenPort?: number) => startEverything("streamableHttp", givenPort)

/** server-everything in legacy HTTP+SSE mode; its SSE endpoint is /sse. */
export const startEverythingSse = (givenPort?: number) => startEverything("sse", givenPort)

const startEverything = async (mode: "streamableHttp" | "sse", givenPort?: number): Promise<RunningServer> => {
  const port = givenPort ?? await freePort()
  const child = spawn(process.execPath, [everythingServer, mode], {
    env: { ...process.env, PORT: String(port) },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (output += d))
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (output += d))
  await waitForOutput(child, "stderr", /listening on port|running on port/, 30_000, () => output)
  return {
    url: `http://127.0.0.1:${port}/${mode === "sse" ? "sse" : "mcp"}`,
    port,
    stop: () => {
      child.kill("SIGTERM")
      return exited(child, 10_000)
    }
  }
}

export const writeJson = (file: string, value: unknown) => fs.writeFileSync(file, JSON.stringify(value, null, 2))

/** fetch + JSON, keeping status and headers for assertions. */
// (The answer's type is written out: inferred, it names undici's types by their path, which in a
// git worktree whose node_modules is a link is not portable, and tsc fails with TS2742.)
export const api = async (url: string, init?: RequestInit & { json?: unknown }): Promise<{ status: number; headers: Headers; body: any }> => {
  const response = await fetch(url, {
    ...init,
    ...(init?.json === undefined ? {} : { method: init.method ?? "POST", body: JSON.stringify(init.json), headers: { "content-type": "application/json", ...init.headers } })
  })
  const text = await response.text()
  let body: any
  try {
    body = text === "" ? undefined : JSON.parse(text)
  } catch {
    body = text
  }
  return { status: response.status, headers: response.headers, body }
}

export const waitUntil = async (condition: () => Promise<boolean> | boolean, timeoutMs = 20_000, what = "condition") => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await condition()) return
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`timed out waiting for ${what}`)
}

/** The headers an MCP client sends with every POST to a Streamable HTTP endpoint. */
export const mcpPostHeaders = { "content-type": "application/json", accept: "application/json, text/event-stream" }

/** A raw MCP `initialize` POST (for what the SDK client does not let a test do); the session id is in the answer's headers. */
export const initializeRaw = (endpoint: string, id: number | string = 1, params: Record<string, unknown> = {}) =>
  fetch(endpoint, {
    method: "POST",
    headers: mcpPostHeaders,
    body: JSON.stringify({
      jsonrpc: "2.0",
      id,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "e2e", version: "1" }, ...params }
    })
  })

/** A node script from test/fixtures that prints its port on stdout once it listens (header-echo-server.mjs). */
export const startFixtureServer = async (script: string, env: Record<string, string> = {}): Promise<RunningServer> => {
  const child = spawn(process.execPath, [path.join(repoRoot, "test/fixtures", script)], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (output += d))
  const [, port] = await waitForOutput(child, "stdout", /^(\d+)\n/, 10_000, () => output)
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    port: Number(port),
    stop: () => {
      child.kill("SIGTERM")
      return exited(child, 10_000)
    }
  }
}
