import { Deferred, Duration, Effect, Exit, type Fiber, FiberId, Runtime, type Scope } from "effect"
import type { InstanceDefinition } from "../domain/Instance.js"
import { isNotification, isRequest } from "../domain/JsonRpc.js"
import { parseServerMessage } from "../domain/jsonText.js"
import type { ToolHeaders } from "../domain/ModernProtocol.js"
import { initializeParams } from "../domain/Protocol.js"
import { resolveHeaders } from "../domain/Secret.js"
import { acquireLean } from "./acquireLean.js"
import type { Connection, ConnectionEnv, ConnectionLog, RequestDeadline, RequestDone, RequestOptions } from "./Connection.js"
import type { Http1Pool } from "./Http1Client.js"
import type { Http1Exchange, Http1Handler } from "./Http1Exchange.js"
import { type AcquiredPool, Http1Pools } from "./Http1Pools.js"
import { Http1HeaderError } from "./http1RequestHead.js"
import { discardAnswer, type Posted, type PostFailure, readAnswer } from "./httpAnswer.js"
import { type EraMemory, openSession, type Session, type SessionOpener } from "./HttpSession.js"
import { envelopeOf, routingHeaders, withEnvelope } from "./modernBackend.js"
import { ModernServer } from "./ModernServer.js"
import { answerServerRequest } from "./serverRequests.js"
import { makeSseParser } from "./sse.js"
import { RequestTimeout, serialize, TransportError, type TransportErrorReason } from "./TransportError.js"

type HttpInstance = Extract<InstanceDefinition, { transport: "http" }>

const NO_TOOL_HEADERS: ToolHeaders = new Map()


/** Where an instance is reached, worked out once per instance and shared by its connections. */
interface Target {
  readonly url: URL
  readonly path: string
  /** The instance's own headers, secrets read from the environment once. */
  readonly headers: Record<string, string>
}
// Module-level but no gateway's state: keyed weakly by the instance definition (an object of one
// gateway's registry, replaced when the instance is), and what it keeps is derived from it alone.
const targets = new WeakMap<HttpInstance, Target>()
const targetOf = (instance: HttpInstance): Target => {
  let target = targets.get(instance)
  if (target === undefined) {
    const url = new URL(instance.endpoint)
    target = { url, path: `${url.pathname}${url.search}`, headers: resolveHeaders(instance.headers) }
    targets.set(instance, target)
  }
  return target
}

/**
 * MCP Streamable HTTP client for one instance: POSTs over a keep-alive pool, reads JSON or SSE
 * answers, initializes once and reuses the session id, and starts a new session when the
 * server has forgotten it (404, or 400 "session not found" as some servers answer).
 */
export class HttpConnection implements Connection {
  private readonly log: ConnectionLog
  private readonly scope: Scope.Scope
  private readonly url: URL
  // Keep-alive sockets to the instance's origin, shared with every other connection to it with the same credentials (Http1Pools.ts).
  private readonly pooled: AcquiredPool
  private readonly pool: Http1Pool
  private readonly path: string
  /** The session once established: requests use it directly, without awaiting anything. */
  private established: Session | undefined
  /** The initialize in progress, which concurrent callers await; none once established (an idle connection holds no Deferred). */
  private opening: Deferred.Deferred<Session, TransportError> | undefined = undefined
  private nextId = 1
  private closed = false
  /** `close` leaves the session open at the server (keepAtServer). */
  private kept = false
  /** The server forgot the session this connection was opened for (see renewLostSession). */
  private sessionLost = false
  private generationCount = 0

  /** What the connection keeps for a modern server (ModernServer.ts); made when first needed. */
  private modernServer: ModernServer | undefined = undefined

  // The instance's own headers, secrets read from the environment once.
  private readonly backendHeaders: Record<string, string>
  /**
   * What to say in `initialize` for a client (options.initializeParams), until the session is
   * open: a client's session never initializes again, so it is not kept after.
   */
  private clientInitialize: Record<string, unknown> | undefined

  constructor(
    private readonly instance: HttpInstance,
    private readonly env: ConnectionEnv,
    private readonly options: HttpConnectionOptions = {}
  ) {
    const { log, scope } = env
    this.log = log
    this.scope = scope
    const target = targetOf(this.instance)
    this.url = target.url
    this.pooled = (env.http1Pools ?? new Http1Pools()).acquire(this.url)
    this.pool = this.pooled.pool
    this.path = target.path
    this.established = this.options.resume === undefined
      ? undefined
      : { era: "legacy", id: this.options.resume.sessionId, protocolVersion: this.options.resume.protocolVersion, initializeResult: {} }
    this.backendHeaders = target.headers
    this.clientInitialize = this.options.initializeParams
  }

