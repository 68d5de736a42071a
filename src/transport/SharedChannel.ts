import { Deferred, Effect, FiberId, type Scope } from "effect"
import { isObject } from "../domain/JsonRpc.js"
import { initializeParams, SUPPORTED_PROTOCOL_VERSIONS } from "../domain/Protocol.js"
import type { Connection, ConnectionLog, RequestOptions } from "./Connection.js"
import type { ChannelListener, Multiplexer } from "./Multiplexer.js"
import { RequestTimeout, TransportError } from "./TransportError.js"

/** How long a fresh channel may take to answer `initialize` before it is stopped. */
const INITIALIZE_TIMEOUT_MS = 30_000

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
export type Channel = Multiplexer & { initializeResult: Record<string, unknown> }

/**
 * A Connection over one channel that every caller shares (a stdio process, a legacy SSE
 * stream): started on first use, initialized once by the gateway, then used directly by every
 * request; when it dies, requests in flight fail and the next use starts a new one.
 */
export const makeSharedChannelConnection = <C extends Channel>(options: {
  readonly instanceId: string
  readonly log: ConnectionLog
  /** Where initialization runs (not in a caller's fiber: a caller that gives up must not leave a half-open channel). */
  readonly scope: Scope.Scope
  /** Starts a channel; it resolves once the channel can take messages. */
  readonly start: (listeners: ReadonlySet<ChannelListener>) => Effect.Effect<C, TransportError>
  /** What to say in `initialize`: the gateway's own by default, a client's for a channel of its own. */
  readonly initializeParams?: Record<string, unknown> | undefined
  /** Stops a channel (and whatever it runs). */
  readonly stop: (channel: C) => Promise<void>
}): Connection => {
  const { instanceId, log, scope } = options
  let current: Deferred.Deferred<C, TransportError> | undefined
  let currentChannel: C | undefined
  /** The channel once initialized: requests go straight to it, without awaiting anything. */
  let initialized: C | undefined
  /** Who hears the notifications that belong to no request (every client session on the channel). */
  const listeners = new Set<ChannelListener>()
  let closed = false
  let generation = 0

  const notReady = (message: string) => new TransportError({ instanceId, message, reachedBackend: false })

  const initialize = (channel: C) =>
    Effect.gen(function*() {
      currentChannel = channel
      const response = yield* channel.call("initialize", options.initializeParams ?? initializeParams(), INITIALIZE_TIMEOUT_MS).pipe(
        Effect.catchTag("RequestTimeout", () => notReady(`no answer to initialize within ${INITIALIZE_TIMEOUT_MS} ms`))
      )
      if ("error" in response) return yield* notReady(`initialize failed: ${response.error.message}`)
      const version = isObject(response.result) ? response.result.protocolVersion : undefined
      if (typeof version !== "string" || !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
        return yield* notReady(`server answered initialize with unsupported protocol version ${JSON.stringify(version)}`)
      }
      channel.initializeResult = response.result as Record<string, unknown>
      channel.notify({ jsonrpc: "2.0", method: "notifications/initialized" })
      initialized = channel
      generation++
      return channel
    })

  /** The open, initialized channel: the current one, or a new one if there is none or it died. */
  const ready: Effect.Effect<C, TransportError> = Effect.suspend(() => {
    if (closed) return Effect.fail(notReady("instance was removed"))
    if (current !== undefined && (currentChannel === undefined || !currentChannel.closed)) return Deferred.await(current)
    const deferred = Deferred.unsafeMake<C, TransportError>(FiberId.none)
    current = deferred
    currentChannel = undefined
    return options.start(listeners).pipe(
      Effect.flatMap((channel) =>
        initialize(channel).pipe(
          Effect.tapError((e) =>
            Effect.sync(() => {
              log.warn(e.message)
              void options.stop(channel)
            })
          )
        )
      ),
      Effect.tapError(() => Effect.sync(() => current === deferred && (current = undefined))),
      Effect.intoDeferred(deferred),
      Effect.forkIn(scope),
      Effect.zipRight(Deferred.await(deferred))
    )
  })

  const request = (method: string, params: Record<string, unknown> | undefined, requestOptions?: RequestOptions) => {
    const timeoutMs = requestOptions?.timeoutMs
    const onNotification = requestOptions?.onNotification
    if (initialized !== undefined && !initialized.closed) return initialized.call(method, params, timeoutMs, onNotification)
    // Starting up: the wait counts against the caller's time too. If the channel cannot be
    // opened, this request never reached the server (so a tools/call may fail over).
    const started = Date.now()
    const starting = Effect.mapError(ready, (e) => new TransportError({ instanceId, message: e.message, reachedBackend: false }))
    const waitReady = timeoutMs === undefined ? starting : starting.pipe(
      Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => new RequestTimeout({ instanceId, timeoutMs }) })
    )
    return Effect.flatMap(waitReady, (channel) =>
      channel.call(method, params, timeoutMs === undefined ? undefined : Math.max(1, timeoutMs - (Date.now() - started)), onNotification))
  }

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
    current = undefined
    currentChannel = undefined
    initialized = undefined
    return channel === undefined ? Effect.void : Effect.promise(() => options.stop(channel))
  })

  const notify: Connection["notify"] = (method, params) =>
    Effect.sync(() => initialized?.notify(params === undefined ? { jsonrpc: "2.0", method } : { jsonrpc: "2.0", method, params }))

  return { request, initialize: Effect.map(ready, (channel) => channel.initializeResult), listen, notify, close, generation: () => generation, alive: () => initialized !== undefined && !initialized.closed }
}
