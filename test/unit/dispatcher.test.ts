import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, FiberRef, HashMap, Layer, Option, TestClock } from "effect"
import type { LoadBalancerInput } from "../../src/domain/LoadBalancer.js"
import { HealthChecker } from "../../src/health/HealthChecker.js"
import { RequestLog, type RequestLogFields, type RequestLogShape } from "../../src/observability/RequestLog.js"
import { Dispatcher } from "../../src/dispatch/Dispatcher.js"
import { Registry } from "../../src/registry/Registry.js"
import { TransportError } from "../../src/transport/TransportError.js"
import { broken, refused, rejected } from "../support/FakeTransport.js"
import { dispatchModes, modeName, observing } from "../support/dispatchModes.js"
import { dispatchVia } from "../support/dispatchVia.js"
import { testConfig } from "../support/testConfig.js"
import { testGateway } from "../support/testGateway.js"

/** Failover without waiting: for tests about where requests go, not when. */
const immediate: LoadBalancerInput = { retry: { base_delay_ms: 0 } }



const instance = (id: string, template = "t") => Effect.map(Registry, (r) => r.template(template)!.instances.get(id)!)

/**
 * One table of cases, run through both drivers (`call`: the Effect driver; `callNow`: the
 * callback driver, see dispatchVia), each with nothing observing, with tracing on, and with
 * routing lines at debug (see dispatchModes): observing a request never changes how it runs.
 */
