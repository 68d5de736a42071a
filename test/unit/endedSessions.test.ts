import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, TestClock } from "effect"
import { GatewayConfig } from "../../src/config/GatewayConfig.js"
import { EndedSessions } from "../../src/fleet/EndedSessions.js"
import { FleetRedis } from "../../src/fleet/FleetRedis.js"
import { testConfig } from "../support/testConfig.js"

const ended = (max: number) => {
  const config = testConfig({})
  return EndedSessions.layer.pipe(
    Layer.provide(FleetRedis.off),
    Layer.provide(GatewayConfig.layer({ ...config, gateway: { ...config.gateway, maxEndedSessions: max } }))
  )
}

describe("ended session ids", () => {
  it.scoped("are remembered until their seal expires, then forgotten (an expired id is refused anyway)", () =>
    Effect.gen(function*() {
      const store = yield* EndedSessions
      yield* TestClock.setTime(1_000_000)
      store.end("s2.k.a", 1_060_000)
      expect(store.isEnded("s2.k.a", 1_060_000)).toBe(true)
      expect(store.isEnded("s2.k.b", 1_060_000)).toBe(false)
      yield* TestClock.adjust("61 seconds")
      // Past its expiry the id is refused for that reason alone.
      expect(store.isEnded("s2.k.a", 1_060_000)).toBe(true)
      expect(store.isEnded("s2.k.c", 2_000_000)).toBe(false)
    }).pipe(Effect.provide(ended(100))))

  it.scoped("max_ended_sessions bounds them: full, the first to expire are forgotten, and every id expiring no later is refused", () =>
    Effect.gen(function*() {
      const store = yield* EndedSessions
      yield* TestClock.setTime(1_000_000)
      // 250 ids ended, expiring one second apart.
      for (let i = 0; i < 250; i++) store.end(`s2.k.${i}`, 2_000_000 + i * 1000)
      expect(store.size()).toBeLessThanOrEqual(100)
      // Every ended id is still refused, remembered or not.
      for (let i = 0; i < 250; i++) expect(store.isEnded(`s2.k.${i}`, 2_000_000 + i * 1000)).toBe(true)
      // A live id that expires before what was forgotten is refused too (its client initializes again);
      // one that expires after the last ended one is served.
      expect(store.isEnded("s2.k.live-early", 2_000_500)).toBe(true)
      expect(store.isEnded("s2.k.live-late", 2_000_000 + 251 * 1000)).toBe(false)
    }).pipe(Effect.provide(ended(100))))
})