  private requestTo(method: string, headers: Record<string, string>, body: string | undefined, handler: Http1Handler): Http1Exchange {
    return this.pool.request(method, this.path, headers, body, handler)
  }

  private error(reason: TransportErrorReason, message: string, reachedBackend: boolean) {
    return new TransportError({ instanceId: this.instance.id, reason, message, reachedBackend })
  }

  // Copied key by key: object spreads of header records (keys like "x-request-id") take V8's
  // slow path, microseconds per request where this takes a tenth of one.
  private headersFor(
    s: Session | undefined,
    forwarded?: Readonly<Record<string, string>>,
    routing?: Readonly<Record<string, string>>
  ): Record<string, string> {
    const headers: Record<string, string> = {}
    if (forwarded !== undefined) for (const name in forwarded) headers[name] = forwarded[name]
    for (const name in this.backendHeaders) headers[name] = this.backendHeaders[name]
    headers["content-type"] = "application/json"
    headers.accept = "application/json, text/event-stream"
    if (s !== undefined) {
      headers["mcp-protocol-version"] = s.protocolVersion
      if (s.id !== undefined) headers["mcp-session-id"] = s.id
    }
    if (routing !== undefined) for (const name in routing) headers[name] = routing[name]
    return headers
  }

  /** Fire-and-forget POST of a message that has no answer (a notification, or our reply to a server request). */
  private postOneWay(message: unknown, s: Session | undefined) {
    const text = serialize(this.instance.id, message)
    if (typeof text !== "string") return this.log.debug(text.message)
    try {
      this.requestTo("POST", this.headersFor(s), text, discardAnswer(() => {}, (e) => this.log.debug(`one-way POST failed: ${e.message}`)))
    } catch (e) {
      this.log.debug(`one-way POST not sent: ${(e as Error).message}`)
    }
  }

  /**
   * POSTs one request and waits for its response, whether it comes as a JSON body or as an
   * SSE stream (notifications and server requests may come first).
   */
  private post(
    method: string,
    params: Record<string, unknown> | undefined,
    s: Session | undefined,
    deadline: RequestDeadline | undefined,
    relay?: RequestOptions
  ): Effect.Effect<Posted, PostFailure> {
    return Effect.async((resume) => {
      const cancel = this.postNow(method, params, s, deadline, relay, resume)
      return Effect.sync(cancel)
    })
  }

  /** `post` without an Effect step: `resume` is called once, unless the returned function cancelled first. */
  private postNow(
    method: string,
    params: Record<string, unknown> | undefined,
    s: Session | undefined,
    deadline: RequestDeadline | undefined,
    relay: RequestOptions | undefined,
    resume: (outcome: Exit.Exit<Posted, PostFailure>) => void
  ): (() => void) {
    const id = this.nextId++
    let routing: Record<string, string> | undefined
    if (s?.era === "modern") {
      // The revision's request: the envelope in _meta, the body mirrored in headers.
      const modern = this.modern
      params = withEnvelope(params, relay?.client === undefined ? s.envelope : envelopeOf(s.protocolVersion, relay.client), modern.logLevel)
      const own = relay?.clientParamHeaders
      routing = routingHeaders(method, params, own === undefined ? modern.toolHeaders ?? NO_TOOL_HEADERS : NO_TOOL_HEADERS)
      if (own !== undefined) for (const name in own) routing[name] = own[name]!
    }
    const body = serialize(this.instance.id, params === undefined ? { jsonrpc: "2.0", id, method } : { jsonrpc: "2.0", id, method, params })
    if (typeof body !== "string") {
      resume(Exit.fail(body))
      return () => {}
    }
    let settled = false
    const done = (outcome: Exit.Exit<Posted, PostFailure>) => {
      if (!settled) {
        settled = true
        deadline?.disarm()
        resume(outcome)
      }
    }
    /** What the answer carries besides the response: server requests, and notifications about this request. */
    const onMessage = (message: unknown) => {
      if (isRequest(message)) {
        if (relay?.onServerRequest !== undefined && message.method !== "ping") {
          relay.onServerRequest(message, (answer) => this.postOneWay({ ...answer, id: message.id }, s))
        } else {
          this.postOneWay(answerServerRequest(message), s)
        }
      } else if (isNotification(message)) {
        // On this POST's stream, so about this request (progress, logging while it runs).
        if (relay?.onNotification !== undefined) relay.onNotification(message)
        else this.log.debug(`notification ${message.method}`)
      }
    }
    const handler = readAnswer(this.instance.id, id, s?.id, this.log, onMessage, done, () => exchange.abort())
    let exchange: Http1Exchange
    try {
      exchange = this.requestTo("POST", this.headersFor(s, relay?.headers, routing), body, handler)
    } catch (e) {
      if (!(e instanceof Http1HeaderError)) throw e
      // A header no HTTP message may carry (a forwarded value with a line break): the request's own fault.
      resume(Exit.fail(this.error("rejected", `cannot send the request: ${e.message}`, false)))
      return () => {}
    }
    deadline?.arm(() => {
      // Closing the connection is how Streamable HTTP cancels a request.
      done(Exit.fail(new RequestTimeout({ instanceId: this.instance.id, timeoutMs: deadline.timeoutMs })))
      exchange.abort()
    })
    return () => {
      settled = true
      deadline?.disarm()
      exchange.abort()
    }
  }