describe.each(dispatchModes.map((mode) => [modeName(mode), mode] as const))("%s", (_, mode) => {
  const call = dispatchVia(mode.via)
  /** What the mode's observing recorded in the current test. */
  let observed = observing(mode)
  /** The test gateway of testGateway, observed as the mode says. */
  const gatewayFor = (config: ReturnType<typeof testConfig>) => {
    observed = observing(mode)
    const { fake, layer } = testGateway(observed.configure(config))
    return { fake, layer: Layer.provide(layer, observed.layer) }
  }

  const callTimes = (n: number, template = "t", method = "tools/call") =>
    Effect.flatMap(Dispatcher, (d) =>
      Effect.forEach(Array.from({ length: n }), () => call(d)(template, method, { name: "echo" }), { discard: true }))

  describe("Dispatcher: where requests go", () => {
    it.scoped("round robin over 3 instances gives 10/10/10 for 30 calls", () => {
      const { fake, layer } = gatewayFor(testConfig({ t: { instances: ["a", "b", "c"] } }))
      return Effect.gen(function*() {
        yield* callTimes(30)
        expect(fake.distribution()).toEqual({ a: 10, b: 10, c: 10 })
      }).pipe(Effect.provide(layer))
    })

    it.scoped("weighted 3:1 gives 30/10 for 40 calls, and 3:1 within every 4", () => {
      const { fake, layer } = gatewayFor(testConfig({
        t: { instances: [{ id: "big", weight: 3 }, { id: "small", weight: 1 }], load_balancer: { strategy: "weighted" } }
      }))
      return Effect.gen(function*() {
        yield* callTimes(40)
        expect(fake.distribution()).toEqual({ big: 30, small: 10 })
        const picks = fake.calls.filter((c) => c.method === "tools/call").map((c) => c.instanceId)
        for (let i = 0; i < 40; i += 4) {
          expect(picks.slice(i, i + 4).filter((id) => id === "small")).toHaveLength(1)
        }
      }).pipe(Effect.provide(layer))
    })

    it.scoped("a strategy that writes only select (random) chooses as an Effect, and every request is answered", () => {
      const { fake, layer } = gatewayFor(testConfig({ t: { instances: ["a", "b", "c"], load_balancer: { strategy: "random" } } }))
      return Effect.gen(function*() {
        yield* callTimes(30)
        const counts = fake.distribution()
        expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(30)
        for (const id of ["a", "b", "c"]) expect((yield* instance(id)).activeRequests).toBe(0)
      }).pipe(Effect.provide(layer))
    })

    it.scoped("answers with the instance that served the call", () => {
      const { layer } = gatewayFor(testConfig({ t: { instances: ["a"] } }))
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        const answer = yield* call(d)("t", "tools/list", undefined)
        expect(answer.result).toEqual({ instance: "a" })
        expect(answer.instanceId).toBe("a")
      }).pipe(Effect.provide(layer))
    })

    it.scoped("requests pinned to an instance (a session's) count in least_connections", () => {
      const { fake, layer } = gatewayFor(testConfig({
        t: { instances: ["a", "b"], load_balancer: { strategy: "least_connections" } }
      }))
      fake.set("a", (_, params) => params?.name === "slow" ? Effect.never : Effect.succeed({}))
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        const a = yield* instance("a")
        const pinned = yield* Effect.forkScoped(
          Effect.all(Array.from({ length: 3 }, () => call(d)("t", "tools/call", { name: "slow" }, { instance: a })), {
            concurrency: "unbounded"
          })
        )
        yield* TestClock.adjust(Duration.millis(1))
        expect(a.activeRequests).toBe(3)
        yield* callTimes(4)
        expect(fake.distribution()).toEqual({ a: 3, b: 4 })
        yield* Fiber.interrupt(pinned)
        expect(a.activeRequests).toBe(0)
      }).pipe(Effect.provide(layer))
    })
  })

  describe("Dispatcher: observing", () => {
    it.scoped("spans and routing lines wrap the core and say which driver ran it; unobserved, nothing is made", () => {
      const { layer } = gatewayFor(testConfig({ t: { instances: ["a", "b"], load_balancer: immediate } }))
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        yield* call(d)("t", "tools/call", { name: "echo" })
        const driver = mode.via === "call" ? "effect" : "callback"
        const routes = observed.lines.filter((l) => Array.isArray(l.message) && l.message[0] === "route")
        if (mode.observe === "tracing") {
          const names = observed.spans.map((s) => s.name)
          expect(names).toEqual(["gateway.select", "gateway.attempt", "gateway.backend"])
          const [, attempt, backend] = observed.spans
          expect(attempt!.attributes.get("gateway.driver")).toBe(driver)
          expect(attempt!.attributes.get("mcp.instance")).toBe("a")
          expect(backend!.parentSpanId).toBe(attempt!.spanId)
          expect(backend!.attributes.get("mcp.method")).toBe("tools/call")
          expect(observed.spans.every((s) => s.ended)).toBe(true)
        } else expect(observed.spans).toEqual([])
        if (mode.observe === "debug") {
          expect(routes).toHaveLength(1)
          expect(routes[0]!.annotations).toMatchObject({ template: "t", instance: "a", candidates: "a,b", driver })
        } else expect(routes).toEqual([])
      }).pipe(Effect.provide(layer))
    })
  })

  describe("Dispatcher: a strategy plugin with a bug", () => {
    it.scoped("a pick that is not one of the candidates fails that request as a defect, and nothing is sent", () => {
      const { fake, layer } = gatewayFor(testConfig({
        t: { instances: ["a", "b"], load_balancer: { strategy: "./test/fixtures/plugins/foreign-pick-strategy.mjs" } }
      }))
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        const exit = yield* Effect.exit(call(d)("t", "tools/call", { name: "echo" }))
        expect(Exit.isFailure(exit) && !Exit.isInterrupted(exit) && exit.cause._tag === "Die").toBe(true)
        if (Exit.isFailure(exit) && exit.cause._tag === "Die") expect(String(exit.cause.defect)).toContain("not one of its candidates")
        expect(fake.calls).toEqual([])
        expect((yield* instance("a")).activeRequests).toBe(0)
        expect((yield* instance("b")).activeRequests).toBe(0)
      }).pipe(Effect.provide(layer))
    })
  })

  describe("Dispatcher: failover and retries", () => {
    it.scoped("fails over to a second instance when the first fails, counting the failure against the first", () => {
      const { fake, layer } = gatewayFor(testConfig({ t: { instances: ["a", "b"], load_balancer: immediate } }))
      fake.set("a", () => Effect.fail(broken("a")))
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        const answer = yield* call(d)("t", "tools/list", undefined)
        expect(answer.instanceId).toBe("b")
        expect(fake.calls.map((c) => c.instanceId)).toEqual(["a", "b"])
        const a = yield* instance("a")
        expect(a.outlier.consecutiveFailures).toBe(1)
        expect(a.breaker.consecutiveFailures).toBe(1)
        // One failure is no verdict: a stays in rotation (ejection takes outlier_consecutive_failures).
        expect(a.selectable(0)).toBe(true)
      }).pipe(Effect.provide(layer))
    })

    it.scoped("does not retry a tools/call that may have reached a backend", () => {
      const { fake, layer } = gatewayFor(testConfig({ t: { instances: ["a", "b"], load_balancer: immediate } }))
      fake.set("a", () => Effect.fail(broken("a")))
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        const error = yield* Effect.flip(call(d)("t", "tools/call", { name: "x" }))
        expect(error._tag).toBe("AllAttemptsFailed")
        expect(error.message).toContain("not retried")
        expect(fake.calls.map((c) => c.instanceId)).toEqual(["a"])
      }).pipe(Effect.provide(layer))
    })

    it.scoped("retries a tools/call that provably never reached a backend", () => {
      const { fake, layer } = gatewayFor(testConfig({ t: { instances: ["a", "b"], load_balancer: immediate } }))
      fake.set("a", () => Effect.fail(refused("a")))
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        const answer = yield* call(d)("t", "tools/call", { name: "x" })
        expect(answer.instanceId).toBe("b")
      }).pipe(Effect.provide(layer))
    })

    it.scoped("waits the retry schedule's delays (exponential, capped) and stops after max_retries", () => {
      const { fake, layer } = gatewayFor(testConfig({
        t: {
          instances: ["a", "b", "c", "d", "e"],
          load_balancer: { max_retries: 3, retry: { base_delay_ms: 100, max_delay_ms: 250, jitter: 0 } }
        }
      }))
      for (const id of ["a", "b", "c", "d", "e"]) fake.set(id, () => Effect.fail(refused(id)))
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        const fiber = yield* Effect.fork(Effect.flip(call(d)("t", "resources/list", undefined)))
        const attempts = () => fake.calls.length
        yield* TestClock.adjust(Duration.millis(1))
        expect(attempts()).toBe(1)
        yield* TestClock.adjust(Duration.millis(98))
        expect(attempts()).toBe(1)
        yield* TestClock.adjust(Duration.millis(1)) // 100 ms: the first retry
        expect(attempts()).toBe(2)
        yield* TestClock.adjust(Duration.millis(199))
        expect(attempts()).toBe(2)
        yield* TestClock.adjust(Duration.millis(1)) // +200 ms
        expect(attempts()).toBe(3)
        yield* TestClock.adjust(Duration.millis(249))
        expect(attempts()).toBe(3)
        yield* TestClock.adjust(Duration.millis(1)) // +250 ms, the cap (not 400)
        expect(attempts()).toBe(4)
        const error = yield* Fiber.join(fiber)
        expect(error._tag).toBe("AllAttemptsFailed")
        expect(attempts()).toBe(4) // 1 + max_retries, never an instance twice
        expect(new Set(fake.calls.map((c) => c.instanceId)).size).toBe(4)
        expect(error.message).toContain("ECONNREFUSED")
      }).pipe(Effect.provide(layer))
    })

    it.scoped("never retries past the request's deadline", () => {
      const { fake, layer } = gatewayFor(testConfig({
        t: { instances: ["a", "b"], load_balancer: { timeout: 1, retry: { base_delay_ms: 800, max_delay_ms: 800, jitter: 0 } } }
      }))
      fake.set("a", () => Effect.zipRight(Effect.sleep(Duration.millis(600)), Effect.fail(refused("a"))))
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        const fiber = yield* Effect.fork(Effect.flip(call(d)("t", "tools/list", undefined)))
        yield* TestClock.adjust(Duration.millis(999))
        expect(fiber.unsafePoll()).toBeNull()
        yield* TestClock.adjust(Duration.millis(1))
        const error = yield* Fiber.join(fiber)
        // The 800 ms delay was cut to the 400 ms left; no time remained for b.
        expect(error._tag).toBe("UpstreamTimeout")
        expect(fake.calls.map((c) => c.instanceId)).toEqual(["a"])
      }).pipe(Effect.provide(layer))
    })

    it.scoped("passes a backend's JSON-RPC error through without failover", () => {
      const { fake, layer } = gatewayFor(testConfig({ t: { instances: ["a", "b"] } }))
      fake.set("a", () => Effect.succeed({ error: { code: -32602, message: "Unknown tool" } }))
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        const error = yield* Effect.flip(call(d)("t", "tools/call", { name: "x" }))
        expect(error._tag).toBe("BackendError")
        if (error._tag === "BackendError") expect(error.error.code).toBe(-32602)
        expect(fake.calls).toHaveLength(1)
        // The instance answered: that is health, not a failure.
        expect((yield* instance("a")).breaker.consecutiveFailures).toBe(0)
      }).pipe(Effect.provide(layer))
    })
  })

  describe("Dispatcher: client mistakes are not instance failures", () => {
    it.scoped("a message the backend refuses as malformed is a 400, not retried, and counts for nothing", () => {
      const { fake, layer } = gatewayFor(testConfig({ t: { instances: ["a", "b"], load_balancer: immediate } }))
      fake.set("a", () => Effect.fail(rejected("a")))
      fake.set("b", () => Effect.fail(rejected("b")))
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        for (let i = 0; i < 10; i++) {
          const error = yield* Effect.flip(call(d)("t", "tools/list", undefined))
          expect(error._tag).toBe("RequestRejected")
        }
        expect(fake.calls).toHaveLength(10)
        for (const id of ["a", "b"]) {
          const state = yield* instance(id)
          expect(state.breaker.state).toBe("closed")
          expect(state.outlier.consecutiveFailures).toBe(0)
          expect(state.successRate).toBe(1)
        }
      }).pipe(Effect.provide(layer))
    })

    it.scoped("a server that ended the client's session (session not found) says nothing against the instance", () => {
      const { fake, layer } = gatewayFor(testConfig({ t: { instances: ["a"], load_balancer: { ...immediate, outlier_consecutive_failures: 2 } } }))
      fake.set("a", () => Effect.fail(new TransportError({ instanceId: "a", reason: "session_ended", message: "the server ended the session", reachedBackend: true })))
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        const a = yield* instance("a")
        for (let i = 0; i < 6; i++) {
          const error = yield* Effect.flip(call(d)("t", "tools/list", undefined, { instance: a }))
          expect(error._tag).toBe("AllAttemptsFailed")
        }
        expect(a.outlier.consecutiveFailures).toBe(0)
        expect(a.outlier.isEjected(Date.now())).toBe(false)
        expect(a.breaker.state).toBe("closed")
        expect(a.successRate).toBe(1)
      }).pipe(Effect.provide(layer))
    })

    it.scoped("a client that goes away (interrupted request) counts for nothing", () => {
      const { fake, layer } = gatewayFor(testConfig({ t: { instances: ["a"] } }))
      fake.set("a", () => Effect.never)
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        for (let i = 0; i < 6; i++) {
          const fiber = yield* Effect.fork(call(d)("t", "tools/call", { name: "x" }))
          yield* TestClock.adjust(Duration.millis(10))
          yield* Fiber.interrupt(fiber)
        }
        const a = yield* instance("a")
        expect(a.activeRequests).toBe(0)
        expect(a.breaker.consecutiveFailures).toBe(0)
        expect(a.outlier.consecutiveFailures).toBe(0)
      }).pipe(Effect.provide(layer))
    })
  })

  describe("Dispatcher: deadlines", () => {
    it.scoped("times out after the template's timeout", () => {
      const { fake, layer } = gatewayFor(testConfig({ t: { instances: ["a"], load_balancer: { timeout: 5 } } }))
      fake.set("a", () => Effect.never)
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        const fiber = yield* Effect.fork(Effect.flip(call(d)("t", "tools/call", { name: "slow" })))
        yield* TestClock.adjust(Duration.seconds(4))
        expect(fiber.unsafePoll()).toBeNull()
        yield* TestClock.adjust(Duration.seconds(1))
        const error = yield* Fiber.join(fiber)
        expect(error._tag).toBe("UpstreamTimeout")
        // The hung instance's in-flight count came back down when the call was abandoned.
        expect((yield* instance("a")).activeRequests).toBe(0)
      }).pipe(Effect.provide(layer))
    })

    /** Reports progress every 4 s, five times, then answers (20 s in all). */
    const reportsProgress = (_: string, __: unknown, options: any) =>
      Effect.gen(function*() {
        for (let i = 1; i <= 5; i++) {
          yield* Effect.sleep(Duration.seconds(4))
          options?.onNotification?.({ jsonrpc: "2.0", method: "notifications/progress", params: { progressToken: 1, progress: i } })
        }
        return { done: true }
      })

    it.scoped("a tool that reports progress gets a fresh timeout with each report, and finishes", () => {
      const { fake, layer } = gatewayFor(testConfig({ t: { instances: ["a"], load_balancer: { timeout: 5 } } }))
      fake.set("a", reportsProgress)
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        const fiber = yield* Effect.fork(call(d)("t", "tools/call", { name: "long" }))
        yield* TestClock.adjust(Duration.seconds(19))
        expect(fiber.unsafePoll()).toBeNull()
        yield* TestClock.adjust(Duration.seconds(1))
        expect((yield* Fiber.join(fiber)).result).toEqual({ done: true })
      }).pipe(Effect.provide(layer))
    })

    it.scoped("without timeout_resets_on_progress, the timeout stands", () => {
      const { fake, layer } = gatewayFor(testConfig({
        t: { instances: ["a"], load_balancer: { timeout: 5, timeout_resets_on_progress: false } }
      }))
      fake.set("a", reportsProgress)
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        const fiber = yield* Effect.fork(Effect.flip(call(d)("t", "tools/call", { name: "long" })))
        yield* TestClock.adjust(Duration.seconds(5))
        expect((yield* Fiber.join(fiber))._tag).toBe("UpstreamTimeout")
      }).pipe(Effect.provide(layer))
    })

    it.scoped("progress never extends a request past max_timeout", () => {
      const { fake, layer } = gatewayFor(testConfig({ t: { instances: ["a"], load_balancer: { timeout: 5, max_timeout: 12 } } }))
      fake.set("a", reportsProgress)
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        const fiber = yield* Effect.fork(Effect.flip(call(d)("t", "tools/call", { name: "long" })))
        yield* TestClock.adjust(Duration.seconds(11))
        expect(fiber.unsafePoll()).toBeNull()
        yield* TestClock.adjust(Duration.seconds(1))
        expect((yield* Fiber.join(fiber))._tag).toBe("UpstreamTimeout")
      }).pipe(Effect.provide(layer))
    })
  })

  describe("Dispatcher: nothing healthy", () => {
    it.scoped("unknown template, and 503 at once with Retry-After when no instance may take the request", () => {
      const { fake, layer } = gatewayFor(testConfig({
        t: { instances: ["a"], load_balancer: { circuit_breaker: { failure_threshold: 2, base_delay_ms: 7000, jitter: 0 } } }
      }))
      fake.set("a", () => Effect.fail(refused("a")))
      return Effect.gen(function*() {
        const d = yield* Dispatcher
        expect((yield* Effect.flip(call(d)("nope", "tools/list", undefined)))._tag).toBe("TemplateNotFound")
        expect((yield* Effect.flip(call(d)("t", "tools/list", undefined)))._tag).toBe("AllAttemptsFailed")
        expect((yield* Effect.flip(call(d)("t", "tools/list", undefined)))._tag).toBe("AllAttemptsFailed")
        // The breaker opened after two failures: refused at once, no request sent.
        const calls = fake.calls.length
        const error = yield* Effect.flip(call(d)("t", "tools/list", undefined))
        expect(error._tag).toBe("NoHealthyInstance")
        if (error._tag === "NoHealthyInstance") expect(error.retryAfterSeconds).toBe(7)
        expect(fake.calls.length).toBe(calls)
      }).pipe(Effect.provide(layer))
    })

    it.scoped("fail_open sends traffic to unhealthy instances as a last resort", () => {
      const { fake, layer } = gatewayFor(testConfig({ t: { instances: ["a"], load_balancer: { fail_open: true } } }))
      return Effect.gen(function*() {
        fake.set("a", (method) => method === "ping" ? Effect.fail(refused("a")) : Effect.succeed({ served: true }))
        const checker = yield* HealthChecker
        yield* checker.checkAll
        expect((yield* instance("a")).status).toBe("unhealthy")
        const d = yield* Dispatcher
        expect((yield* call(d)("t", "tools/call", { name: "x" })).result).toEqual({ served: true })
      }).pipe(Effect.provide(layer))
    })

    it.scoped("without fail_open, an instance that probes unhealthy is skipped, and restored by a later probe", () => {
      const { fake, layer } = gatewayFor(testConfig({ t: { instances: ["a", "b"], load_balancer: { health_check_interval: 10 } } }))
      return Effect.gen(function*() {
        const checker = yield* HealthChecker
        fake.set("a", (method) => method === "ping" ? Effect.fail(refused("a")) : Effect.succeed({}))
        yield* checker.checkAll
        yield* callTimes(4)
        expect(fake.distribution()).toEqual({ b: 4 })

        // a recovers: a scheduled probe (within the jittered interval) puts it back in rotation.
        fake.clear("a")
        yield* TestClock.adjust(Duration.seconds(12))
        yield* callTimes(4)
        expect(fake.distribution()).toEqual({ a: 2, b: 6 })
      }).pipe(Effect.provide(layer))
    })
  })
})

