// What the bench scripts (run.mjs, ab.mjs, profile.mjs) share: flags, request bodies, wrk and its
// numbers, backends and gateways started and stopped, and a process's CPU time and memory from /proc.
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { freePort, start, stop } from "./processes.mjs"

const here = path.dirname(fileURLToPath(import.meta.url))
export const root = path.resolve(here, "..")

/** `--name value` from argv, or the fallback. */
export const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`)
  return i === -1 ? fallback : process.argv[i + 1]
}
/** `--name` given (a switch). */
export const flag = (name) => process.argv.includes(`--${name}`)

export const rpcBody = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "echo", arguments: { message: "hi" } } })
export const restBody = JSON.stringify({ name: "echo", arguments: { message: "hi" } })

/** Fails unless each tool is on the PATH. */
export const requireTools = (tools, hint) => {
  for (const tool of tools) {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" })
    } catch {
      throw new Error(`${tool} is not installed (${hint})`)
    }
  }
}

const toMs = (v, unit) => Number(v) * (unit === "us" ? 0.001 : unit === "s" ? 1000 : 1)

/** One wrk run (POST `body` to `url`): req/s, request count, p50/p99 in ms, errors (non-2xx, timeouts). */
export const wrk = (url, body, { seconds, connections, session, headers = {} }) => {
  const out = execFileSync("wrk", ["-t1", `-c${connections}`, `-d${seconds}s`, "--latency", "-s", path.join(here, "post.lua"), url], {
    env: {
      ...process.env,
      BODY: body,
      ...(session ? { SESSION: session } : {}),
      HEADERS: Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join("\n")
    },
    encoding: "utf8"
  })
  const latency = (p) => {
    const m = out.match(new RegExp(`\\s${p}%\\s+([\\d.]+)(us|ms|s)`))
    return m ? toMs(m[1], m[2]) : NaN
  }
  const errors = Number(out.match(/Non-2xx or 3xx responses:\s+(\d+)/)?.[1] ?? 0) +
    Number(out.match(/Socket errors:.*?(\d+) timeout/)?.[1] ?? 0)
  return {
    rps: Number(out.match(/Requests\/sec:\s+([\d.]+)/)?.[1] ?? 0),
    requests: Number(out.match(/(\d+) requests in/)?.[1] ?? 0),
    p50: latency(50),
    p99: latency(99),
    errors
  }
}

/** `n` bench backends (backend.mjs); their ports. */
export const startBackends = async (n) => {
  const ports = []
  for (let i = 0; i < n; i++) {
    const { value } = await start(process.execPath, [path.join(here, "backend.mjs"), "0"], (o) => o.match(/^(\d+)\n/)?.[1])
    ports.push(Number(value))
  }
  return ports
}

/** The `bench` template: the backends, round robin. */
export const benchTemplate = (backends) => ({
  instances: backends.map((p, i) => ({ id: `b${i + 1}`, transport: "http", endpoint: `http://127.0.0.1:${p}/mcp` })),
  load_balancer: { strategy: "round_robin" }
})

/**
 * Starts a gateway (`main`, dist/main.js by default) with the `bench` template over `backends`
 * (unless `config.templates` says otherwise) and what `config` adds; ready when
 * /gateway/health answers (its log may be quieted by the config). `headers` are what the
 * config's auth needs of a caller.
 */
export const startGateway = async (dir, name, config, backends, { main = path.join(root, "dist/main.js"), nodeArgs = [], headers = {}, untilListening = false } = {}) => {
  const port = await freePort()
  const file = path.join(dir, name)
  fs.writeFileSync(file, JSON.stringify({ templates: { bench: benchTemplate(backends) }, ...config }))
  // `untilListening`: up once it logs "listening on" (after the first round of health checks), not merely answering.
  const { child } = await start(process.execPath, [...nodeArgs, main, "start", "--config", file, "--port", String(port)], (o) => (!untilListening || o.includes("listening on") ? true : undefined))
  const url = `http://127.0.0.1:${port}`
  for (let i = 0; ; i++) {
    const up = await fetch(`${url}/gateway/health`, { headers }).then((r) => r.status < 500, () => false)
    if (up) break
    if (i === 600 || child.exitCode !== null) throw new Error(`gateway ${name} did not start`)
    await new Promise((r) => setTimeout(r, 50))
  }
  return { url, port, child, pid: child.pid, stop: () => stop(child) }
}

/** Opens an MCP session on the gateway's endpoint for `template` (at `protocolVersion`); its id. */
export const initializeSession = async (url, template = "bench", headers = {}, protocolVersion = "2025-11-25") => {
  const response = await fetch(`${url}/mcp/${template}`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream", ...headers },
    body: JSON.stringify({ jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion, capabilities: {}, clientInfo: { name: "bench", version: "1" } } })
  })
  await response.text()
  const session = response.headers.get("mcp-session-id")
  if (session === null) throw new Error(`initialize on ${template} answered ${response.status} without a session`)
  return session
}

/** Fails unless one POST answers 200 with the echo (each system is checked before it is measured). */
export const check = async (url, body, session, headers = {}) => {
  for (let attempt = 1; ; attempt++) {
    // (A keep-alive connection of fetch's own that the server closed in the meantime fails once: tried again.)
    const answer = await fetch(url, {
      method: "POST",
      body,
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream", ...(session ? { "mcp-session-id": session } : {}), ...headers }
    }).then(async (response) => ({ status: response.status, text: await response.text() }), (e) => ({ status: 0, text: `${e.message} (${e.cause?.message ?? "no cause"})` }))
    if (answer.status === 200 && answer.text.includes("Echo: hi")) return
    if (attempt === 3) throw new Error(`${url} answered ${answer.status}: ${answer.text.slice(0, 200)}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }))

/** User + system CPU of a process so far, in microseconds (Linux). */
export const cpuMicros = (pid) => {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLOCK_TICKS
}

/** Resident memory of a process, in bytes (Linux). */
export const rssBytes = (pid) => {
  const m = fs.readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+) kB/)
  return m ? Number(m[1]) * 1024 : NaN
}
