import { Context, Duration, Effect, Layer, Runtime } from "effect"
import type { Redis } from "ioredis"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { redactUrl } from "../domain/redact.js"

/**
 * Whether a command failed for want of an answer within the bound (ioredis's `commandTimeout`).
 * The one place src/ reads an error's text: ioredis 6 rejects a timed-out command with a plain
 * `new Error("Command timed out")` (Command.js), no class or code to tell it by. Compared whole,
 * so another error that mentions a timeout is not taken for it. (Its timeout during a server's
 * maintenance has a class, told by its name: ioredis is loaded only with a Redis configured.)
 */
export const isRedisTimeout = (e: unknown) =>
  e instanceof Error && (e.message === IOREDIS_COMMAND_TIMEOUT || e.name === "CommandTimeoutDuringMaintenanceError")
const IOREDIS_COMMAND_TIMEOUT = "Command timed out"

/** How the gateway stands with the Redis its replicas share. */
export type FleetStatus = "off" | "ok" | "slow" | "down"

export interface FleetRedisShape {
  /**
   * `off`: no Redis configured (a gateway on its own); `down`: configured and not reachable now;
   * `slow`: connected, but a command did not answer within the bound (a paused or overloaded
   * Redis): nothing waits for it until a check answers in time again.
   */
  readonly status: () => FleetStatus
  /** A command did not answer within `timeout` (the caller went on without it): stop waiting for Redis until it answers again. */
  readonly reportSlow: () => void
  /** How often replicas check Redis (answering? the registry intact?). */
  readonly checkInterval: Duration.Duration
  /** The key prefix every key of this fleet has (`mcpgw:`). */
  readonly prefix: string
  /** Commands; fail at once while Redis is down (nothing is queued: a caller decides what that means). */
  readonly command: Redis | undefined
  /** Calls `handler` with every message published on `channel` (by any replica, this one included). */
  readonly subscribe: (channel: string, handler: (message: string) => void) => void
  /** Calls `handler` each time the connection is (re)established: the time to catch up. */
  readonly onReady: (handler: () => void) => void
  /** A description for logs (the URL without its password). */
  readonly describe: string
}

/**
 * The Redis connection replicas share (`registry.store: "redis"`): one connection for commands,
 * one for subscriptions, reconnecting on their own (every 0.2 s to 2 s). While it is down,
 * commands fail at once instead of queueing, so a registration is refused with a 503 rather than
 * left hanging. A Redis that is connected but does not answer (paused, overloaded, failing over
 * behind one address) is the harder case: every command times out after `registry.timeout_ms`,
 * and the first that does turns the status to `slow`, in which nothing is sent to Redis but one
 * check every `registry.check_interval_ms`, until a check answers in time. So the hot path waits
 * for Redis at most the bound, and only until one request found it slow. Without a Redis in the
 * config, `off`.
 */
const OFF: FleetRedisShape = {
  status: () => "off",
  reportSlow: () => undefined,
  checkInterval: Duration.seconds(2),
  prefix: "",
  command: undefined,
  subscribe: () => undefined,
  onReady: () => undefined,
  describe: ""
}

export class FleetRedis extends Context.Tag("mcp-gateway/FleetRedis")<FleetRedis, FleetRedisShape>() {
  /** No Redis: a gateway on its own (and what tools that only read a config use). */
  static readonly off: Layer.Layer<FleetRedis> = Layer.succeed(FleetRedis, OFF)

