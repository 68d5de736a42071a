import { Clock, Deferred, Duration, Effect, FiberId, Random, Runtime } from "effect"
import { isObject } from "../domain/JsonRpc.js"
import { backoffDelayMs } from "../domain/LoadBalancer.js"
import { initializeParams, SUPPORTED_PROTOCOL_VERSIONS } from "../domain/Protocol.js"
import type { Connection, ConnectionEnv, RequestNow, RequestOptions } from "./Connection.js"
import type { ChannelListener, Multiplexer } from "./Multiplexer.js"
import type { ChannelStatus } from "./Supervision.js"
import { RequestTimeout, TransportError, type TransportErrorReason } from "./TransportError.js"

/** How long a fresh channel may take to answer `initialize` before it is stopped. */
const INITIALIZE_TIMEOUT = Duration.seconds(30)

/** How a shared-channel transport is opened for one client session of the MCP endpoint. */
export interface SessionChannelOptions {
  /**
   * A channel (process, SSE session) for one client session: initialized with the client's own
   * `initialize` params (so the server sees its capabilities), and the server's requests go to
   * that client.
   */
  readonly forSession?: { readonly initializeParams: Record<string, unknown> } | undefined
}

/** A channel with its server's answer to `initialize` once the handshake is done. */
export type Channel = Multiplexer & {
  initializeResult: Record<string, unknown>
  readonly pid?: number | undefined
  readonly stderrTail?: ReadonlyArray<string>
}

/** A shared channel's Connection, which also tells how its channel is doing. */
export type SharedChannelConnection = Connection & { readonly status: () => ChannelStatus }

/**
 * A Connection over one channel that every caller shares (a stdio process, a legacy SSE
 * stream): started on first use, initialized once by the gateway, then used directly by every
 * request. When the channel ends, requests in flight fail at once; a supervised channel (an
 * instance's shared one) is restarted after a backoff, and marked `failed` once it restarted
 * more than `maxRestarts` times within the window (tried again when a window has passed). While
 * it is down, requests fail at once as never sent, so the Dispatcher sends them elsewhere.
 */
