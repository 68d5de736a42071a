import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, TestClock } from "effect"
import { ClientSessions } from "../../src/sessions/ClientSessions.js"
import { Registry } from "../../src/registry/Registry.js"
import { testConfig } from "../support/testConfig.js"
import { testGateway } from "../support/testGateway.js"

/** What desktop clients declare: under `session_process: "auto"`, a process of its own. */
const capable = { protocolVersion: "2025-11-25", capabilities: { sampling: {}, roots: {} }, clientInfo: { name: "t", version: "1" } }

const config = testConfig({
  t: {
    instances: [{ id: "a", transport: "stdio", command: ["server"] }],
    load_balancer: { max_sessions_per_instance: 2, session_process_idle_timeout: 60, warm_processes: 0, health_check_interval: 3600 }
  }
})

describe("sessions with a process of their own", () => {
  it.scoped("idle ones end after session_process_idle_timeout; one in use stays; the slots are given back", () => {
    const { layer } = testGateway(config)
    return Effect.gen(function*() {
      const sessions = yield* ClientSessions
      const registry = yield* Registry
      const idle = (yield* sessions.open("t", capable, "me")).session
      const streaming = (yield* sessions.open("t", capable, "me")).session
      // A standing stream open: the client is there.
      streaming.onClose.add(() => {})
      expect(registry.template("t")!.instances.get("a")!.sessionProcesses).toBe(2)
      yield* TestClock.adjust(Duration.seconds(59))
      expect(sessions.size()).toBe(2)
      yield* TestClock.adjust(Duration.seconds(12))
      expect(sessions.resolve(idle.id, "t", "me")).toMatchObject({ status: 404 })
      expect(sessions.resolve(streaming.id, "t", "me")).toBe(streaming)
      expect(registry.template("t")!.instances.get("a")!.sessionProcesses).toBe(1)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("a newcomer ends the least recently used idle session when every slot is taken; with every slot in use, it is refused", () => {
    const { layer } = testGateway(config)
    return Effect.gen(function*() {
      const sessions = yield* ClientSessions
      const registry = yield* Registry
      const first = (yield* sessions.open("t", capable, "me")).session
      yield* TestClock.adjust(Duration.seconds(6))
      const second = (yield* sessions.open("t", capable, "me")).session
      yield* TestClock.adjust(Duration.seconds(6))
      // Both idle for the grace at least: the least recently used (the first) makes room.
      const third = (yield* sessions.open("t", capable, "me")).session
      expect(sessions.resolve(first.id, "t", "me")).toMatchObject({ status: 404 })
      expect(sessions.resolve(second.id, "t", "me")).toBe(second)
      // (resolve counts as use: the second is now more recent than the third.)
      third.onClose.add(() => {})
      second.onClose.add(() => {})
      const refused = yield* Effect.exit(sessions.open("t", capable, "me"))
      expect(Exit.isFailure(refused) && refused.cause._tag === "Fail" ? refused.cause.error : undefined).toMatchObject({
        _tag: "SessionLimitReached",
        scope: "instance",
        template: "t",
        limit: 2
      })
      expect(registry.template("t")!.instances.get("a")!.saturated(yield* Clock.currentTimeMillis)).toBe(true)
      expect(registry.template("t")!.instances.get("a")!.sessionProcesses).toBe(2)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("a session used within the grace is not ended for room (its client is between two requests); one whose client dropped its stream is, at once", () => {
    const { layer } = testGateway(config)
    return Effect.gen(function*() {
      const sessions = yield* ClientSessions
      const fresh = (yield* sessions.open("t", capable, "me")).session
      const left = (yield* sessions.open("t", capable, "me")).session
      yield* TestClock.adjust(Duration.seconds(1))
      // Both idle for a second only: neither is ended, the newcomer is refused.
      const refused = yield* Effect.exit(sessions.open("t", capable, "me"))
      expect(Exit.isFailure(refused) && refused.cause._tag === "Fail" ? refused.cause.error : undefined).toMatchObject({ _tag: "SessionLimitReached" })
      expect(sessions.resolve(fresh.id, "t", "me")).toBe(fresh)
      // The other's client closed its standing stream and has not been back: it makes room at once.
      left.streamDroppedAt = left.lastSeen
      const newcomer = (yield* sessions.open("t", capable, "me")).session
      expect(sessions.resolve(left.id, "t", "me")).toMatchObject({ status: 404 })
      expect(sessions.resolve(fresh.id, "t", "me")).toBe(fresh)
      expect(sessions.resolve(newcomer.id, "t", "me")).toBe(newcomer)
    }).pipe(Effect.provide(layer))
  })
})
