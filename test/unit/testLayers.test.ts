import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, TestClock } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { GatewayConfig } from "../../src/config/GatewayConfig.js"
import { GatewayCore } from "../../src/gateway/Gateway.js"
import { Dispatcher } from "../../src/dispatch/Dispatcher.js"
import { Timer } from "../../src/clock/Timer.js"
import { Registry } from "../../src/registry/Registry.js"
import { layerFake, makeTransportFake } from "../../src/transport/TransportFake.js"
import { testConfig } from "../support/testConfig.js"

/** The test layers the gateway ships (docs/testing.md), composed as a user's test would. */
describe("the shipped test layers", () => {
  it.scoped("the gateway core over makeTransportFake and Timer.layerTest: a slow instance answers on the test's clock", () => {
    const fake = makeTransportFake({ a: () => Effect.as(Effect.sleep(Duration.seconds(2)), { slow: true }) })
    const gateway = GatewayCore.pipe(
      Layer.provide(fake.layer),
      Layer.provide(Timer.layerTest),
      Layer.provide(GatewayConfig.layer(testConfig({ t: { instances: ["a"] } })))
    )
    return Effect.gen(function*() {
      const call = yield* Effect.fork((yield* Dispatcher).call("t", "tools/list", undefined))
      yield* TestClock.adjust(Duration.millis(1999))
      expect(call.unsafePoll()).toBeNull()
      yield* TestClock.adjust(Duration.millis(1))
      expect((yield* Fiber.join(call)).result).toEqual({ slow: true })
      expect(fake.distribution("tools/list")).toEqual({ a: 1 })
    }).pipe(Effect.provide(gateway))
  })

  it.scoped("layerFake: every instance answers { instance: id } unless told otherwise", () =>
    Effect.gen(function*() {
      expect((yield* (yield* Dispatcher).call("t", "tools/list", undefined)).result).toEqual({ instance: "a" })
    }).pipe(Effect.provide(GatewayCore.pipe(
      Layer.provide(layerFake()),
      Layer.provide(Timer.layerTest),
      Layer.provide(GatewayConfig.layer(testConfig({ t: { instances: ["a"] } })))
    ))))

  it.scoped("Registry.layerMemory keeps registrations in memory, whatever registry file the config names", () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "gw-memory-")), "registry.json")
    return Effect.gen(function*() {
      const registry = yield* Registry
      yield* registry.register({ template: "t", spec: { id: "b", transport: "http", endpoint: "http://127.0.0.1:1/" } })
      expect(Array.from(registry.template("t")!.instances.keys())).toEqual(["a", "b"])
      expect(fs.existsSync(file)).toBe(false)
    }).pipe(Effect.provide(Registry.layerMemory.pipe(Layer.provide(GatewayConfig.layer(testConfig({ t: { instances: ["a"] } }, { registryFile: file }))))))
  })
})
