import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  api,
  describeProcesses,
  descendants,
  everythingServer,
  initializeRaw,
  isAlive,
  mcpPostHeaders,
  type RunningGateway,
  runGateway,
  startGateway,
  tempDir,
  waitUntil,
  writeJson
} from "../support/processes.js"

/** What real clients (Inspector, mcp-remote, desktop clients) declare: a session with a process of its own under `auto`. */
const CAPABILITIES = { sampling: {}, roots: { listChanged: true }, elicitation: {} }

const capableClient = async (url: string) => {
  const client = new Client({ name: "capable", version: "1.0.0" }, { capabilities: CAPABILITIES })
  await client.connect(new StreamableHTTPClientTransport(new URL(url)))
  return client
}

/** Leaves as most clients do: the transport dropped, no DELETE. */
const leave = (client: Client) => client.close()

/** The server processes the gateway runs (each server-everything process is a direct child here). */
const serverProcesses = (gateway: RunningGateway) => descendants(gateway.process.pid!).filter(isAlive).length

/**
 * A session's own process lives only while its client does: idle sessions end after
 * `session_process_idle_timeout`, a newcomer ends the least recently used idle one when every
 * slot is taken, and only when every slot is busy is it refused (503, Retry-After, a JSON-RPC
 * error, a metric, the health and `status` saying so).
 */
describe("sessions with a process of their own: idle end, room for newcomers, saturation", () => {
  let gateway: RunningGateway
  const clients: Array<Client> = []

  beforeAll(async () => {
    const dir = tempDir()
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, {
      gateway: { max_sessions_per_client: 1000 },
      templates: {
        small: {
          instances: [{ id: "only", transport: "stdio", command: ["node", everythingServer, "stdio"] }],
          load_balancer: { max_sessions_per_instance: 2, session_process_idle_timeout: 3, warm_processes: 0, health_check_interval: 600 }
        }
      }
    })
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => {})))
    await gateway?.stop()
  })

  it("a newcomer ends the least recently used idle session when every slot is taken; that client gets 404", async () => {
    const url = `${gateway.url}/mcp/small`
    const shared = serverProcesses(gateway)
    const first = await capableClient(url)
    const second = await capableClient(url)
    clients.push(first, second)
    const firstSession = (first.transport as StreamableHTTPClientTransport).sessionId!
    await first.callTool({ name: "echo", arguments: { message: "first" } })
    expect(serverProcesses(gateway)).toBe(shared + 2)
    // The first client leaves without DELETE (its streams close); the second stays connected.
    await leave(first)
    // A fixed wait: the gateway's noticing the closed streams (the session turning idle) shows
    // nowhere outside it, and a newcomer before that would be refused, every slot being in use.
    await new Promise((r) => setTimeout(r, 300))

    const third = await capableClient(url)
    clients.push(third)
    expect((await third.callTool({ name: "echo", arguments: { message: "made room" } })).content).toEqual([
      { type: "text", text: "Echo: made room" }
    ])
    // The idle one's session is over: a 404, which clients answer by initializing again.
    const gone = await fetch(url, {
      method: "POST",
      headers: { ...mcpPostHeaders, "mcp-session-id": firstSession, "mcp-protocol-version": "2025-11-25" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 7, method: "tools/list" })
    })
    expect(gone.status).toBe(404)
    expect((await second.callTool({ name: "echo", arguments: { message: "still here" } })).content).toEqual([
      { type: "text", text: "Echo: still here" }
    ])
    expect(serverProcesses(gateway)).toBeLessThanOrEqual(shared + 2)
    expect(gateway.stderr()).toMatch(/ending session .* to make room for a new session/)
    await Promise.all([leave(second), leave(third)])
    // Left without DELETE: their processes stop after session_process_idle_timeout (3 s).
    await waitUntil(() => serverProcesses(gateway) === shared, 20_000, "the idle sessions' processes to stop")
    const metrics = await (await fetch(`${gateway.url}/metrics`)).text()
    expect(metrics).toMatch(/mcp_gateway_session_processes_ended_total\{[^}]*reason="room"[^}]*\} 1/)
    expect(metrics).toMatch(/mcp_gateway_session_processes_ended_total\{[^}]*reason="idle"[^}]*\} 2/)
  }, 60_000)

  it("every slot busy: 503 with Retry-After and a JSON-RPC error; the metric, /gateway/health and status say so", async () => {
    const busy = [await capableClient(`${gateway.url}/mcp/small`), await capableClient(`${gateway.url}/mcp/small`)]
    clients.push(...busy)
    // Each holds a request in flight for a while.
    const running = busy.map((c) =>
      c.callTool({ name: "trigger-long-running-operation", arguments: { duration: 4, steps: 4 } }, undefined, { timeout: 30_000 })
    )
    await waitUntil(async () => {
      const instances = Object.values((await api(`${gateway.url}/gateway/stats`)).body.templates.small.instances) as Array<{ active_requests: number }>
      return instances.reduce((n, i) => n + i.active_requests, 0) === 2
    }, 10_000, "both calls in flight")
    const refused = await initializeRaw(`${gateway.url}/mcp/small`, 1, { capabilities: CAPABILITIES })
    expect(refused.status).toBe(503)
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0)
    const body: any = await refused.json()
    expect(body).toMatchObject({ jsonrpc: "2.0", id: 1, error: { code: -32603 } })
    expect(body.error.message).toMatch(/every process slot of template "small" is busy/)
    expect(gateway.stderr()).toMatch(/refused a new session of template small: every process slot/)

    const metrics = await (await fetch(`${gateway.url}/metrics`)).text()
    expect(metrics).toMatch(/mcp_gateway_sessions_refused_total\{[^}]*template="small"[^}]*\} 1/)
    const health = await api(`${gateway.url}/gateway/health`)
    expect(health.body).toMatchObject({ status: "degraded", saturated_templates: ["small"] })
    expect((await api(`${gateway.url}/mcp/small/health`)).body.saturated).toBe(true)
    const status = await runGateway(["status", "--gateway", gateway.url])
    expect(status.stdout).toMatch(/saturated \(every process slot busy, new sessions refused\): small/)
    expect(status.stdout).toMatch(/healthy, saturated/)

    await Promise.all(running)
    // One client leaves (no DELETE): its session is idle, and a newcomer takes its slot.
    await leave(busy[0]!)
    // (A fixed wait, as in the first test: the session turning idle shows nowhere outside.)
    await new Promise((r) => setTimeout(r, 300))
    const newcomer = await capableClient(`${gateway.url}/mcp/small`)
    clients.push(newcomer)
    expect((await newcomer.callTool({ name: "echo", arguments: { message: "in" } })).content).toEqual([{ type: "text", text: "Echo: in" }])
  }, 60_000)
})

