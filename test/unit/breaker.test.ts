import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Fiber, TestClock } from "effect"
import { backoffDelayMs } from "../../src/domain/LoadBalancer.js"
import { OutlierDetector } from "../../src/instance/OutlierDetector.js"
import { Dispatcher } from "../../src/dispatch/Dispatcher.js"
import { Registry } from "../../src/registry/Registry.js"
import { broken, refused } from "../support/FakeTransport.js"
import { testConfig } from "../support/testConfig.js"
import { testGateway } from "../support/testGateway.js"

const instance = (id: string) => Effect.map(Registry, (r) => r.template("t")!.instances.get(id)!)
const call = Effect.flatMap(Dispatcher, (d) => Effect.either(d.call("t", "tools/list", undefined)))
const now = (ms: number) => ms

describe("circuit breaker", () => {
  // One instance, so that outlier ejection (never the last instance) stays out of the way.
  const breakerConfig = testConfig({
    t: {
      instances: ["a"],
      load_balancer: { circuit_breaker: { failure_threshold: 3, base_delay_ms: 1000, max_delay_ms: 5000, jitter: 0 } }
    }
  })

  it.scoped("opens after failure_threshold failures in a row, refusing at once until the cool-down ends", () => {
    const { fake, layer } = testGateway(breakerConfig)
    fake.set("a", () => Effect.fail(refused("a")))
    return Effect.gen(function*() {
      const a = yield* instance("a")
      yield* call
      yield* call
      expect(a.breaker.state).toBe("closed")
      yield* call
      expect(a.breaker.state).toBe("open")
      expect(a.breaker.nextTrialAt).toBe(now(1000))
      const sent = fake.calls.length
      // Open: refused without a request.
      expect((yield* call)._tag).toBe("Left")
      expect(fake.calls.length).toBe(sent)
      expect(a.breaker.toJSON(0).state).toBe("open")
      yield* TestClock.adjust(Duration.millis(999))
      yield* call
      expect(fake.calls.length).toBe(sent)
      // The cool-down is over: shown as half-open, and the next request is the trial.
      yield* TestClock.adjust(Duration.millis(1))
      expect(a.breaker.toJSON(1000).state).toBe("half_open")
    }).pipe(Effect.provide(layer))
  })

  it.scoped("half-open lets exactly one trial through; its success closes the breaker", () => {
    const { fake, layer } = testGateway(breakerConfig)
    const release = Deferred.unsafeMake<void>(undefined as any)
    fake.set("a", () => Effect.fail(refused("a")))
    return Effect.gen(function*() {
      const a = yield* instance("a")
      for (let i = 0; i < 3; i++) yield* call
      yield* TestClock.adjust(Duration.seconds(1))
      // The trial hangs until released; meanwhile every other request is refused at once.
      fake.set("a", () => Effect.as(Deferred.await(release), { ok: true }))
      const trial = yield* Effect.fork(call)
      yield* TestClock.adjust(Duration.millis(1))
      expect(a.breaker.state).toBe("half_open")
      const sent = fake.calls.length
      const others = yield* Effect.all([call, call, call])
      expect(others.every((r) => r._tag === "Left")).toBe(true)
      expect(fake.calls.length).toBe(sent)
      yield* Deferred.succeed(release, undefined)
      expect((yield* Fiber.join(trial))._tag).toBe("Right")
      expect(a.breaker.state).toBe("closed")
      expect(a.breaker.trips).toBe(0)
      expect((yield* call)._tag).toBe("Right")
    }).pipe(Effect.provide(layer))
  })

  it.scoped("a failed trial opens it again for a longer cool-down (exponential, capped)", () => {
    const { fake, layer } = testGateway(breakerConfig)
    fake.set("a", () => Effect.fail(broken("a")))
    return Effect.gen(function*() {
      const a = yield* instance("a")
      for (let i = 0; i < 3; i++) yield* call
      const cooldowns: Array<number> = []
      let t = 0
      for (let trip = 0; trip < 5; trip++) {
        cooldowns.push(a.breaker.nextTrialAt! - t)
        t = a.breaker.nextTrialAt!
        yield* TestClock.adjust(Duration.millis(cooldowns.at(-1)!))
        yield* call // the trial, which fails
        expect(a.breaker.state).toBe("open")
      }
      expect(cooldowns).toEqual([1000, 2000, 4000, 5000, 5000])
      expect(a.breaker.trips).toBe(6)
    }).pipe(Effect.provide(layer))
  })

  it("cool-downs are jittered within ±jitter and never above the cap", () => {
    const backoff = { base: Duration.seconds(5), max: Duration.seconds(60), jitter: 0.2 }
    expect(backoffDelayMs(backoff, 1, 0)).toBe(4000)
    expect(backoffDelayMs(backoff, 1, 0.5)).toBe(5000)
    expect(backoffDelayMs(backoff, 1, 0.9999)).toBeCloseTo(6000, -1)
    expect(backoffDelayMs(backoff, 3, 0.5)).toBe(20_000)
    expect(backoffDelayMs(backoff, 10, 0.9999)).toBe(60_000)
  })

  it.scoped("a session's request to an instance whose breaker is open is refused as InstanceUnavailable", () => {
    const { fake, layer } = testGateway(breakerConfig)
    fake.set("a", () => Effect.fail(refused("a")))
    return Effect.gen(function*() {
      const a = yield* instance("a")
      for (let i = 0; i < 3; i++) yield* call
      const d = yield* Dispatcher
      const error = yield* Effect.flip(d.call("t", "tools/call", { name: "x" }, { instance: a }))
      expect(error._tag).toBe("InstanceUnavailable")
      if (error._tag === "InstanceUnavailable") expect(error.retryAfterSeconds).toBe(1)
    }).pipe(Effect.provide(layer))
  })
})

