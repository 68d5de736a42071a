import { execFileSync } from "node:child_process"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startRedis } from "../support/redisServer.js"
import { api, runGateway, type RunningGateway, type RunningServer, startFixtureServer, startGateway, tempDir, waitUntil, writeJson } from "../support/processes.js"

/** How long the gateway waits for Redis (registry.timeout_ms here: the default). */
const BOUND_MS = 250

/**
 * Two replicas on one Redis that fails without going away: paused (SIGSTOP: the connections
 * stay, nothing answers) and emptied (FLUSHALL: connected, its data gone).
 */
describe("the fleet when its Redis hangs or loses its data", () => {
  let redis: Awaited<ReturnType<typeof startRedis>>
  let echo: RunningServer
  let a: RunningGateway
  let b: RunningGateway
  const dir = tempDir("gw-fleet-fail-")
  const configFile = path.join(dir, "gateway.json")
  const cli = (...args: Array<string>) => execFileSync("redis-cli", ["-p", String(redis.port), ...args], { encoding: "utf8" }).trim()

  beforeAll(async () => {
    redis = await startRedis()
    echo = await startFixtureServer("header-echo-server.mjs")
    writeJson(configFile, {
      gateway: { rate_limits: { per_client: { requests_per_second: 10_000, burst: 10_000 }, per_template: { requests_per_second: 10_000, burst: 10_000 } } },
      registry: { store: "redis", url: redis.url, prefix: "test:", timeout_ms: BOUND_MS, check_interval_ms: 500 },
      templates: {
        echo: { instances: [{ id: "e1", transport: "http", endpoint: echo.url }] },
        tight: { instances: [{ id: "t1", transport: "http", endpoint: echo.url }], rate_limit: { requests_per_second: 0.01, burst: 5 } }
      }
    })
    ;[a, b] = await Promise.all([
      startGateway({ configFile, args: ["--log-format", "json"] }),
      startGateway({ configFile })
    ])
  })

  afterAll(async () => {
    redis?.resume()
    await Promise.all([a?.stop(), b?.stop()])
    await Promise.all([echo?.stop(), redis?.stop()])
  })

  const call = (gateway: RunningGateway, template = "echo") => api(`${gateway.url}/mcp/${template}/tools/call`, { json: { name: "count", arguments: {} } })
  const timed = async <A>(run: () => Promise<A>) => {
    const started = performance.now()
    const result = await run()
    return { result, ms: performance.now() - started }
  }

  it("Redis paused under load: health answers at once and says degraded, calls go on within their time plus the bound, and fleet limits are back after it resumes", async () => {
    // Load: four callers on the two replicas, and a health probe on each every 50 ms.
    let running = true
    const calls: Array<{ status: number; ms: number; phase: string }> = []
    const health: Array<{ ms: number; status: string; phase: string }> = []
    // (The first second warms the replicas up: their first requests compile what they run.)
    let phase = "warm-up"
    const caller = async (gateway: RunningGateway) => {
      while (running) {
        const { result, ms } = await timed(() => call(gateway))
        calls.push({ status: result.status, ms, phase })
      }
    }
    const prober = async (gateway: RunningGateway) => {
      while (running) {
        const { result, ms } = await timed(() => api(`${gateway.url}/gateway/health`))
        health.push({ ms, status: result.body.status, phase })
        await new Promise((r) => setTimeout(r, 50))
      }
    }
    const load = Promise.all([caller(a), caller(b), caller(a), caller(b), prober(a), prober(b)])
    // Each phase lasts until it has enough samples, not a fixed time: a busy machine takes longer.
    const inPhase = (name: string) => ({
      calls: calls.filter((c) => c.phase === name).length,
      probes: health.filter((h) => h.phase === name).length
    })
    const until = (name: string, enough: { calls: number; probes: number }) =>
      waitUntil(() => inPhase(name).calls >= enough.calls && inPhase(name).probes >= enough.probes, 20_000, `${enough.calls} calls and ${enough.probes} probes (${name})`)
    await until("warm-up", { calls: 150, probes: 20 })
    phase = "before"
    await until("before", { calls: 100, probes: 30 })

    // A paused Redis (the 15 s, shortened: the bound is 250 ms, the check every 0.5 s): at
    // least 2 s, four checks, and enough calls and probes to measure.
    phase = "paused"
    const pausedAt = Date.now()
    redis.pause()
    await waitUntil(async () => (await api(`${a.url}/gateway/health`)).body.status === "degraded", 5_000, "A degraded")
    await waitUntil(async () => (await api(`${b.url}/gateway/health`)).body.status === "degraded", 5_000, "B degraded")
    await until("paused", { calls: 40, probes: 20 })
    await waitUntil(() => Date.now() - pausedAt >= 2_000, 5_000, "four checks of the paused Redis")
    phase = "resumed"
    redis.resume()
    await waitUntil(async () => (await api(`${a.url}/gateway/health`)).body.status === "healthy", 10_000, "A healthy again")
    await waitUntil(async () => (await api(`${b.url}/gateway/health`)).body.status === "healthy", 10_000, "B healthy again")
    running = false
    await load

    const before = calls.filter((c) => c.phase === "before")
    const paused = calls.filter((c) => c.phase === "paused")
    const usual = Math.max(...before.map((c) => c.ms))
    const slowest = Math.max(...paused.map((c) => c.ms))
    const measured = health.filter((h) => h.phase !== "warm-up")
    const slowestHealth = Math.max(...measured.map((h) => h.ms))
    const slowestHealthPaused = Math.max(...measured.filter((h) => h.phase === "paused").map((h) => h.ms))
    console.log(
      `calls: ${before.length} before (slowest ${usual.toFixed(1)} ms), ${paused.length} while paused (slowest ${slowest.toFixed(1)} ms); ` +
        `health: ${measured.length} probes, slowest ${slowestHealth.toFixed(1)} ms (while paused ${slowestHealthPaused.toFixed(1)} ms), ` +
        `p95 ${measured.map((h) => h.ms).sort((x, y) => x - y)[Math.floor(measured.length * 0.95)]!.toFixed(1)} ms`
    )
    // Nothing failed; health never waited; a call waited for Redis at most the bound (and this busy machine's noise).
    expect(calls.filter((c) => c.status !== 200)).toEqual([])
    expect(paused.length).toBeGreaterThan(20)
    // Health answers as fast during the pause as before it: within 100 ms at the 95th percentile
    // on a quiet machine (78 ms measured alone on this 2-core one; 101 ms once in a full CI run).
    // The bound is 150 ms or twice what the same probes took before the pause, below the Redis
    // bound (250 ms) that a probe waiting on Redis would take at least; and none waits anything
    // like the pause.
    const p95 = (phase: string) => {
      const sorted = measured.filter((h) => h.phase === phase).map((h) => h.ms).sort((x, y) => x - y)
      return sorted[Math.floor(sorted.length * 0.95)]!
    }
    expect(p95("paused")).toBeLessThan(Math.max(150, 2 * p95("before")))
    expect(p95("paused")).toBeLessThan(BOUND_MS)
    expect(slowestHealthPaused).toBeLessThan(1_000)
    expect(slowest).toBeLessThan(usual + BOUND_MS + 250)
    expect(health.filter((h) => h.phase === "paused").some((h) => h.status === "degraded")).toBe(true)
    // Said once, in the replica's log format.
    const said = a.stderr().split("\n").filter((l) => l.includes("did not answer within"))
    expect(said).toHaveLength(1)
    expect(JSON.parse(said[0]!).logLevel).toBe("WARN")
    expect(a.stderr()).toContain("answers again")

    // The fleet's limits again: a burst of 5 for both replicas together (each alone would let 5 through).
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => call(i % 2 === 0 ? a : b, "tight")))
    expect(results.filter((r) => r.status === 200).length).toBeLessThanOrEqual(6)
    const metrics = await (await fetch(`${a.url}/metrics`)).text()
    expect(metrics).toContain(`mcp_gateway_redis_status{state="ok"} 1`)
  }, 60_000)

  it("FLUSHALL, then one registration through A: every replica keeps serving every earlier registration, and Redis holds them again", async () => {
    for (const [gateway, id] of [[a, "r1"], [b, "r2"]] as const) {
      const registered = await api(`${gateway.url}/gateway/register`, { json: { template_name: "remote", instance: { id, transport: "http", endpoint: echo.url } } })
      expect(registered.status).toBe(201)
    }
    const ids = async (gateway: RunningGateway) =>
      ((await api(`${gateway.url}/gateway/registry`)).body.templates.remote?.instances ?? []).map((i: { id: string }) => i.id).sort()
    await waitUntil(async () => (await ids(a)).length === 2 && (await ids(b)).length === 2, 3_000, "both see r1 and r2")

    expect(cli("FLUSHALL")).toBe("OK")
    const registered = await api(`${a.url}/gateway/register`, { json: { template_name: "remote", instance: { id: "r3", transport: "http", endpoint: echo.url } } })
    expect(registered.status).toBe(201)
    // Never less than before, on either replica, while the fleet catches up.
    const seen: Array<Array<string>> = []
    for (let i = 0; i < 20; i++) {
      seen.push(await ids(a), await ids(b))
      await new Promise((r) => setTimeout(r, 100))
    }
    expect(seen.filter((list) => !(list.includes("r1") && list.includes("r2")))).toEqual([])
    // A never drops the r3 it has just registered: a read of Redis made while its registration
    // was being written (the write-back's own message starts one) is not applied over it.
    expect(seen.filter((_, i) => i % 2 === 0 && !seen[i]!.includes("r3"))).toEqual([])
    expect(a.stderr().split("\n").filter((l) => l.includes("removed: remote/r3"))).toEqual([])
    await waitUntil(async () => (await ids(b)).includes("r3"), 3_000, "B sees r3")
    for (const gateway of [a, b]) expect((await call(gateway, "remote")).status).toBe(200)
    await waitUntil(() => cli("HKEYS", "test:registry:instances").split("\n").filter((k) => k.startsWith("remote/")).length === 3, 5_000, "Redis holds r1, r2 and r3")
    const warned = a.stderr().split("\n").filter((l) => l.includes("lost its data"))
    expect(warned.length).toBeGreaterThanOrEqual(1)
    expect(JSON.parse(warned[0]!).logLevel).toBe("WARN")

    // Emptied with nothing happening: the periodic check writes it back.
    expect(cli("FLUSHALL")).toBe("OK")
    await waitUntil(() => cli("HKEYS", "test:registry:instances").split("\n").filter((k) => k.startsWith("remote/")).length === 3, 5_000, "Redis holds them again")
    expect(await ids(a)).toEqual(["r1", "r2", "r3"])
    expect(await ids(b)).toEqual(["r1", "r2", "r3"])
  }, 60_000)

  it("several registrations deregistered at once are logged at warn with counts", async () => {
    // (Through Redis itself, as another replica's burst of deregistrations would look.)
    cli("HDEL", "test:registry:instances", "remote/r1", "remote/r2")
    cli("PUBLISH", "test:registry:changed", "remote")
    await waitUntil(() => /has 2 of the 3 registrations this replica knew fewer/.test(b.stderr()), 5_000, "B warns")
    expect(b.stderr()).toMatch(/level=WARN .*has 2 of the 3 registrations this replica knew fewer/)
  })
})