describe("warm processes", () => {
  let gateway: RunningGateway
  beforeAll(async () => {
    const configFile = path.join(tempDir(), "gateway.json")
    writeJson(configFile, {
      gateway: { max_sessions_per_client: 1000 },
      templates: {
        warm: {
          instances: [{ id: "only", transport: "stdio", command: ["node", everythingServer, "stdio"] }],
          load_balancer: { max_sessions_per_instance: 3, warm_processes: 1, session_process_idle_timeout: 2, health_check_interval: 600 }
        }
      }
    })
    gateway = await startGateway({ configFile })
  })
  afterAll(async () => {
    await gateway?.stop()
  })

  it("a session takes a warm process and another replaces it, within the bound; all stopped at shutdown", async () => {
    const url = `${gateway.url}/mcp/warm`
    const shared = serverProcesses(gateway)
    const first = await capableClient(url)
    // Its own process, and one warm for the next session.
    expect(serverProcesses(gateway)).toBe(shared + 2)
    const waiting = descendants(gateway.process.pid!)
    const second = await capableClient(url)
    // The second took the warm process (no new pid but the next warm one's).
    const after = descendants(gateway.process.pid!)
    expect(after.filter((p) => !waiting.includes(p))).toHaveLength(1)
    expect(serverProcesses(gateway)).toBe(shared + 3)
    const third = await capableClient(url)
    // Three slots taken: nothing more is kept warm (the bound counts warm processes).
    expect(serverProcesses(gateway)).toBe(shared + 3)
    for (const c of [first, second, third]) {
      expect((await c.callTool({ name: "echo", arguments: { message: "warm" } })).content).toEqual([{ type: "text", text: "Echo: warm" }])
    }
    await Promise.all([leave(first), leave(second), leave(third)])
    // Back to the idle minimum: the shared process and one warm.
    await waitUntil(() => serverProcesses(gateway) === shared + 1, 20_000, "the idle sessions' processes to stop")
    const family = descendants(gateway.process.pid!)
    expect(await gateway.stop()).toBe(0)
    await waitUntil(() => family.every((pid) => !isAlive(pid)), 5000, "every process, the warm one too, to be gone")
      .catch((e) => {
        // (Which ones, and what they were, so that a failure under load says more than a count.)
        throw new Error(`${e.message}: still running ${describeProcesses(family.filter(isAlive))}; the gateway said:\n${gateway.stderr().slice(-3000)}`)
      })
  }, 90_000)
})

describe("shutdown with many sessions holding processes", () => {
  it("SIGINT with 40 sessions holding processes: the gateway exits within 3 s, no process left", async () => {
    const dir = tempDir()
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, {
      gateway: { max_sessions_per_client: 1000 },
      templates: {
        many: {
          instances: [{ id: "only", transport: "stdio", command: ["node", everythingServer, "stdio"] }],
          load_balancer: { max_sessions_per_instance: 40, warm_processes: 0, health_check_interval: 600 }
        }
      }
    })
    const gateway = await startGateway({ configFile })
    const clients: Array<Client> = []
    try {
      for (let i = 0; i < 40; i += 8) {
        clients.push(...await Promise.all(Array.from({ length: 8 }, () => capableClient(`${gateway.url}/mcp/many`))))
      }
      const processes = descendants(gateway.process.pid!)
      expect(processes.length).toBeGreaterThanOrEqual(41)
      const started = Date.now()
      gateway.process.kill("SIGINT")
      await new Promise((resolve) => gateway.process.once("exit", resolve))
      const took = Date.now() - started
      console.log(`SIGINT with 40 sessions holding processes: exited after ${took} ms`)
      expect(took, gateway.stderr().slice(-3000)).toBeLessThan(3000)
      await waitUntil(() => processes.every((pid) => !isAlive(pid)), 5000, "every server process to be gone")
      expect(gateway.stderr()).toMatch(/shutting down: ending 40 MCP sessions \(40 with a process of their own\)/)
      expect(gateway.stderr()).toMatch(/shutting down: 40 MCP sessions ended/)
    } finally {
      await Promise.all(clients.map((c) => c.close().catch(() => {})))
      await gateway.stop()
    }
  }, 180_000)
})