describe("passive outlier detection", () => {
  const outlierConfig = (instances: Array<string>) =>
    testConfig({
      t: {
        instances,
        load_balancer: {
          retry: { base_delay_ms: 0 },
          outlier_consecutive_failures: 3,
          outlier_base_ejection: 10,
          outlier_max_ejection: 25,
          // The breaker is another story.
          circuit_breaker: { failure_threshold: 0 }
        }
      }
    })

  it.scoped("ejects an instance after outlier_consecutive_failures failures in a row, without a probe, and takes it back after the ejection", () => {
    const { fake, layer } = testGateway(outlierConfig(["a", "b"]))
    fake.set("a", () => Effect.fail(refused("a")))
    return Effect.gen(function*() {
      const a = yield* instance("a")
      const d = yield* Dispatcher
      // Round robin sends every other request to a first; each fails over to b.
      for (let i = 0; i < 6; i++) yield* d.call("t", "tools/list", undefined)
      expect(a.outlier.isEjected(0)).toBe(true)
      expect(a.outlier.ejectedUntil).toBe(10_000)
      expect(a.status).toBe("unknown") // ejection is not a probe verdict
      const before = fake.distribution("tools/list")
      for (let i = 0; i < 4; i++) yield* d.call("t", "tools/list", undefined)
      expect(fake.distribution("tools/list")).toEqual({ ...before, b: before.b! + 4 })
      // Back after 10 s.
      fake.clear("a")
      yield* TestClock.adjust(Duration.seconds(10))
      for (let i = 0; i < 4; i++) yield* d.call("t", "tools/list", undefined)
      expect(fake.distribution("tools/list").a).toBe(before.a! + 2)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("each ejection lasts longer (base × n), up to outlier_max_ejection", () => {
    const { fake, layer } = testGateway(outlierConfig(["a", "b"]))
    // Live traffic fails; health probes pass (so only the outlier detector has a say).
    fake.set("a", (method) => method === "ping" ? Effect.succeed({}) : Effect.fail(refused("a")))
    return Effect.gen(function*() {
      const a = yield* instance("a")
      const d = yield* Dispatcher
      const lengths: Array<number> = []
      for (let n = 0; n < 4; n++) {
        const start = yield* TestClock.currentTimeMillis
        for (let guard = 0; !a.outlier.isEjected(start); guard++) {
          expect(guard).toBeLessThan(10)
          yield* d.call("t", "tools/list", undefined)
        }
        lengths.push(a.outlier.ejectedUntil! - start)
        yield* TestClock.adjust(Duration.millis(a.outlier.ejectedUntil! - start))
      }
      expect(lengths).toEqual([10_000, 20_000, 25_000, 25_000])
    }).pipe(Effect.provide(layer))
  })

  /** Probes every 2 s (±20%), ejections of 30 s: a probe comes long before an ejection's end. */
  const probedConfig = (uneject?: boolean) =>
    testConfig({
      t: {
        instances: ["a", "b"],
        load_balancer: {
          retry: { base_delay_ms: 0 },
          health_check_interval: 2,
          outlier_consecutive_failures: 3,
          outlier_base_ejection: 30,
          circuit_breaker: { failure_threshold: 0 },
          ...(uneject === undefined ? {} : { outlier_uneject_on_probe: uneject })
        }
      }
    })

  it.scoped("a health probe that passes ends an ejection (outlier_uneject_on_probe, on by default): a restarted instance serves at its next probe", () => {
    const { fake, layer } = testGateway(probedConfig())
    return Effect.gen(function*() {
      const a = yield* instance("a")
      const d = yield* Dispatcher
      // Killed: requests and probes fail alike.
      fake.set("a", () => Effect.fail(refused("a")))
      for (let guard = 0; !a.outlier.isEjected(yield* TestClock.currentTimeMillis); guard++) {
        expect(guard).toBeLessThan(10)
        yield* d.call("t", "tools/list", undefined)
      }
      expect(a.outlier.ejectedUntil).toBe(30_000)
      // Restarted: the next probe (at most 2.4 s away) passes and takes it back, 27 s early.
      fake.clear("a")
      yield* TestClock.adjust(Duration.millis(2_500))
      const now = yield* TestClock.currentTimeMillis
      expect(a.outlier.isEjected(now)).toBe(false)
      expect(a.selectable(now)).toBe(true)
      expect(a.outlier.ejections).toBe(1) // the next ejection would still be longer
      const before = fake.distribution("tools/list").a ?? 0
      for (let i = 0; i < 4; i++) yield* d.call("t", "tools/list", undefined)
      expect(fake.distribution("tools/list").a).toBe(before + 2)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("with outlier_uneject_on_probe: false, an ejection lasts its whole time whatever the probes say", () => {
    const { fake, layer } = testGateway(probedConfig(false))
    return Effect.gen(function*() {
      const a = yield* instance("a")
      const d = yield* Dispatcher
      fake.set("a", (method) => method === "ping" ? Effect.succeed({}) : Effect.fail(refused("a")))
      for (let i = 0; i < 6; i++) yield* d.call("t", "tools/list", undefined)
      expect(a.outlier.isEjected(yield* TestClock.currentTimeMillis)).toBe(true)
      fake.clear("a")
      yield* TestClock.adjust(Duration.seconds(29))
      expect(a.outlier.isEjected(yield* TestClock.currentTimeMillis)).toBe(true)
      yield* TestClock.adjust(Duration.seconds(1))
      expect(a.outlier.isEjected(yield* TestClock.currentTimeMillis)).toBe(false)
    }).pipe(Effect.provide(layer))
  })

  it("only a probe that started after the ejection ends it", () => {
    const settings = { outlier_consecutive_failures: 1, outlier_base_ejection: Duration.seconds(30), outlier_max_ejection: Duration.minutes(5), outlier_uneject_on_probe: true }
    const detector = new OutlierDetector()
    expect(detector.onFailure(1_000, settings, true)).toBe(30_000)
    // Under way when the instance was ejected: says nothing of what ejected it.
    expect(detector.onProbeSuccess(900, 1_200, settings)).toBe(false)
    expect(detector.isEjected(1_200)).toBe(true)
    expect(detector.onProbeSuccess(1_000, 1_300, settings)).toBe(true)
    expect(detector.isEjected(1_300)).toBe(false)
    // Not ejected: nothing to end.
    expect(detector.onProbeSuccess(1_400, 1_500, settings)).toBe(false)
  })

  it.scoped("never ejects the last instances: at most outlier_max_ejection_percent of a template (a lone one never)", () => {
    const { fake, layer } = testGateway(outlierConfig(["solo"]))
    fake.set("solo", () => Effect.fail(refused("solo")))
    return Effect.gen(function*() {
      const solo = yield* Effect.map(Registry, (r) => r.template("t")!.instances.get("solo")!)
      for (let i = 0; i < 10; i++) yield* call
      expect(solo.outlier.isEjected(0)).toBe(false)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("with four instances failing, only two (50%) are ejected", () => {
    const { fake, layer } = testGateway(outlierConfig(["a", "b", "c", "d"]))
    for (const id of ["a", "b", "c", "d"]) fake.set(id, () => Effect.fail(refused(id)))
    return Effect.gen(function*() {
      for (let i = 0; i < 20; i++) yield* call
      const registry = yield* Registry
      const ejected = Array.from(registry.template("t")!.instances.values()).filter((i) => i.outlier.isEjected(0))
      expect(ejected).toHaveLength(2)
    }).pipe(Effect.provide(layer))
  })
})
