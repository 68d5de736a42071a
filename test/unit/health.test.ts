import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Duration, Effect, Exit, Layer, Option, TestClock } from "effect"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { GatewayConfig } from "../../src/config/GatewayConfig.js"
import { GatewayCore } from "../../src/gateway/Gateway.js"
import { HealthChecker } from "../../src/health/HealthChecker.js"
import { ProbeTimes } from "../../src/health/ProbeTimes.js"
import { Timer } from "../../src/clock/Timer.js"
import { Registry } from "../../src/registry/Registry.js"
import { refused } from "../support/FakeTransport.js"
import { layerFake } from "../../src/transport/TransportFake.js"
import { makeSharedHealth } from "../../src/health/SharedHealth.js"
import type { FleetRedisShape } from "../../src/fleet/FleetRedis.js"
import { testConfig } from "../support/testConfig.js"
import { testGateway } from "../support/testGateway.js"

const instance = (id: string) => Effect.map(Registry, (r) => r.template("t")!.instances.get(id)!)

/** Runs one probe of `id` now. */
const probe = (id: string) => Effect.flatMap(Effect.zip(HealthChecker, instance(id)), ([checker, i]) => checker.check(i))

describe("health checks: hysteresis", () => {
  it.scoped("the first probe decides; then unhealthy_threshold failures in a row make it unhealthy, healthy_threshold successes healthy again", () => {
    const { fake, layer } = testGateway(testConfig({
      t: { instances: ["a"], load_balancer: { unhealthy_threshold: 3, healthy_threshold: 2, health_check_interval: 600 } }
    }))
    let up = true
    fake.set("a", () => up ? Effect.succeed({}) : Effect.fail(refused("a")))
    return Effect.gen(function*() {
      const a = yield* instance("a")
      expect(a.status).toBe("unknown")
      yield* probe("a")
      expect(a.status).toBe("healthy")
      up = false
      yield* probe("a")
      yield* probe("a")
      expect(a.status).toBe("healthy")
      expect(a.health.consecutiveFailures).toBe(2)
      yield* probe("a")
      expect(a.status).toBe("unhealthy")
      expect(a.lastError).toContain("ECONNREFUSED")
      up = true
      yield* probe("a")
      expect(a.status).toBe("unhealthy")
      yield* probe("a")
      expect(a.status).toBe("healthy")
      expect(a.lastError).toBeUndefined()
    }).pipe(Effect.provide(layer))
  })

  it.scoped("an instance failing every other probe stays in rotation under the default thresholds", () => {
    const { fake, layer } = testGateway(testConfig({ t: { instances: ["a"], load_balancer: { health_check_interval: 1 } } }))
    let n = 0
    fake.set("a", (method) => method === "ping" && n++ % 2 === 1 ? Effect.fail(refused("a")) : Effect.succeed({}))
    return Effect.gen(function*() {
      const checker = yield* HealthChecker
      const a = yield* instance("a")
      yield* checker.checkAll
      const seen = new Set<string>()
      for (let i = 0; i < 40; i++) {
        yield* TestClock.adjust(Duration.millis(500))
        seen.add(a.status)
      }
      expect(n).toBeGreaterThan(15)
      expect(Array.from(seen)).toEqual(["healthy"])
    }).pipe(Effect.provide(layer))
  })

  it.scoped("probes are jittered: a hundred instances are not probed in the same millisecond", () => {
    const ids = Array.from({ length: 100 }, (_, i) => `i${i}`)
    const { fake, layer } = testGateway(testConfig({ t: { instances: ids, load_balancer: { health_check_interval: 10 } } }))
    const times: Array<number> = []
    // (Probes only: the instances' lists are read for drift too, at their first passed probe.)
    for (const id of ids) fake.set(id, (method) => Effect.map(Clock.currentTimeMillis, (t) => void (method === "ping" && times.push(t))))
    return Effect.gen(function*() {
      yield* HealthChecker
      yield* TestClock.adjust(Duration.seconds(13))
      // Every instance was probed once in [8 s, 12 s], at many different times.
      expect(times).toHaveLength(100)
      expect(Math.min(...times)).toBeGreaterThanOrEqual(8000)
      expect(Math.max(...times)).toBeLessThanOrEqual(12_000)
      expect(new Set(times).size).toBeGreaterThan(80)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("a probe that does not answer within health_check_timeout fails", () => {
    const { fake, layer } = testGateway(testConfig({ t: { instances: ["a"], load_balancer: { health_check_timeout: 2 } } }))
    fake.set("a", () => Effect.never)
    return Effect.gen(function*() {
      const fiber = yield* Effect.fork(probe("a"))
      yield* TestClock.adjust(Duration.seconds(2))
      expect(yield* fiber.await.pipe(Effect.map((exit) => Exit.isSuccess(exit) && exit.value))).toBe(false)
      expect((yield* instance("a")).lastError).toContain("within 2s")
    }).pipe(Effect.provide(layer))
  })
})

describe("health checks: the scheduler", () => {
  const pings = (fake: { distribution: (method?: string) => Record<string, number> }, id: string) => fake.distribution("ping")[id] ?? 0

  it.scoped("an instance registered at run time is probed at once, then every interval; a deregistered one no more", () => {
    const { fake, layer } = testGateway(testConfig({ t: { instances: ["a"], load_balancer: { health_check_interval: 10 } } }))
    return Effect.gen(function*() {
      yield* HealthChecker
      const registry = yield* Registry
      const b = yield* registry.register({ template: "t", spec: { id: "b", transport: "http", endpoint: "http://127.0.0.1:7001/mcp" } })
      yield* TestClock.adjust(Duration.millis(1))
      expect(pings(fake, "b")).toBe(1)
      expect(b.status).toBe("healthy")
      expect(b.health.nextProbeAt).toBeGreaterThanOrEqual(8000)
      yield* TestClock.adjust(Duration.seconds(25))
      expect(pings(fake, "b")).toBeGreaterThanOrEqual(3)
      yield* registry.deregister("t", "b")
      const after = pings(fake, "b")
      yield* TestClock.adjust(Duration.seconds(60))
      expect(pings(fake, "b")).toBe(after)
      // The other instance went on being probed all along.
      expect(pings(fake, "a")).toBeGreaterThanOrEqual(7)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("deregistering an instance interrupts its running probe", () => {
    const { fake, layer } = testGateway(testConfig({ t: { instances: ["a", "b"], load_balancer: { health_check_interval: 1, health_check_timeout: 30 } } }))
    let started = 0
    let finished = 0
    fake.set("b", () => Effect.sync(() => void started++).pipe(Effect.zipRight(Effect.never), Effect.ensuring(Effect.sync(() => void finished++))))
    return Effect.gen(function*() {
      yield* HealthChecker
      yield* TestClock.adjust(Duration.seconds(2))
      expect(started).toBe(1)
      yield* (yield* Registry).deregister("t", "b")
      yield* TestClock.adjust(Duration.millis(1)) // the registry's change reaches the checker
      expect(finished).toBe(1)
      yield* TestClock.adjust(Duration.seconds(10))
      expect(started).toBe(1)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("a probe that dies is logged and the instance is probed again on its interval", () => {
    const { fake, layer } = testGateway(testConfig({ t: { instances: ["a"], load_balancer: { health_check_interval: 1 } } }))
    let n = 0
    fake.set("a", () => n++ === 0 ? Effect.die(new Error("probe bug")) : Effect.succeed({}))
    return Effect.gen(function*() {
      yield* HealthChecker
      const a = yield* instance("a")
      yield* TestClock.adjust(Duration.seconds(3))
      expect(n).toBeGreaterThanOrEqual(2)
      expect(a.status).toBe("healthy")
    }).pipe(Effect.provide(layer))
  })
})

describe("ProbeTimes", () => {
  it("gives the due keys earliest first, with moved and forgotten keys skipped", () => {
    const times = new ProbeTimes()
    const order = [50, 10, 40, 30, 20, 60, 70, 5]
    order.forEach((at, i) => times.schedule(`k${i}`, at))
    times.schedule("k2", 100) // moved: its entry at 40 is stale
    times.forget("k3") // its entry at 30 is skipped
    expect(times.next()).toBe(5)
    expect(times.popDue(45).map((d) => d.key)).toEqual(["k7", "k1", "k4"])
    expect(times.next()).toBe(50)
    expect(times.popDue(1000).map((d) => d.key)).toEqual(["k0", "k5", "k6", "k2"])
    expect(times.next()).toBeUndefined()
  })

  it("says when a key becomes the earliest, and which generation a due entry is", () => {
    const times = new ProbeTimes()
    expect(times.schedule("a", 100)).toBe(true)
    expect(times.schedule("b", 200)).toBe(false)
    expect(times.schedule("b", 50)).toBe(true)
    const [due] = times.popDue(60)
    expect(due!.key).toBe("b")
    expect(times.isCurrent("b", due!.generation)).toBe(true)
    times.schedule("b", 300)
    expect(times.isCurrent("b", due!.generation)).toBe(false)
  })

  it("a key forgotten and scheduled again is due once, at its new time", () => {
    const times = new ProbeTimes()
    times.schedule("a", 100)
    times.forget("a")
    times.schedule("a", 500)
    expect(times.popDue(200)).toEqual([])
    expect(times.popDue(500).map((d) => d.key)).toEqual(["a"])
  })

  it("stays ordered through many random schedules", () => {
    const times = new ProbeTimes()
    const latest = new Map<string, number>()
    for (let i = 0; i < 2000; i++) {
      const key = `k${i % 300}`
      const at = Math.floor(Math.random() * 10_000)
      times.schedule(key, at)
      latest.set(key, at)
    }
    const popped = times.popDue(10_000)
    expect(popped.map((d) => d.key).sort()).toEqual([...latest.keys()].sort())
    const ats = popped.map((d) => latest.get(d.key)!)
    expect(ats).toEqual([...ats].sort((x, y) => x - y))
  })
})

describe("health probe plugins", () => {
  /** The real gateway services with the given config, on the real clock (the probes use real sockets and files). */
  const liveGateway = (config: ReturnType<typeof testConfig>) =>
    GatewayCore.pipe(Layer.provide(layerFake()), Layer.provide(Timer.layer), Layer.provide(GatewayConfig.layer(config)))

  it.live("http_get: a path on the instance's host and the status it must answer", () =>
    Effect.gen(function*() {
      let status = 200
      const server = http.createServer((req, res) => res.writeHead(req.url === "/healthz" ? status : 404).end())
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.sync(() => server.close())
      )
      const port = (server.address() as any).port
      const config = testConfig({
        t: {
          instances: [{ id: "a", transport: "http", endpoint: `http://127.0.0.1:${port}/mcp` }],
          load_balancer: { health_probe: "http_get", health_probe_options: { path: "/healthz", expected_status: 200 } }
        }
      })
      yield* Effect.gen(function*() {
        const a = yield* instance("a")
        yield* probe("a")
        expect(a.status).toBe("healthy")
        status = 503
        yield* probe("a")
        yield* probe("a")
        expect(a.status).toBe("unhealthy")
        expect(a.lastError).toContain("/healthz answered 503, expected 200")
      }).pipe(Effect.provide(liveGateway(config)))
    }).pipe(Effect.scoped))

  it.live("a user's probe plugin by path, with its options", () =>
    Effect.gen(function*() {
      const flag = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "gw-probe-")), "up")
      fs.writeFileSync(flag, "")
      const config = testConfig({
        t: {
          instances: ["a"],
          load_balancer: {
            health_probe: "./test/fixtures/plugins/file-flag-probe.mjs",
            health_probe_options: { file: flag },
            unhealthy_threshold: 1
          }
        }
      })
      yield* Effect.gen(function*() {
        const a = yield* instance("a")
        yield* probe("a")
        expect(a.status).toBe("healthy")
        fs.rmSync(flag)
        yield* probe("a")
        expect(a.status).toBe("unhealthy")
        expect(a.lastError).toBe(`${flag} is missing`)
      }).pipe(Effect.provide(liveGateway(config)))
    }).pipe(Effect.scoped))

  it.live("a bad probe plugin stops start-up naming the template, the plugin and the problem", () =>
    Effect.gen(function*() {
      const failure = (load_balancer: Record<string, unknown>) =>
        Effect.gen(function*() {
          const exit = yield* Effect.exit(Effect.scoped(Layer.build(liveGateway(testConfig({ t: { instances: ["a"], load_balancer } })))))
          expect(Exit.isFailure(exit)).toBe(true)
          return Exit.isFailure(exit) ? String(Option.getOrUndefined(Cause.failureOption(exit.cause))?.message) : ""
        })
      expect(yield* failure({ health_probe: "pingg" })).toMatch(
        /^templates\.t\.load_balancer\.health_probe: health probe plugin "pingg": no built-in health probe of that name \(built-ins: http_get, mcp_ping\)/
      )
      expect(yield* failure({ health_probe: "http_get", health_probe_options: { path: 7 } })).toContain(
        "invalid health_probe_options: health_probe_options.path"
      )
      expect(yield* failure({ health_probe: "./test/fixtures/plugins/always-last.mjs" })).toContain(
        "default export is not a health probe plugin"
      )
    }))
})

describe("health shared by replicas (health/SharedHealth.ts), on the gateway's clock", () => {
  /** A fleet whose Redis holds `records` in the health hash. */
  const fleetWith = (records: Record<string, string>) =>
    ({ status: () => "ok", prefix: "gw:", command: { hgetall: () => Promise.resolve(records) } }) as unknown as FleetRedisShape
  const config = testConfig({ t: { instances: ["a", "b"], load_balancer: { health_check_interval: 10 } } })

  it.scoped("a starting replica takes the fleet's verdicts fresher than three probe intervals, by the clock", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      // b was found down at 0 s, a at 20 s; it is 50 s now: b's verdict is 50 s old, past 3 × 10 s.
      yield* TestClock.adjust(Duration.seconds(50))
      const fleet = fleetWith({
        "t/a": JSON.stringify({ status: "unhealthy", at: 20_000, error: "refused" }),
        "t/b": JSON.stringify({ status: "unhealthy", at: 0, error: "refused" })
      })
      expect(yield* makeSharedHealth(fleet, registry, yield* Timer).seed).toBe(1)
      expect(registry.template("t")!.instances.get("a")!.status).toBe("unhealthy")
      expect(registry.template("t")!.instances.get("b")!.status).toBe("unknown")
    }).pipe(Effect.provide(Layer.mergeAll(Registry.layerMemory, Timer.layerTest).pipe(Layer.provide(GatewayConfig.layer(config))))))
})