  private get modern(): ModernServer {
    return this.modernServer ??= new ModernServer({
      log: this.log,
      send: (s, method, params, options) => this.send(s, method, params, options),
      withinDeadline: (effect, deadline) => this.withinDeadline(effect, deadline),
      stream: (s, routing, body, handler) => this.requestTo("POST", this.headersFor(s, undefined, routing), body, handler),
      closed: () => this.closed,
      nextId: () => this.nextId++
    })
  }

  /** What opening a session needs of this connection (HttpSession.ts). */
  private get opener(): SessionOpener {
    return {
      instance: this.instance,
      log: this.log,
      era: this.options.era,
      post: (method, params, s) => this.post(method, params, s, undefined),
      postOneWay: (message, s) => this.postOneWay(message, s)
    }
  }

  /** The current session, or a new one; concurrent callers share one initialize. */
  private get ensureSession(): Effect.Effect<Session, TransportError> {
    return Effect.suspend(() => {
      if (this.closed) return Effect.fail(this.error("closed", "instance was removed", false))
      if (this.established !== undefined) return Effect.succeed(this.established)
      if (this.opening !== undefined) return Deferred.await(this.opening)
      const deferred = Deferred.unsafeMake<Session, TransportError>(FiberId.none)
      this.opening = deferred
      return openSession(this.opener, this.clientInitialize ?? initializeParams()).pipe(
        Effect.tap((opened) =>
          Effect.sync(() => {
            if (this.opening === deferred) {
              this.opening = undefined
              this.established = opened
              this.generationCount++
              if (this.options.renewLostSession === false) this.clientInitialize = undefined
            }
          })
        ),
        // A failed initialize is not remembered: the next use tries again.
        Effect.tapError(() => Effect.sync(() => this.opening === deferred && (this.opening = undefined))),
        Effect.intoDeferred(deferred),
        Effect.forkIn(this.scope),
        Effect.zipRight(Deferred.await(deferred))
      )
    })
  }

  /** The server forgot session `lost`: open a new one (unless another request already did) and resend once. */
  private resend(
    lost: Session,
    method: string,
    params: Record<string, unknown> | undefined,
    relay: RequestOptions | undefined
  ) {
    return Effect.suspend(() => {
      if (this.options.renewLostSession === false) {
        // A client's own session: its state on the server is gone, and so is this connection.
        this.sessionLost = true
        // About the session, not the instance: it counts toward no health, outlier or breaker state.
        return Effect.fail(this.error("session_ended", "the server ended the session", true))
      }
      if (this.established === lost) {
        this.log.info(`session ${lost.id} expired; initializing again`)
        this.established = undefined
        this.opening = undefined
      }
      return Effect.flatMap(this.withinDeadline(this.ensureSession, relay?.deadline), (fresh) =>
        this.post(method, params, fresh, relay?.deadline, relay).pipe(
          Effect.catchTag("SessionGone", () => Effect.fail(this.error("protocol", "the server rejected a fresh session", true)))
        ))
    })
  }