describe("Dispatcher.callNow (the request path)", () => {
  /** A request log that keeps what it is given: lines written at once (writeNow) and from fibers (write). */
  const keptLog = () => {
    const lines: Array<{ readonly requestId: string; readonly fields: RequestLogFields; readonly via: "writeNow" | "write" }> = []
    const log: RequestLogShape = {
      writeNow: (fields, requestId) => void lines.push({ requestId, fields, via: "writeNow" }),
      write: (fields) =>
        Effect.withFiberRuntime<void>((fiber) => {
          const requestId = HashMap.get(fiber.getFiberRef(FiberRef.currentLogAnnotations), "request_id").pipe(Option.getOrElse(() => ""))
          lines.push({ requestId: String(requestId), fields, via: "write" })
          return Effect.void
        })
    }
    return { lines, layer: Layer.succeed(RequestLog, log) }
  }

  it.scoped("writes the request line with the caller's request id, at once when the first attempt answers", () => {
    const { layer } = testGateway(testConfig({ t: { instances: ["a"] } }))
    const log = keptLog()
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      const exit = yield* Effect.async<Exit.Exit<unknown, unknown>>((resume) => {
        d.callNow("t", "tools/call", { name: "echo" }, undefined, "r-42", (e) => resume(Effect.succeed(e)))
      })
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(log.lines).toHaveLength(1)
      expect(log.lines[0]).toMatchObject({
        requestId: "r-42",
        via: "writeNow",
        fields: { template: "t", operation: "tools/call", subject: "echo", instance: "a", attempts: 1, outcome: "ok", status: 200 }
      })
    }).pipe(Effect.provide(Layer.provide(layer, log.layer)))
  })

  it.scoped("a failover goes on in a fiber, and the request's one line keeps its id and counts both attempts", () => {
    const { fake, layer } = testGateway(testConfig({ t: { instances: ["a", "b"], load_balancer: immediate } }))
    fake.set("a", () => Effect.fail(refused("a")))
    const log = keptLog()
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      const exit = yield* Effect.async<Exit.Exit<{ readonly instanceId: string }, unknown>>((resume) => {
        d.callNow("t", "tools/call", { name: "echo" }, undefined, "r-7", (e) => resume(Effect.succeed(e)))
      })
      expect(Exit.isSuccess(exit) && exit.value.instanceId).toBe("b")
      expect(log.lines).toEqual([
        // (Written by the callback driver, which owns the request, when the retries' fiber ended.)
        expect.objectContaining({ requestId: "r-7", via: "writeNow", fields: expect.objectContaining({ instance: "b", attempts: 2, outcome: "ok" }) })
      ])
    }).pipe(Effect.provide(Layer.provide(layer, log.layer)))
  })

  it.scoped("a cancelled request is never answered; it counts as cancelled and leaves its instance neither busy nor failed", () => {
    const { fake, layer } = testGateway(testConfig({ t: { instances: ["a"] } }))
    fake.set("a", () => Effect.never)
    const log = keptLog()
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      const a = yield* instance("a")
      let answered = false
      const cancel = d.callNow("t", "tools/call", { name: "slow" }, { instance: a }, "r-9", () => {
        answered = true
      })
      yield* TestClock.adjust(Duration.millis(5))
      expect(a.activeRequests).toBe(1)
      cancel()
      cancel()
      yield* TestClock.adjust(Duration.seconds(120))
      expect(answered).toBe(false)
      expect(a.activeRequests).toBe(0)
      expect(a.outlier.consecutiveFailures).toBe(0)
      expect(a.breaker.consecutiveFailures).toBe(0)
      expect(log.lines).toEqual([expect.objectContaining({ requestId: "r-9", fields: expect.objectContaining({ outcome: "cancelled", status: 499 }) })])
    }).pipe(Effect.provide(Layer.provide(layer, log.layer)))
  })
})

describe("Dispatcher.callNow and a strategy plugin that throws", () => {
  it.scoped("fails that request as a defect (the endpoint answers 500); the gateway and the instances are unharmed", () => {
    const { layer } = testGateway(testConfig({
      t: { instances: ["a", "b"], load_balancer: { strategy: "./test/fixtures/plugins/throwing-strategy.mjs" } }
    }))
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      const exit = yield* Effect.async<Exit.Exit<unknown, unknown>>((resume) => {
        // (Called as node:http's callbacks call it: a throw here would end the process.)
        let thrown: unknown
        try {
          d.callNow("t", "tools/call", { name: "echo" }, undefined, "r-1", (e) => resume(Effect.succeed(e)))
        } catch (e) {
          thrown = e
        }
        if (thrown !== undefined) resume(Effect.succeed(Exit.fail(`callNow threw: ${String(thrown)}`)))
      })
      expect(Exit.isFailure(exit) && !Exit.isInterrupted(exit) && exit.cause._tag === "Die").toBe(true)
      expect((yield* instance("a")).activeRequests).toBe(0)
      expect((yield* instance("b")).activeRequests).toBe(0)
    }).pipe(Effect.provide(layer))
  })
})
