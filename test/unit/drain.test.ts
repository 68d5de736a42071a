import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Fiber, TestClock } from "effect"
import { Dispatcher } from "../../src/dispatch/Dispatcher.js"
import { Registry } from "../../src/registry/Registry.js"
import { testConfig } from "../support/testConfig.js"
import { testGateway } from "../support/testGateway.js"

describe("drain", () => {
  it.scoped("a removed instance takes no new requests, finishes the one in flight, then is closed", () => {
    const { fake, layer } = testGateway(testConfig({ t: { instances: ["a", "b"] } }))
    return Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      fake.set("a", (_, params) => params?.name === "slow" ? Effect.as(Deferred.await(release), { finished: true }) : Effect.succeed({}))
      const d = yield* Dispatcher
      const registry = yield* Registry
      // Round robin: the first call goes to a.
      const inflight = yield* Effect.fork(d.call("t", "tools/call", { name: "slow" }))
      yield* TestClock.adjust(Duration.millis(1))
      yield* registry.deregister("t", "a")
      yield* TestClock.adjust(Duration.seconds(5))
      expect(fake.closed).toEqual([])
      for (let i = 0; i < 3; i++) expect((yield* d.call("t", "tools/call", { name: "x" })).instanceId).toBe("b")
      yield* Deferred.succeed(release, undefined)
      expect((yield* Fiber.join(inflight)).result).toEqual({ finished: true })
      yield* TestClock.adjust(Duration.millis(100))
      expect(fake.closed).toEqual(["a"])
    }).pipe(Effect.provide(layer))
  })

  it.scoped("after drain_timeout it is closed even with requests still in flight", () => {
    const { fake, layer } = testGateway(testConfig({ t: { instances: ["a"], load_balancer: { drain_timeout: 5, timeout: 600 } } }))
    fake.set("a", () => Effect.never)
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      const registry = yield* Registry
      yield* Effect.fork(d.call("t", "tools/call", { name: "forever" }))
      yield* TestClock.adjust(Duration.millis(1))
      yield* registry.deregister("t", "a")
      yield* TestClock.adjust(Duration.millis(4900))
      expect(fake.closed).toEqual([])
      yield* TestClock.adjust(Duration.millis(200))
      expect(fake.closed).toEqual(["a"])
    }).pipe(Effect.provide(layer))
  })

  it.scoped("an idle removed instance is closed at once", () => {
    const { fake, layer } = testGateway(testConfig({ t: { instances: ["a"] } }))
    return Effect.gen(function*() {
      const registry = yield* Registry
      yield* registry.deregister("t", "a")
      yield* TestClock.adjust(Duration.millis(1))
      expect(fake.closed).toEqual(["a"])
    }).pipe(Effect.provide(layer))
  })
})