  /** Opening a session counts against the request's time too. */
  private withinDeadline<A, E>(effect: Effect.Effect<A, E>, deadline: RequestDeadline | undefined) {
    return deadline === undefined ? effect : effect.pipe(
      Effect.timeoutFail({
        duration: Duration.millis(Math.max(1, deadline.remainingMs())),
        onTimeout: () => new RequestTimeout({ instanceId: this.instance.id, timeoutMs: deadline.timeoutMs })
      })
    )
  }

  /** One POST on a session, answered (a lost session renewed and the request sent again, where that is allowed). */
  private send(s: Session, method: string, params: Record<string, unknown> | undefined, options: RequestOptions | undefined) {
    return this.post(method, params, s, options?.deadline, options).pipe(
      Effect.catchTag("SessionGone", () => this.resend(s, method, params, options)),
      Effect.map((r) => r.response)
    )
  }

  request(method: string, params: Record<string, unknown> | undefined, options?: RequestOptions) {
    const current = this.established
    if (current !== undefined) {
      // The hot path: one POST on the open session.
      return current.era === "legacy" ? this.send(current, method, params, options) : this.modern.request(current, method, params, options)
    }
    // A session that cannot be opened means this request was never sent (a tools/call may fail over).
    const session = Effect.mapError(this.ensureSession, (e) => new TransportError({ instanceId: e.instanceId, reason: e.reason, message: e.message, reachedBackend: false }))
    return Effect.flatMap(this.withinDeadline(session, options?.deadline), (s) =>
      s.era === "legacy" ? this.send(s, method, params, options) : this.modern.request(s, method, params, options))
  }

  /**
   * The request path without an Effect step (see RequestNow in Connection.ts): on an open session
   * of the old revision, one POST. A server that forgot the session is answered as `request`
   * does (a new session and the request sent again), in a fiber: that is rare.
   */
  requestNow(
    method: string,
    params: Record<string, unknown> | undefined,
    options: RequestOptions | undefined,
    done: RequestDone
  ): (() => void) | undefined {
    const current = this.established
    if (current === undefined || current.era !== "legacy" || this.closed) return undefined
    let cancelled = false
    let renewal: Fiber.RuntimeFiber<Posted, TransportError | RequestTimeout> | undefined
    const cancelPost = this.postNow(method, params, current, options?.deadline, options, (outcome) => {
      if (Exit.isSuccess(outcome)) return done(Exit.succeed(outcome.value.response))
      const failure = outcome.cause._tag === "Fail" ? outcome.cause.error : undefined
      if (failure === undefined || failure._tag !== "SessionGone") return done(outcome as Exit.Exit<never, TransportError | RequestTimeout>)
      renewal = Runtime.runFork(this.env.runtime)(this.resend(current, method, params, options))
      renewal.addObserver((exit) => {
        if (!cancelled) done(Exit.map(exit, (r) => r.response))
      })
    })
    return () => {
      cancelled = true
      cancelPost()
      renewal?.unsafeInterruptAsFork(FiberId.none)
    }
  }

  get close() {
    return Effect.suspend(() => {
      this.closed = true
      const current = this.established
      this.opening = undefined
      this.established = undefined
      // (An initialize still in progress is interrupted with the connection's scope: nothing to end.)
      const endSession = current?.id === undefined || this.kept ? Effect.void : this.deleteSession(current)
      return endSession.pipe(Effect.ensuring(Effect.sync(this.pooled.release)))
    })
  }

  keepAtServer() {
    this.kept = true
  }

  /** DELETE the session so that the server can free it; best effort, bounded. */
  private deleteSession(s: Session) {
    return Effect.async<void>((resume) => {
      const exchange = this.requestTo("DELETE", this.headersFor(s), undefined, discardAnswer(() => resume(Effect.void)))
      return Effect.sync(() => exchange.abort())
    }).pipe(Effect.timeout("1 second"), Effect.ignore)
  }