export const makeSharedChannelConnection = <C extends Channel>(
  env: ConnectionEnv,
  options: {
    readonly instanceId: string
    /** Starts a channel; it resolves once the channel can take messages. */
    readonly start: (listeners: ReadonlySet<ChannelListener>) => Effect.Effect<C, TransportError>
    /** What to say in `initialize`: the gateway's own by default, a client's for a channel of its own. */
    readonly initializeParams?: Record<string, unknown> | undefined
    /** Stops a channel (and whatever it runs). */
    readonly stop: (channel: C) => Promise<void>
  }
): SharedChannelConnection => {
  const { log, scope, supervision } = env
  const { instanceId } = options
  const runFork = Runtime.runFork(env.runtime)
  let starting: Deferred.Deferred<C, TransportError> | undefined
  let currentChannel: C | undefined
  /** The channel once initialized: requests go straight to it, without awaiting anything. */
  let initialized: C | undefined
  /** Who hears the notifications that belong to no request (every client session on the channel). */
  const listeners = new Set<ChannelListener>()
  let closed = false
  /** Channels being stopped after a failed initialize: closing the connection waits for them too. */
  const stopping = new Set<Promise<void>>()
  let generation = 0
  /** When the channel ended lately (within the restart window), oldest first. */
  const exits: Array<number> = []
  let failedAt = 0
  /** After a failed channel's second chance starts, until a window has passed: one more end and it is failed again. */
  let probationUntil = 0
  let status: ChannelStatus = { state: "idle", pid: undefined, restarts: 0, lastExit: undefined, nextRestartAt: undefined, stderrTail: [] }

  const setStatus = (patch: Partial<ChannelStatus>) => {
    status = { ...status, ...patch }
    supervision?.report(status)
  }

  const notReady = (reason: TransportErrorReason, message: string) => new TransportError({ instanceId, reason, message, reachedBackend: false })

  const initialize = (channel: C) =>
    Effect.gen(function*() {
      const response = yield* channel.call("initialize", options.initializeParams ?? initializeParams()).pipe(
        Effect.mapError((e) => notReady(e._tag === "TransportError" ? e.reason : "timeout", `initialize failed: ${e.message}`)),
        Effect.timeoutFail({
          duration: INITIALIZE_TIMEOUT,
          onTimeout: () => notReady("timeout", `no answer to initialize within ${Duration.format(INITIALIZE_TIMEOUT)}`)
        })
      )
      if ("error" in response) return yield* notReady("protocol", `initialize failed: ${response.error.message}`)
      const version = isObject(response.result) ? response.result.protocolVersion : undefined
      if (typeof version !== "string" || !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
        return yield* notReady("protocol", `server answered initialize with unsupported protocol version ${JSON.stringify(version)}`)
      }
      channel.initializeResult = response.result as Record<string, unknown>
      channel.notify({ jsonrpc: "2.0", method: "notifications/initialized" })
      return channel
    })

  /** Starts a channel and initializes it; concurrent callers share the one start. */
  const startChannel = (): Effect.Effect<C, TransportError> => {
    const deferred = Deferred.unsafeMake<C, TransportError>(FiberId.none)
    starting = deferred
    setStatus({ state: "starting", nextRestartAt: undefined })
    return options.start(listeners).pipe(
      Effect.tapError((e) => Effect.sync(() => ended(undefined, e.message))),
      Effect.flatMap((channel) => {
        currentChannel = channel
        setStatus({ pid: channel.pid })
        channel.onClose((reason) => ended(channel, reason))
        return initialize(channel).pipe(
          Effect.tapError((e) =>
            Effect.sync(() => {
              log.warn(e.message)
              // Ended for this reason (the channel's own close, which follows, is then ignored).
              ended(channel, e.message)
              const stopped: Promise<void> = options.stop(channel).finally(() => stopping.delete(stopped))
              stopping.add(stopped)
            })
          )
        )
      }),
      Effect.tap((channel) =>
        Effect.sync(() => {
          if (starting === deferred) starting = undefined
          initialized = channel
          generation++
          // (lastExit stays: why it last ended is worth knowing after the restart too.)
          setStatus({ state: "running" })
        })
      ),
      Effect.intoDeferred(deferred),
      // Not in a caller's fiber: a caller that gives up must not leave a half-open channel.
      Effect.forkIn(scope),
      Effect.zipRight(Deferred.await(deferred))
    )
  }

  /** The channel ended, or could not be started (`channel` undefined). */
  const ended = (channel: C | undefined, reason: string) => {
    if (closed || (channel !== undefined && channel !== currentChannel)) return
    starting = undefined
    currentChannel = undefined
    initialized = undefined
    const stderrTail = channel?.stderrTail === undefined ? status.stderrTail : [...channel.stderrTail]
    if (supervision === undefined) return setStatus({ state: "stopped", pid: undefined, lastExit: reason, stderrTail })
    runFork(scheduleRestart(reason, stderrTail))
  }

  const scheduleRestart = (reason: string, stderrTail: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const policy = supervision!.policy()
      const now = yield* Clock.currentTimeMillis
      while (exits.length > 0 && now - exits[0]! >= Duration.toMillis(policy.window)) exits.shift()
      exits.push(now)
      if (exits.length > policy.maxRestarts || now < probationUntil) {
        failedAt = now
        setStatus({ state: "failed", pid: undefined, lastExit: reason, restarts: exits.length - 1, nextRestartAt: undefined, stderrTail })
        log.warn(
          `${reason}; it ended ${exits.length} times within ${Duration.format(policy.window)}, more than max_restarts ` +
            `(${policy.maxRestarts}): not restarting it` + (stderrTail.length > 0 ? `; its last stderr line: ${stderrTail.at(-1)}` : "")
        )
        return
      }
      const delay = backoffDelayMs(policy.backoff, exits.length, yield* Random.next)
      setStatus({ state: "restarting", pid: undefined, lastExit: reason, restarts: exits.length, nextRestartAt: now + delay, stderrTail })
      log.info(`${reason}; restart ${exits.length} of at most ${policy.maxRestarts} in ${Math.round(delay)} ms`)
      yield* Effect.sleep(Duration.millis(delay)).pipe(
        Effect.zipRight(Effect.suspend(() => closed || status.state !== "restarting" ? Effect.void : Effect.ignore(startChannel()))),
        Effect.forkIn(scope)
      )
    })

  /** The open, initialized channel: the current one, or a new one if there is none (and none is due to be restarted). */
  const ready: Effect.Effect<C, TransportError> = Effect.suspend(() => {
    if (closed) return Effect.fail(notReady("closed", "instance was removed"))
    if (initialized !== undefined && !initialized.closed) return Effect.succeed(initialized)
    if (starting !== undefined) return Deferred.await(starting)
    if (status.state === "restarting") {
      return Effect.fail(notReady("unavailable", `${status.lastExit ?? "the channel ended"}; restarting`))
    }
    if (status.state === "failed") {
      return Effect.flatMap(Clock.currentTimeMillis, (now) => {
        if (now - failedAt < Duration.toMillis(supervision!.policy().window)) {
          return Effect.fail(notReady("unavailable", `failed: ${status.lastExit ?? "it kept ending"}, restarted too often (max_restarts)`))
        }
        // A window has passed: one more chance (ending again within a window makes it failed at once).
        exits.length = 0
        probationUntil = now + Duration.toMillis(supervision!.policy().window)
        return startChannel()
      })
    }
    return startChannel()
  })

  const request = (method: string, params: Record<string, unknown> | undefined, requestOptions?: RequestOptions) => {
    const deadline = requestOptions?.deadline
    const onNotification = requestOptions?.onNotification
    if (initialized !== undefined && !initialized.closed) return initialized.call(method, params, deadline, onNotification)
    // Starting up: the wait counts against the caller's time too. If the channel cannot be
    // opened, this request never reached the server (so a tools/call may fail over).
    const waitReady = deadline === undefined ? ready : ready.pipe(
      Effect.timeoutFail({
        duration: Duration.millis(Math.max(1, deadline.remainingMs())),
        onTimeout: () => new RequestTimeout({ instanceId, timeoutMs: deadline.timeoutMs })
      })
    )
    return Effect.flatMap(waitReady, (channel) => channel.call(method, params, deadline, onNotification))
  }

  /** The running channel's request path without an Effect step (none while it starts or restarts). */
  const requestNow: RequestNow = (method, params, requestOptions, done) =>
    initialized !== undefined && !initialized.closed
      ? initialized.callNow(method, params, requestOptions?.deadline, requestOptions?.onNotification, done)
      : undefined

  const listen: Connection["listen"] = (onMessage) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const listener: ChannelListener = (message, reply) => onMessage(message, reply)
        listeners.add(listener)
        return listener
      }),
      (listener) => Effect.sync(() => listeners.delete(listener))
    )

  const close = Effect.suspend(() => {
    closed = true
    const channel = currentChannel
    starting = undefined
    currentChannel = undefined
    initialized = undefined
    setStatus({ state: "stopped", pid: undefined, nextRestartAt: undefined })
    return Effect.promise(() => Promise.all([...stopping, ...(channel === undefined ? [] : [options.stop(channel)])]))
  })

  const notify: Connection["notify"] = (method, params) =>
    Effect.sync(() => initialized?.notify(params === undefined ? { jsonrpc: "2.0", method } : { jsonrpc: "2.0", method, params }))

  return {
    request,
    requestNow,
    initialize: Effect.map(ready, (channel) => channel.initializeResult),
    listen,
    notify,
    close,
    generation: () => generation,
    alive: () => initialized !== undefined && !initialized.closed,
    status: () => status
  }
}
