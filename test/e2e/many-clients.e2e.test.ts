import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { descendants, everythingServer, isAlive, type RunningGateway, startGateway, tempDir, waitUntil, writeJson } from "../support/processes.js"

/**
 * Real clients, as the issue tried them: SDK 1.x clients that declare sampling, roots and
 * elicitation (each gets a process of its own under the default `session_process: "auto"`),
 * 20 at a time, each connecting, listing tools, calling `echo` and leaving without DELETE.
 * Every one is served, the gateway never runs more server processes than its bound, and once
 * they are gone it is back to its idle minimum. `MANY_CLIENTS` sets how many (300 in the
 * issue; fewer here, as the machine is shared).
 */
const CLIENTS = Number(process.env.MANY_CLIENTS ?? 60)
const AT_A_TIME = 20
const INSTANCES = 2
/** The default max_sessions_per_instance. */
const SLOTS = 16
const WARM = 1
/** Per instance: its shared process, and its slots (sessions' own processes and warm ones). */
const BOUND = INSTANCES * (1 + SLOTS)
/** Once every client left: the shared processes and the warm ones. */
const IDLE_MINIMUM = INSTANCES * (1 + WARM)

const CAPABILITIES = { sampling: {}, roots: { listChanged: true }, elicitation: {} }

/**
 * An error with what lies under it: "fetch failed" says nothing, its cause (undici's
 * `UND_ERR_SOCKET` "other side closed", `ECONNRESET`, `ECONNREFUSED` ...) and the socket's
 * ends and byte counts say which side closed what, and when.
 */
const explain = (error: unknown, depth = 0): string => {
  if (!(error instanceof Error)) return String(error)
  const e = error as Error & Record<string, any>
  const details = ["code", "errno", "syscall", "address", "port"].filter((k) => e[k] !== undefined).map((k) => `${k}=${e[k]}`)
  if (e.socket !== undefined && typeof e.socket === "object") {
    const { localPort, remotePort, bytesWritten, bytesRead, timeout } = e.socket
    details.push(`socket=${JSON.stringify({ localPort, remotePort, bytesWritten, bytesRead, timeout })}`)
  }
  const text = `${e.name}: ${e.message}${details.length > 0 ? ` [${details.join(" ")}]` : ""}`
  return e.cause !== undefined && depth < 4 ? `${text} ← cause: ${explain(e.cause, depth + 1)}` : text
}

describe(`${CLIENTS} capable clients, ${AT_A_TIME} at a time, leaving without DELETE`, () => {
  let gateway: RunningGateway

  // A gateway for each run: a second run on the first one's gateway inherits the connections its
  // clients' shared pool (one undici pool for the whole test process, unlike real clients, each a
  // process of its own) opened and never used; the gateway closes such a connection after
  // first_request_timeout, and a run starting at that moment sent requests on some of them
  // ("other side closed" at connect, 6-8 clients, on a loaded machine).
  beforeEach(async () => {
    const configFile = path.join(tempDir(), "gateway.json")
    writeJson(configFile, {
      gateway: { max_sessions_per_client: 10_000 },
      // Twenty cold starts at once on a shared two-core machine can take longer than the default
      // 10 s a merged list waits for a template (it would be left out, named in _meta).
      aggregation: { list_timeout: 60 },
      templates: {
        everything: {
          instances: Array.from({ length: INSTANCES }, (_, i) => ({ id: `e${i + 1}`, transport: "stdio", command: ["node", everythingServer, "stdio"] })),
          load_balancer: { session_process_idle_timeout: 10, warm_processes: WARM, health_check_interval: 600 }
        }
      }
    })
    gateway = await startGateway({ configFile })
  })

  afterEach(async () => {
    const family = descendants(gateway.process.pid!)
    await gateway?.stop()
    await waitUntil(() => family.every((pid) => !isAlive(pid)), 10_000, "every process to be gone")
  })

  const run = async (endpoint: string, echoTool: string) => {
    let most = 0
    const watching = setInterval(() => (most = Math.max(most, descendants(gateway.process.pid!).filter(isAlive).length)), 100)
    let served = 0
    const failures: Array<string> = []
    const started = Date.now()
    const stderrBefore = gateway.stderr().length
    const one = async (n: number) => {
      const client = new Client({ name: `client-${n}`, version: "1.0.0" }, { capabilities: CAPABILITIES })
      const clientStarted = Date.now()
      let step = "connect"
      try {
        await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}${endpoint}`)))
        step = "tools/list"
        const tools = await client.listTools()
        // (/mcp prefixes a tool with its template's name when it has more than one template.)
        const echo = tools.tools.find((t) => t.name === "echo" || t.name === echoTool)
        if (echo === undefined) throw new Error(`no ${echoTool} among [${tools.tools.map((t) => t.name).join(", ")}] ${JSON.stringify(tools._meta ?? {})}`)
        step = "tools/call"
        const echoed = await client.callTool({ name: echo.name, arguments: { message: `client ${n}` } })
        if (JSON.stringify(echoed.content) !== JSON.stringify([{ type: "text", text: `Echo: client ${n}` }])) throw new Error(JSON.stringify(echoed))
        served++
      } catch (e) {
        failures.push(
          `client ${n} at ${step}, ${Date.now() - clientStarted} ms into it (${((Date.now() - started) / 1000).toFixed(1)} s into the run): ${explain(e)}`
        )
      } finally {
        // Leaves as most clients do: the transport dropped, no DELETE.
        await client.close().catch(() => {})
      }
    }
    let next = 0
    await Promise.all(Array.from({ length: AT_A_TIME }, async () => {
      while (next < CLIENTS) await one(next++)
    }))
    const seconds = (Date.now() - started) / 1000
    clearInterval(watching)
    console.log(`${endpoint}: ${served} of ${CLIENTS} served in ${seconds.toFixed(1)} s (${(CLIENTS / seconds).toFixed(1)} sessions/s); at most ${most} server processes (bound ${BOUND})`)
    if (failures.length > 0) {
      // Everything the next failure needs to say why: each client's error with its causes, and
      // what the gateway said meanwhile: warnings and errors, and sessions or responses it ended.
      console.log(`${endpoint}: ${failures.length} failed:\n  ${failures.join("\n  ")}`)
      const said = gateway.stderr().slice(stderrBefore).split("\n").filter((line) =>
        line !== "" && (!/"logLevel":"(INFO|DEBUG)"|level=(INFO|DEBUG)/.test(line) || /ending session|closed a client|stopping|refused/.test(line)))
      console.log(`the gateway's warnings, errors and ended sessions meanwhile (${said.length}):\n  ${said.slice(-40).join("\n  ")}`)
      if (process.env.MANY_CLIENTS_LOG) fs.writeFileSync(process.env.MANY_CLIENTS_LOG, gateway.stderr())
    }
    expect(failures.slice(0, 5)).toEqual([])
    expect(served).toBe(CLIENTS)
    expect(most).toBeLessThanOrEqual(BOUND)
    await waitUntil(() => descendants(gateway.process.pid!).filter(isAlive).length === IDLE_MINIMUM, 30_000, `back to the idle minimum (${IDLE_MINIMUM})`)
  }

  it("through /mcp/{template}: every one served, processes within the bound, then back to the idle minimum", async () => {
    await run("/mcp/everything", "echo")
  }, 900_000)

  it("through /mcp: the same", async () => {
    await run("/mcp", "everything__echo")
  }, 900_000)
})