  /**
   * The session's standing GET stream: what the server sends outside requests. Reconnects
   * (with Last-Event-ID, after the server's `retry:` or a second) when it drops, until the
   * scope closes; a server that offers no such stream (405) is left alone.
   */
  listen(onMessage: Parameters<Connection["listen"]>[0]): Effect.Effect<void, never, Scope.Scope> {
    const self = this
    return Effect.gen(function*() {
      const s = yield* Effect.option(self.ensureSession)
      if (s._tag === "None") return
      if (s.value.era === "modern") return yield* self.modern.listen(s.value, onMessage)
      if (s.value.id === undefined) return
      const session = s.value
      let stopped = false
      let current: Http1Exchange | undefined
      let lastEventId: string | undefined
      let retryMs = 1000
      let reconnect: ReturnType<typeof setTimeout> | undefined
      const later = (ms: number) => {
        if (stopped) return
        if (reconnect !== undefined) clearTimeout(reconnect)
        // raw timer: the server's `retry:` before a standing stream's socket opens again (real time).
        reconnect = setTimeout(open, ms)
      }
      const open = () => {
        if (stopped || self.closed || self.established !== session) return
        const headers = self.headersFor(session)
        headers.accept = "text/event-stream"
        if (lastEventId !== undefined) headers["last-event-id"] = lastEventId
        /** The stream's events, once the server answered with one; undefined while refused or not answered. */
        let feed: ((chunk: string) => void) | undefined
        let refused = false
        const exchange = self.requestTo("GET", headers, undefined, {
          onHead: (head) => {
            if (head.status !== 200 || !(head.headers["content-type"] ?? "").startsWith("text/event-stream")) {
              refused = true
              if (head.status !== 405) self.log.debug(`standing stream refused: HTTP ${head.status}`)
              // Not kept for the finalizer: an idle session would hold the request and its answer for ever.
              if (current === exchange) current = undefined
              return
            }
            feed = makeSseParser((event) => {
              if (event.id !== undefined) lastEventId = event.id
              if (event.retry !== undefined) retryMs = event.retry
              if (event.event !== "message" || event.data === "") return
              const parsed = parseServerMessage(event.data)
              if (!parsed.ok) return self.log.debug(`ignoring a standing-stream event: ${parsed.reason}`)
              const message = parsed.value
              if (isRequest(message)) onMessage(message, (answer) => self.postOneWay({ ...answer, id: message.id }, session))
              else if (isNotification(message)) onMessage(message)
            })
          },
          onData: (chunk) => feed?.(chunk),
          // Ended by the server, or broken: reconnect either way, once.
          onEnd: () => {
            if (!refused) later(retryMs)
          },
          onError: () => {
            if (refused) return
            later(feed === undefined ? Math.max(retryMs, 1000) : retryMs)
          }
        })
        current = exchange
      }
      yield* acquireLean(open, () =>
        Effect.sync(() => {
          stopped = true
          if (reconnect !== undefined) clearTimeout(reconnect)
          current?.abort()
        }))
    })
  }

  notify(method: string, params: Record<string, unknown> | undefined): Effect.Effect<void> {
    return Effect.sync(() => {
      // A modern server takes no notifications (cancelling is closing the request's stream).
      if (this.established !== undefined && this.established.era === "legacy") {
        this.postOneWay(params === undefined ? { jsonrpc: "2.0", method } : { jsonrpc: "2.0", method, params }, this.established)
      }
    })
  }

  discovered() {
    return this.established?.era === "modern" ? this.established.discover : undefined
  }

  sessionId() {
    return this.established?.era === "legacy" ? this.established.id : undefined
  }

  generation() {
    return this.generationCount
  }

  alive() {
    return !this.closed && !this.sessionLost
  }

  get initialize(): Effect.Effect<Record<string, unknown>, TransportError> {
    return Effect.map(this.ensureSession, (s) => s.initializeResult)
  }
}

/** A connection's settings (see HttpConnection). */
export interface HttpConnectionOptions {
    /** What to say in `initialize` (a client's own, for a session opened on its behalf); the gateway's by default. */
    readonly initializeParams?: Record<string, unknown> | undefined
    /**
     * When the server forgets the session: open a new one and resend (the gateway's own
     * sessions), or fail (a client's session: its state on the server is gone, so the client
     * must start anew).
     */
    readonly renewLostSession?: boolean | undefined
    /** Which revision the instance spoke last time: tried first, so an old server is not probed on every session. */
    readonly era?: EraMemory | undefined
    /** A session the server already has (another replica opened it): used as it is, not initialized again. */
    readonly resume?: { readonly sessionId: string; readonly protocolVersion: string } | undefined
  }

export const makeHttpConnection = (instance: HttpInstance, env: ConnectionEnv, options: HttpConnectionOptions = {}): Connection =>
  new HttpConnection(instance, env, options)