  static readonly layer: Layer.Layer<FleetRedis, never, GatewayConfig> = Layer.scoped(
    FleetRedis,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const settings = config.gateway.registryStore
      if (settings?.kind !== "redis") return OFF
      const describe = redactUrl(settings.url)
      const timeoutMs = Duration.toMillis(settings.timeout)
      const options = {
        lazyConnect: true,
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
        connectTimeout: 2_000,
        commandTimeout: timeoutMs,
        retryStrategy: (times: number) => Math.min(200 * times, 2_000)
      }
      // Loaded only by a gateway that has a Redis: one on its own never pays for the client.
      const { Redis } = yield* Effect.promise(() => import("ioredis"))
      const command = new Redis(settings.url, options)
      // (No command timeout: a subscription waits for messages as long as it lives.)
      const subscriber = new Redis(settings.url, { ...options, commandTimeout: undefined, enableOfflineQueue: true, maxRetriesPerRequest: null })
      let status = "down" as FleetStatus
      const readyHandlers: Array<() => void> = []
      const runtime = yield* Effect.runtime<never>()
      const log = (effect: Effect.Effect<void>) => void Runtime.runFork(runtime)(effect)
      let wasReady = false
      command.on("ready", () => {
        status = "ok"
        log(Effect.logInfo(wasReady ? `Redis ${describe} is back` : `connected to Redis ${describe}`))
        wasReady = true
        for (const handler of readyHandlers) handler()
      })
      command.on("end", () => void (status = "down"))
      command.on("close", () => {
        if (status === "ok" || status === "slow") log(Effect.logError(`lost Redis ${describe}: serving from the last known registry; registrations are refused until it is back`))
        status = "down"
      })
      const reportSlow = () => {
        if (status !== "ok") return
        status = "slow"
        log(Effect.logWarning(
          `Redis ${describe} did not answer within ${timeoutMs} ms: rate limits are each replica's own, registrations are refused ` +
            `and the last known registry serves, until it answers again (checked every ${Duration.format(settings.checkInterval)})`
        ))
      }
      // The check: a PING within the bound. A slow Redis is found here even without traffic,
      // and a slow one that answers again is taken back.
      // (Another failure, a connection closing, is the connection's events' to report.)
      const check = Effect.promise(() =>
        command.ping().then(() => "answered" as const, (e: unknown) => isRedisTimeout(e) ? "timed out" as const : "failed" as const)
      ).pipe(
        Effect.flatMap((result) => {
          if (result === "timed out") return Effect.sync(reportSlow)
          if (result === "failed" || status !== "slow") return Effect.void
          status = "ok"
          return Effect.logInfo(`Redis ${describe} answers again: rate limits and registrations are the fleet's again`)
        })
      )
      yield* Effect.forkScoped(
        Effect.sleep(settings.checkInterval).pipe(
          Effect.zipRight(Effect.suspend(() => (status === "ok" || status === "slow" ? check : Effect.void))),
          Effect.forever
        )
      )
      // The last error of the connection, for the line that says Redis cannot be used (a refused
      // password, WRONGPASS, is not a network problem). Never the password, should one be echoed.
      const secret = (() => {
        try {
          return decodeURIComponent(new URL(settings.url).password)
        } catch {
          return ""
        }
      })()
      let lastError: string | undefined
      command.on("error", (e: unknown) => {
        const message = (e instanceof Error ? e.message : String(e)).slice(0, 200)
        lastError = secret === "" ? message : message.split(secret).join("***")
      })
      subscriber.on("error", () => undefined)
      const handlers = new Map<string, Array<(message: string) => void>>()
      subscriber.on("message", (channel: string, message: string) => {
        for (const handler of handlers.get(channel) ?? []) handler(message)
      })
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          command.disconnect()
          subscriber.disconnect()
        })
      )
      // Connected before anything reads the registry, if it can be: a replica that starts while Redis is down starts anyway.
      yield* Effect.promise(() => command.connect().catch(() => undefined))
      if (status !== "ok") {
        yield* Effect.logError(`cannot reach Redis ${describe}${lastError === undefined ? "" : ` (${lastError})`}: starting from the config alone; registrations wait for it`)
      }
      void subscriber.connect().catch(() => undefined)
      return {
        status: () => status,
        reportSlow,
        checkInterval: settings.checkInterval,
        prefix: settings.prefix,
        command,
        describe,
        subscribe: (channel, handler) => {
          const list = handlers.get(channel) ?? []
          list.push(handler)
          handlers.set(channel, list)
          if (list.length === 1) void subscriber.subscribe(channel).catch(() => undefined)
        },
        onReady: (handler) => void readyHandlers.push(handler)
      } satisfies FleetRedisShape
    })
  )
}
