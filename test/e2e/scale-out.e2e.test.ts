import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import { randomBytes } from "node:crypto"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startRedis } from "../support/redisServer.js"
import { startRoundRobinProxy } from "../support/roundRobinProxy.js"
import {
  api,
  initializeRaw,
  mcpPostHeaders,
  type RunningGateway,
  type RunningServer,
  startEverythingHttp,
  startFixtureServer,
  startGateway,
  tempDir,
  waitUntil,
  writeJson
} from "../support/processes.js"

const text = (result: unknown) => JSON.stringify((result as { content?: unknown }).content)

/**
 * A registration while Redis is up, as a client following Retry-After makes it: each Redis command
 * is bounded (registry.timeout_ms, 250 ms), and on a machine loaded by the other suites one can
 * run past it, which the gateway answers, rightly, with 503 registry_unavailable and Retry-After.
 */
const registerWhileUp = async (url: string, json: unknown) => {
  let last = await api(`${url}/gateway/register`, { json })
  for (let tries = 1; last.status === 503 && tries < 20; tries++) {
    await new Promise((r) => setTimeout(r, 250)) // a short Retry-After: the bound, not the 5 s it says
    last = await api(`${url}/gateway/register`, { json })
  }
  return last
}

/**
 * Several replicas acting as one: three gateway processes on one real Redis (registry, health,
 * rate limits), sharing the key that seals session ids, behind a round-robin balancer.
 */
