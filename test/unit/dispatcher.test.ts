import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, TestClock } from "effect"
import { GatewayConfig } from "../../src/config/GatewayConfig.js"
import { GatewayCore } from "../../src/Gateway.js"
import { HealthChecker } from "../../src/health/HealthChecker.js"
import { Dispatcher } from "../../src/proxy/Dispatcher.js"
import { Registry } from "../../src/registry/Registry.js"
import { broken, makeFakeTransport, refused } from "../support/FakeTransport.js"
import { testConfig } from "../support/testConfig.js"

const gateway = (config: ReturnType<typeof testConfig>) => {
  const fake = makeFakeTransport()
  const layer = GatewayCore.pipe(Layer.provide(fake.layer), Layer.provide(GatewayConfig.layer(config)))
  return { fake, layer }
}

const callTimes = (n: number, template = "t", method = "tools/call") =>
  Effect.flatMap(Dispatcher, (d) =>
    Effect.forEach(Array.from({ length: n }), () => d.call(template, method, { name: "echo" }), { discard: true }))

describe("Dispatcher", () => {
  it.scoped("round robin over 3 instances gives 10/10/10 for 30 calls", () => {
    const { fake, layer } = gateway(testConfig({ t: { instances: ["a", "b", "c"] } }))
    return Effect.gen(function*() {
      yield* callTimes(30)
      expect(fake.distribution()).toEqual({ a: 10, b: 10, c: 10 })
    }).pipe(Effect.provide(layer))
  })

  it.scoped("weighted 3:1 gives 30/10 for 40 calls, and 3:1 within every 4", () => {
    const { fake, layer } = gateway(testConfig({
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

  it.scoped("answers with the instance that served the call", () => {
    const { layer } = gateway(testConfig({ t: { instances: ["a"] } }))
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      const answer = yield* d.call("t", "tools/list", undefined)
      expect(answer).toEqual({ result: { instance: "a" }, instanceId: "a" })
    }).pipe(Effect.provide(layer))
  })

  it.scoped("fails over to a second instance when the first fails", () => {
    const { fake, layer } = gateway(testConfig({ t: { instances: ["a", "b"] } }))
    fake.set("a", () => Effect.fail(broken("a")))
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      const answer = yield* d.call("t", "tools/list", undefined)
      expect(answer.instanceId).toBe("b")
      expect(fake.calls.map((c) => c.instanceId)).toEqual(["a", "b"])
      // The failed instance is out of rotation until a probe brings it back.
      const registry = yield* Registry
      expect(registry.template("t")!.instances.get("a")!.status).toBe("unhealthy")
    }).pipe(Effect.provide(layer))
  })

  it.scoped("does not retry a tools/call that may have reached a backend", () => {
    const { fake, layer } = gateway(testConfig({ t: { instances: ["a", "b"] } }))
    fake.set("a", () => Effect.fail(broken("a")))
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      const error = yield* Effect.flip(d.call("t", "tools/call", { name: "x" }))
      expect(error._tag).toBe("AllAttemptsFailed")
      expect(error.message).toContain("not retried")
      expect(fake.calls.map((c) => c.instanceId)).toEqual(["a"])
    }).pipe(Effect.provide(layer))
  })

  it.scoped("retries a tools/call that provably never reached a backend", () => {
    const { fake, layer } = gateway(testConfig({ t: { instances: ["a", "b"] } }))
    fake.set("a", () => Effect.fail(refused("a")))
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      const answer = yield* d.call("t", "tools/call", { name: "x" })
      expect(answer.instanceId).toBe("b")
    }).pipe(Effect.provide(layer))
  })

  it.scoped("gives up after max_retries failovers and reports every attempt", () => {
    const { fake, layer } = gateway(testConfig({ t: { instances: ["a", "b", "c", "d"], load_balancer: { max_retries: 2 } } }))
    for (const id of ["a", "b", "c", "d"]) fake.set(id, () => Effect.fail(refused(id)))
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      const error = yield* Effect.flip(d.call("t", "resources/list", undefined))
      expect(error._tag).toBe("AllAttemptsFailed")
      expect(fake.calls).toHaveLength(3)
      expect(error.message).toContain("ECONNREFUSED")
    }).pipe(Effect.provide(layer))
  })

  it.scoped("passes a backend's JSON-RPC error through without failover", () => {
    const { fake, layer } = gateway(testConfig({ t: { instances: ["a", "b"] } }))
    fake.set("a", () => Effect.succeed({ error: { code: -32602, message: "Unknown tool" } }))
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      const error = yield* Effect.flip(d.call("t", "tools/call", { name: "x" }))
      expect(error._tag).toBe("BackendError")
      if (error._tag === "BackendError") expect(error.error.code).toBe(-32602)
      expect(fake.calls).toHaveLength(1)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("times out after the template's timeout", () => {
    const { fake, layer } = gateway(testConfig({ t: { instances: ["a"], load_balancer: { timeout: 5 } } }))
    fake.set("a", () => Effect.never)
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      const fiber = yield* Effect.fork(Effect.flip(d.call("t", "tools/call", { name: "slow" })))
      yield* TestClock.adjust(Duration.seconds(4))
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust(Duration.seconds(2))
      const error = yield* Fiber.join(fiber)
      expect(error._tag).toBe("UpstreamTimeout")
      // The hung instance's in-flight count came back down when the call was abandoned.
      const registry = yield* Registry
      expect(registry.template("t")!.instances.get("a")!.activeRequests).toBe(0)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("unknown template and a template with no healthy instance", () => {
    const { fake, layer } = gateway(testConfig({ t: { instances: ["a"] } }))
    fake.set("a", () => Effect.fail(refused("a")))
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      expect((yield* Effect.flip(d.call("nope", "tools/list", undefined)))._tag).toBe("TemplateNotFound")
      expect((yield* Effect.flip(d.call("t", "tools/list", undefined)))._tag).toBe("AllAttemptsFailed")
      expect((yield* Effect.flip(d.call("t", "tools/list", undefined)))._tag).toBe("NoHealthyInstance")
    }).pipe(Effect.provide(layer))
  })

  it.scoped("skips unhealthy instances and restores them when a probe succeeds", () => {
    const { fake, layer } = gateway(testConfig({ t: { instances: ["a", "b"], load_balancer: { health_check_interval: 10 } } }))
    return Effect.gen(function*() {
      const checker = yield* HealthChecker
      fake.set("a", (method) => method === "ping" ? Effect.fail(refused("a")) : Effect.succeed({}))
      yield* checker.checkAll
      yield* callTimes(4)
      expect(fake.distribution()).toEqual({ b: 4 })

      // a recovers: the next scheduled probe (after the interval) puts it back in rotation.
      fake.clear("a")
      yield* TestClock.adjust(Duration.seconds(10))
      yield* callTimes(4)
      expect(fake.distribution()).toEqual({ a: 2, b: 6 })
    }).pipe(Effect.provide(layer))
  })
})