describe("Redis URLs", () => {
  it("a password with '#', '?' or '/' not percent-encoded: config validate and start both say so in one line, exit 2, without the password", async () => {
    const dir = tempDir("gw-redis-url-")
    for (const password of ["p#ss", "p?ss", "p/ss"]) {
      const configFile = path.join(dir, "gateway.json")
      writeJson(configFile, { registry: { store: "redis", url: `redis://:${password}word@127.0.0.1:6379/0` } })
      for (const args of [["config", "validate", configFile], ["start", "--config", configFile, "--port", "0"]]) {
        const result = await runGateway(args)
        expect(result.code, result.stderr).toBe(2)
        const lines = result.stderr.trim().split("\n")
        expect(lines).toHaveLength(1)
        expect(lines[0]).toContain("registry.url: not a valid")
        expect(lines[0]).toContain("percent-encode")
        expect(result.stderr).not.toContain(`${password}word`)
      }
    }
  })

  it("logs name the address without the password (not 'null/0')", async () => {
    const redis = await startRedis()
    const dir = tempDir("gw-redis-url-")
    const configFile = path.join(dir, "gateway.json")
    // (A password Redis does not require: ioredis connects all the same.)
    writeJson(configFile, { registry: { store: "redis", url: `redis://:s%23cret@127.0.0.1:${redis.port}/0` } })
    const gateway = await startGateway({ configFile })
    try {
      expect(gateway.stderr()).toContain(`connected to Redis redis://***@127.0.0.1:${redis.port}/0`)
      expect(gateway.stderr()).not.toContain("null/0")
      expect(gateway.stderr()).not.toContain("cret")
    } finally {
      await gateway.stop()
      await redis.stop()
    }
  })

  it("a Redis that refuses the password: the log says why it cannot be used, not only that it cannot be reached", async () => {
    const redis = await startRedis()
    execFileSync("redis-cli", ["-p", String(redis.port), "CONFIG", "SET", "requirepass", "right-one"])
    const dir = tempDir("gw-redis-url-")
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, { registry: { store: "redis", url: `redis://:wrong-one@127.0.0.1:${redis.port}/0` } })
    const gateway = await startGateway({ configFile })
    try {
      const line = gateway.stderr().split("\n").find((l) => l.includes("cannot reach Redis"))
      expect(line).toContain("WRONGPASS")
      expect(gateway.stderr()).not.toContain("wrong-one")
    } finally {
      await gateway.stop()
      await redis.stop()
    }
  })
})