describe("scale-out: replicas on one Redis", () => {
  let redis: Awaited<ReturnType<typeof startRedis>>
  let backend: RunningServer
  let echo: RunningServer
  let proxy: Awaited<ReturnType<typeof startRoundRobinProxy>>
  const replicas: Array<RunningGateway | undefined> = []
  const dir = tempDir("gw-fleet-")
  const configFile = path.join(dir, "gateway.json")
  const env = { MCP_GATEWAY_SESSION_KEYS: randomBytes(32).toString("base64") }
  const start = () => startGateway({ configFile, env })
  const live = () => replicas.filter((r): r is RunningGateway => r !== undefined && r.process.exitCode === null && r.process.signalCode === null)
  const [a, b, c] = [0, 1, 2].map((i) => () => replicas[i]!)

  beforeAll(async () => {
    redis = await startRedis()
    ;[backend, echo] = await Promise.all([startEverythingHttp(), startFixtureServer("header-echo-server.mjs")])
    writeJson(configFile, {
      registry: { store: "redis", url: redis.url, prefix: "test:" },
      templates: {
        everything: { instances: [{ id: "e1", transport: "http", endpoint: backend.url }] },
        limited: { instances: [{ id: "l1", transport: "http", endpoint: echo.url }], rate_limit: { requests_per_second: 1, burst: 5 } }
      }
    })
    replicas.push(...await Promise.all([start(), start(), start()]))
    proxy = await startRoundRobinProxy(() => live().map((r) => r.url))
  })

  afterAll(async () => {
    await proxy?.close()
    await Promise.all(replicas.map((r) => r?.stop()))
    await Promise.all([backend?.stop(), echo?.stop(), redis?.stop()])
  })

  it("a registration through one replica is served by the others within a second, and a deregistration too", async () => {
    const registered = await registerWhileUp(a().url, { template_name: "remote", instance: { id: "r1", transport: "http", endpoint: echo.url } })
    expect(registered.status).toBe(201)
    const started = Date.now()
    await waitUntil(async () => (await api(`${b().url}/gateway/registry`)).body.templates.remote !== undefined, 1_000, "B sees it")
    await waitUntil(async () => (await api(`${c().url}/gateway/registry`)).body.templates.remote !== undefined, 1_000, "C sees it")
    expect(Date.now() - started).toBeLessThan(1_000)
    const called = await api(`${b().url}/mcp/remote/tools/call`, { json: { name: "count", arguments: {} } })
    expect(called.status).toBe(200)
    // The same id through another replica is a conflict, as on one gateway.
    const again = await api(`${c().url}/gateway/register`, { json: { template_name: "remote", instance: { id: "r1", transport: "http", endpoint: echo.url } } })
    expect(again.status).toBe(409)

    expect((await api(`${c().url}/gateway/deregister/remote/r1`, { method: "DELETE" })).status).toBe(200)
    await waitUntil(async () => (await api(`${a().url}/gateway/registry`)).body.templates.remote === undefined, 1_000, "A lets it go")
  })

  it("an SDK client's session started on one replica goes on through the others (round robin in front)", async () => {
    const client = new Client({ name: "fleet", version: "1.0.0" })
    await client.connect(new StreamableHTTPClientTransport(new URL(`${proxy.url}/mcp/everything`)))
    try {
      const before = proxy.served.length
      for (let i = 0; i < 6; i++) expect(text(await client.callTool({ name: "echo", arguments: { message: `hop ${i}` } }))).toContain(`Echo: hop ${i}`)
      expect((await client.listTools()).tools.length).toBeGreaterThan(5)
      const progress: Array<number> = []
      await client.callTool({ name: "trigger-long-running-operation", arguments: { duration: 1, steps: 2 } }, undefined, { onprogress: (p) => void progress.push(p.progress) })
      expect(progress).toEqual([1, 2])
      // Every replica carried some of it.
      expect(new Set(proxy.served.slice(before)).size).toBe(3)
    } finally {
      await client.close()
    }
  })

  it("a session whose replica is gone is served by another; a tampered or forged id is a 404", async () => {
    const extra = await start()
    replicas.push(extra)
    const opened = await initializeRaw(`${extra.url}/mcp/everything`)
    const session = opened.headers.get("mcp-session-id")!
    const call = (url: string, id: string) =>
      fetch(`${url}/mcp/everything`, {
        method: "POST",
        headers: { ...mcpPostHeaders, "mcp-session-id": id, "mcp-protocol-version": "2025-11-25" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 7, method: "tools/call", params: { name: "echo", arguments: { message: "after the crash" } } })
      })
    extra.process.kill("SIGKILL")
    await new Promise((r) => extra.process.once("exit", r))
    const served = await call(b().url, session)
    expect(served.status).toBe(200)
    expect(await served.text()).toContain("Echo: after the crash")

    const tampered = session.slice(0, -6) + (session.at(-6) === "A" ? "B" : "A") + session.slice(-5)
    expect((await call(b().url, tampered)).status).toBe(404)
    expect((await call(b().url, randomBytes(16).toString("hex"))).status).toBe(404)
    // Any replica serves it, not just the first to take it over.
    expect((await call(c().url, session)).status).toBe(200)
  })

  it("a template's rate limit holds for the fleet, not per replica", async () => {
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) =>
      api(`${[a(), b(), c()][i % 3]!.url}/mcp/limited/tools/call`, { json: { name: "count", arguments: {} } })))
    const allowed = results.filter((r) => r.status === 200).length
    // A burst of 5 for the whole fleet (3 replicas counting alone would let 12 through), and maybe one refilled.
    expect(allowed).toBeGreaterThanOrEqual(5)
    expect(allowed).toBeLessThanOrEqual(6)
    expect(results.find((r) => r.status === 429)?.headers.get("retry-after")).toBeTruthy()
  })

  it("Redis down: requests keep flowing, health says degraded, registrations are refused with 503; Redis back: everything catches up, nothing lost", async () => {
    expect((await registerWhileUp(a().url, { template_name: "kept", instance: { id: "k1", transport: "http", endpoint: echo.url } })).status).toBe(201)
    await waitUntil(async () => (await api(`${b().url}/gateway/registry`)).body.templates.kept !== undefined, 2_000, "B sees kept")
    await redis.stop()
    await waitUntil(async () => (await api(`${a().url}/gateway/health`)).body.status === "degraded", 5_000, "degraded")
    expect((await api(`${b().url}/mcp/kept/tools/call`, { json: { name: "count", arguments: {} } })).status).toBe(200)
    expect((await api(`${c().url}/mcp/everything/tools/call`, { json: { name: "echo", arguments: { message: "no redis" } } })).status).toBe(200)
    const refused = await api(`${a().url}/gateway/register`, { json: { template_name: "late", instance: { id: "x", transport: "http", endpoint: echo.url } } })
    expect(refused.status).toBe(503)
    expect(refused.headers.get("retry-after")).toBe("5")
    expect(refused.body.error.type).toBe("registry_unavailable")

    await redis.start()
    await waitUntil(async () => (await api(`${a().url}/gateway/health`)).body.status === "healthy", 10_000, "healthy again")
    // Each replica reconnects on its own backoff: B may still be down when A is back (CI saw 503 here).
    await waitUntil(async () => (await api(`${b().url}/gateway/health`)).body.status === "healthy", 10_000, "B healthy again")
    expect((await registerWhileUp(b().url, { template_name: "late", instance: { id: "x", transport: "http", endpoint: echo.url } })).status).toBe(201)
    await waitUntil(async () => (await api(`${c().url}/gateway/registry`)).body.templates.late !== undefined, 2_000, "C sees late")

    // A Redis that comes back empty (no persistence) gets the fleet's registrations written back.
    await redis.stop()
    await redis.start({ fresh: true })
    await waitUntil(async () => (await api(`${a().url}/gateway/health`)).body.status === "healthy", 10_000, "healthy after the empty restart")
    const newcomer = await start()
    replicas.push(newcomer)
    const registry = (await api(`${newcomer.url}/gateway/registry`)).body.templates
    expect(Object.keys(registry)).toEqual(expect.arrayContaining(["everything", "limited", "kept", "late"]))
  })

  it("every replica restarting keeps the registrations", async () => {
    await Promise.all(live().map((r) => r.stop()))
    const fresh = await start()
    replicas.push(fresh)
    const registry = (await api(`${fresh.url}/gateway/registry`)).body.templates
    expect(registry.kept?.instances.map((i: { id: string }) => i.id)).toEqual(["k1"])
    expect(registry.late?.instances.map((i: { id: string }) => i.id)).toEqual(["x"])
  })
})
