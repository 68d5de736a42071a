import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, TestClock } from "effect"
import { defineInstance } from "../../src/domain/Instance.js"
import { InstanceState } from "../../src/instance/InstanceState.js"
import type { ConnectionLog } from "../../src/transport/Connection.js"
import { type ChannelListener, Multiplexer } from "../../src/transport/Multiplexer.js"
import { makeSharedChannelConnection } from "../../src/transport/SharedChannel.js"
import type { ChannelStatus } from "../../src/transport/Supervision.js"

const quiet: ConnectionLog = { debug: () => {}, info: () => {}, warn: () => {} }

/** A channel that answers `initialize` and every request at once, and can be made to die. */
class FakeChannel extends Multiplexer {
  initializeResult: Record<string, unknown> = {}
  readonly stderrTail = ["Error: API_KEY is not set"]
  constructor(listeners: ReadonlySet<ChannelListener>, readonly pid: number) {
    super("x", quiet, listeners)
  }
  protected send(text: string): boolean {
    const message = JSON.parse(text)
    if (message.id !== undefined) {
      const result = message.method === "initialize" ? { protocolVersion: "2025-11-25", capabilities: {}, serverInfo: { name: "f", version: "1" } } : {}
      queueMicrotask(() => this.receive({ jsonrpc: "2.0", id: message.id, result }))
    }
    return true
  }
}

const supervised = (maxRestarts: number) =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const runtime = yield* Effect.runtime<never>()
    const reports: Array<ChannelStatus> = []
    const channels: Array<FakeChannel> = []
    const connection = makeSharedChannelConnection(
      {
        log: quiet,
        scope,
        runtime,
        supervision: {
          policy: () => ({
            maxRestarts,
            window: Duration.seconds(60),
            backoff: { base: Duration.seconds(1), max: Duration.seconds(30), jitter: 0 }
          }),
          report: (status) => void reports.push(status)
        }
      },
      {
        instanceId: "x",
        start: (listeners) =>
          Effect.sync(() => {
            const channel = new FakeChannel(listeners, 100 + channels.length)
            channels.push(channel)
            return channel
          }),
        stop: async (channel) => channel.failAll("stopped")
      }
    )
    const crash = (code = 1) => channels.at(-1)!.failAll(`process exited (code ${code})`)
    return { connection, reports, channels, crash }
  })

const ping = (connection: { request: (m: string, p: undefined) => Effect.Effect<unknown, { message: string; reachedBackend?: boolean }> }) =>
  Effect.exit(connection.request("ping", undefined))

describe("shared channel supervision", () => {
  it.scoped("a channel that ends is restarted with backoff; meanwhile requests fail at once as never sent", () =>
    Effect.gen(function*() {
      const { channels, connection, crash, reports } = yield* supervised(5)
      expect(Exit.isSuccess(yield* ping(connection))).toBe(true)
      expect(connection.status()).toMatchObject({ state: "running", pid: 100, restarts: 0 })
      expect(connection.generation()).toBe(1)

      crash()
      yield* TestClock.adjust(Duration.millis(1))
      expect(connection.status()).toMatchObject({ state: "restarting", restarts: 1, lastExit: "process exited (code 1)", nextRestartAt: 1000 })
      expect(connection.status().stderrTail).toEqual(["Error: API_KEY is not set"])
      const refused = yield* ping(connection)
      expect(Exit.isFailure(refused) && (refused.cause as any).error).toMatchObject({ reachedBackend: false })

      yield* TestClock.adjust(Duration.millis(1000))
      expect(channels).toHaveLength(2)
      // Running again; why it last ended stays visible.
      expect(connection.status()).toMatchObject({ state: "running", pid: 101, lastExit: "process exited (code 1)" })
      expect(connection.generation()).toBe(2)
      expect(Exit.isSuccess(yield* ping(connection))).toBe(true)
      expect(reports.map((r) => r.state)).toEqual(["starting", "starting", "running", "restarting", "starting", "starting", "running"])
    }))

  it.scoped("each restart waits longer; more than max_restarts within the window marks it failed, tried again after the window", () =>
    Effect.gen(function*() {
      const { channels, connection, crash } = yield* supervised(3)
      yield* ping(connection)
      const delays: Array<number> = []
      for (let i = 0; i < 3; i++) {
        const before = yield* TestClock.currentTimeMillis
        crash()
        yield* TestClock.adjust(Duration.millis(1))
        delays.push(connection.status().nextRestartAt! - before)
        yield* TestClock.adjust(Duration.millis(delays.at(-1)!))
        expect(connection.status().state).toBe("running")
      }
      expect(delays).toEqual([1000, 2000, 4000])
      crash(2)
      yield* TestClock.adjust(Duration.millis(1))
      expect(connection.status()).toMatchObject({ state: "failed", restarts: 3, lastExit: "process exited (code 2)" })
      yield* TestClock.adjust(Duration.seconds(30))
      expect(channels).toHaveLength(4) // no restart while failed
      const refused = yield* ping(connection)
      expect(Exit.isFailure(refused) && (refused.cause as any).error.message).toContain("restarted too often")
      // A window later, the next use gets one more chance...
      yield* TestClock.adjust(Duration.seconds(30))
      expect(Exit.isSuccess(yield* ping(connection))).toBe(true)
      expect(connection.status().state).toBe("running")
      // ...one: ending again within the window makes it failed at once, without another round of restarts.
      crash(3)
      yield* TestClock.adjust(Duration.millis(1))
      expect(connection.status()).toMatchObject({ state: "failed", lastExit: "process exited (code 3)" })
      expect(channels).toHaveLength(5)
    }))

  it.scoped("an instance whose process ended stays unhealthy until a new process answers initialize", () =>
    Effect.gen(function*() {
      const { connection, crash, reports } = yield* supervised(5)
      const instance = new InstanceState(defineInstance("t", "x", { transport: "stdio", command: ["x"] }, "config"), 0)
      const seen: Array<string> = []
      const follow = () => {
        while (reports.length > 0) instance.channelChanged(reports.shift()!, 0)
        seen.push(`${instance.channel?.state}:${instance.status}`)
      }
      yield* ping(connection)
      follow()
      crash()
      yield* TestClock.adjust(Duration.millis(1))
      follow()
      // The restart: starting (not yet initialized), then running.
      yield* TestClock.adjust(Duration.millis(999))
      follow()
      expect(seen).toEqual(["running:healthy", "restarting:unhealthy", "running:healthy"])
      // In between, while the new process was starting, the instance was never healthy.
      crash()
      yield* TestClock.adjust(Duration.millis(1))
      follow()
      instance.channelChanged({ ...connection.status(), state: "starting" }, 0)
      expect(instance.status).toBe("unhealthy")
      expect(instance.selectable(0)).toBe(false)
    }))

  it.scoped("a channel closed on purpose is not restarted", () =>
    Effect.gen(function*() {
      const { channels, connection } = yield* supervised(5)
      yield* ping(connection)
      yield* connection.close
      yield* TestClock.adjust(Duration.seconds(60))
      expect(channels).toHaveLength(1)
      expect(connection.status().state).toBe("stopped")
    }))
})
