import { Deferred, Duration, Effect, Exit, type Fiber, FiberId, Runtime, type Scope } from "effect"
import type { InstanceDefinition } from "../domain/Instance.js"
import { isNotification, isObject, isRequest, isResponse, type JsonRpcResponse } from "../domain/JsonRpc.js"
import { canonicalJson } from "../domain/canonicalJson.js"
import { parseServerMessage, tooDeepMessage } from "../domain/jsonText.js"
import { resolveHeaders } from "../domain/Secret.js"
import { collectToolHeaders, isInputRequired, type ToolHeaders } from "../domain/ModernProtocol.js"
import { initializeParams, MODERN_PROTOCOL_VERSIONS, SUPPORTED_PROTOCOL_VERSIONS } from "../domain/Protocol.js"
import type { Connection, ConnectionEnv, ConnectionLog, RequestDeadline, RequestDone, RequestOptions } from "./Connection.js"
import {
  asLegacyResponse,
  classifyProbe,
  envelopeOf,
  initializeResultOf,
  listenFilterOf,
  refusedAsModernOnly,
  routingHeaders,
  untagged,
  withEnvelope
} from "./modernBackend.js"
import { acquireLean } from "./acquireLean.js"
import { type AcquiredPool, Http1Pools } from "./Http1Pools.js"
import { flatString, type Http1Error, type Http1Exchange, type Http1Handler, type Http1Head, Http1HeaderError, type Http1Pool } from "./Http1Client.js"
import { answerServerRequest } from "./serverRequests.js"
import { MAX_EVENT_LENGTH, makeSseParser } from "./sse.js"
import { NEVER_SENT_ERRORS, RequestTimeout, serialize, TransportError } from "./TransportError.js"

type HttpInstance = Extract<InstanceDefinition, { transport: "http" }>

const INITIALIZE_TIMEOUT = Duration.seconds(30)

/** The largest JSON answer the gateway reads (16 Mi characters); a larger one fails the request. */
const MAX_RESPONSE_LENGTH = MAX_EVENT_LENGTH

/**
 * Statuses by which a server refuses the message itself (malformed, too large, wrong type,
 * headers too large: a mirrored argument of the 2026-07-28 revision can make them so):
 * the client's mistake, not a sign of the instance's health.
 */
const CLIENT_FAULT_STATUSES: ReadonlySet<number> = new Set([400, 413, 415, 422, 431])

/** Which revision an instance speaks, remembered across its connections (see Transport.ts). */
export interface EraMemory {
  readonly get: () => "legacy" | "modern" | undefined
  readonly set: (era: "legacy" | "modern") => void
}

type Session = LegacySession | ModernSession

interface LegacySession {
  readonly era: "legacy"
  /** Absent for a stateless server that issues none. */
  readonly id: string | undefined
  readonly protocolVersion: string
  /** The server's answer to `initialize`. */
  readonly initializeResult: Record<string, unknown>
}

/**
 * A server of the 2026-07-28 revision has no session: what stands for one here is the version
 * both speak, the envelope every request carries (the client the gateway speaks for), and the
 * server's discover answer (also shown as an `initialize` result, which the gateway reads).
 */
interface ModernSession {
  readonly era: "modern"
  readonly id: undefined
  readonly protocolVersion: string
  readonly initializeResult: Record<string, unknown>
  readonly discover: Record<string, unknown>
  readonly envelope: Record<string, unknown>
}

/** How long a backend may take to answer the `server/discover` probe before it is taken for an old one. */
const PROBE_TIMEOUT = Duration.seconds(10)

const NO_TOOL_HEADERS: ToolHeaders = new Map()
const NO_RESOURCES: ReadonlySet<string> = new Set()

/** Rounds of input a modern server may ask for within one request of an old client (as the SDK's clients allow). */
const MAX_INPUT_ROUNDS = 10

/** An old-style `initialize` was refused with 400 / -32022 naming a modern version: the server is modern-only. */
class ModernOnly {
  readonly _tag = "ModernOnly"
}

/** The server no longer knows our session: initialize again and resend. */
class SessionGone {
  readonly _tag = "SessionGone"
}

/** Headers of an answer, as Http1Client gives them (names lower-cased). */
type AnswerHeaders = Http1Head["headers"]

/** Handlers for an answer whose body nobody reads (a notification's 202, a DELETE): only its end matters. */
const discardAnswer = (onDone: () => void, onError: (e: Http1Error) => void = onDone): Http1Handler => ({
  onHead: () => {},
  onData: () => {},
  onEnd: onDone,
  onError
})

/** An answer to a POST: the response and the answer's headers. */
type Posted = { readonly response: JsonRpcResponse; readonly headers: AnswerHeaders }

type PostFailure = TransportError | SessionGone | RequestTimeout

/** Where an instance is reached, worked out once per instance and shared by its connections. */
interface Target {
  readonly url: URL
  readonly path: string
  /** The instance's own headers, secrets read from the environment once. */
  readonly headers: Record<string, string>
}
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
 * A server's answer to `initialize`, one object for every session that got the same answer
 * from the instance (its capabilities, its instructions: often kilobytes, and the same for
 * thousands of sessions). Never changed once made (a session only reads it).
 */
const results = new WeakMap<HttpInstance, Map<string, Record<string, unknown>>>()
const MAX_SHARED_RESULTS = 16
const sharedResult = (instance: HttpInstance, result: Record<string, unknown>): Record<string, unknown> => {
  let known = results.get(instance)
  if (known === undefined) results.set(instance, known = new Map())
  const key = canonicalJson(result)
  const shared = known.get(key)
  if (shared !== undefined) return shared
  if (known.size >= MAX_SHARED_RESULTS) known.clear()
  known.set(key, result)
  return result
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
  // Modern servers only (see ModernSession): what the revision moved out of the session.
  /** The level an old client set with logging/setLevel, sent in every envelope (the revision's way). */
  private logLevel: string | undefined = undefined
  /** Resources an old client subscribed to: the standing listen stream asks for their updates. */
  private subscribedResources: Set<string> | undefined = undefined
  /** Reopens the standing listen stream with the current filter (set while one runs); `ready` once the server acknowledged it. */
  private refilter: ((ready: () => void) => void) | undefined = undefined
  /** Tool arguments the server mirrors in headers; loaded before the first tools/call, reloaded when stale. */
  private toolHeaders: Map<string, Array<{ readonly path: ReadonlyArray<string>; readonly header: string }>> | undefined = undefined
  private toolHeadersFresh = false

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

  private error(message: string, reachedBackend: boolean) {
    return new TransportError({ instanceId: this.instance.id, message, reachedBackend })
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
      params = withEnvelope(params, relay?.client === undefined ? s.envelope : envelopeOf(s.protocolVersion, relay.client), this.logLevel)
      const own = relay?.clientParamHeaders
      routing = routingHeaders(method, params, own === undefined ? this.toolHeaders ?? NO_TOOL_HEADERS : NO_TOOL_HEADERS)
      if (own !== undefined) for (const name in own) routing[name] = own[name]!
    }
    const body = serialize(this.instance.id, params === undefined ? { jsonrpc: "2.0", id, method } : { jsonrpc: "2.0", id, method, params })
    if (typeof body !== "string") {
      resume(Exit.fail(body))
      return () => {}
    }
    let settled = false
    let gotResponse = false
    const done = (outcome: Exit.Exit<Posted, PostFailure>) => {
      if (!settled) {
        settled = true
        deadline?.disarm()
        resume(outcome)
      }
    }
    let status = 0
    let type = ""
    let answerHeaders: AnswerHeaders = {}
    /** The SSE parser, when the answer is a stream; otherwise the JSON body collects in `text`. */
    let feed: ((chunk: string) => void) | undefined
    let text = ""
    const deliver = (message: unknown) => {
      if (isResponse(message) && message.id === id) {
        done(Exit.succeed({ response: message, headers: answerHeaders }))
      } else if (isRequest(message)) {
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
    const handler: Http1Handler = {
      onHead: (head) => {
        gotResponse = true
        status = head.status
        answerHeaders = head.headers
        type = head.headers["content-type"] ?? ""
        if (status >= 200 && status < 300 && type.startsWith("text/event-stream")) {
          feed = makeSseParser((event) => {
            if (event.event !== "message" || event.data === "") return
            const parsed = parseServerMessage(event.data)
            if (parsed.ok) return deliver(parsed.value)
            if (parsed.reason === "not JSON") return this.log.debug(`ignoring an SSE event that is not JSON`)
            // (Whatever it was, this request's answer cannot come through it.)
            done(Exit.fail(this.error(tooDeepMessage, true)))
            exchange.abort()
          }, { onOversized: () => this.log.warn(`dropped an SSE event larger than ${MAX_EVENT_LENGTH} characters`) })
        }
      },
      onData: (chunk) => {
        if (feed !== undefined) return feed(chunk)
        text += chunk
        if (text.length > MAX_RESPONSE_LENGTH) {
          done(Exit.fail(this.error(`the answer is larger than ${MAX_RESPONSE_LENGTH} characters`, true)))
          exchange.abort()
        }
      },
      onEnd: () => {
        if (feed !== undefined) return done(Exit.fail(this.error("the SSE stream ended without a response", true)))
        const parsed = text === "" ? undefined : parseServerMessage(text)
        if (parsed?.ok === false && parsed.reason === "too deep") return done(Exit.fail(this.error(tooDeepMessage, true)))
        const message = parsed?.ok === true ? parsed.value : undefined
        if (s?.id !== undefined && (status === 404 || (status === 400 && /session/i.test(text)))) {
          return done(Exit.fail(new SessionGone()))
        }
        if (isResponse(message) && (message.id === id || (status >= 400 && message.id === null))) {
          // A JSON-RPC answer, even on an error status, is the server's word: pass it on.
          if (message.id === id) return done(Exit.succeed({ response: message, headers: answerHeaders }))
        }
        if (status >= 200 && status < 300) {
          return done(Exit.fail(this.error(`expected a JSON-RPC response, got HTTP ${status} ${type || "without a body"}`, true)))
        }
        done(Exit.fail(new TransportError({
          instanceId: this.instance.id,
          message: `HTTP ${status}${text ? `: ${text.slice(0, 200)}` : ""}`,
          reachedBackend: true,
          clientFault: CLIENT_FAULT_STATUSES.has(status)
        })))
      },
      onError: (e) => {
        if (gotResponse) {
          return done(Exit.fail(this.error(`${feed !== undefined ? "SSE stream" : "response"} failed: ${e.message}`, true)))
        }
        done(Exit.fail(this.error(`${e.code}: ${e.message}`, e.answered || !NEVER_SENT_ERRORS.has(e.code))))
      }
    }
    let exchange: Http1Exchange
    try {
      exchange = this.requestTo("POST", this.headersFor(s, relay?.headers, routing), body, handler)
    } catch (e) {
      if (!(e instanceof Http1HeaderError)) throw e
      // A header no HTTP message may carry (a forwarded value with a line break): the request's own fault.
      resume(Exit.fail(new TransportError({ instanceId: this.instance.id, message: `cannot send the request: ${e.message}`, reachedBackend: false, clientFault: true })))
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

  /** The old handshake: `initialize`, then `notifications/initialized`; the session id the server issues, if any. */
  private initializeLegacy(params: Record<string, unknown>) {
    const self = this
    return Effect.gen(function*() {
      const { headers, response } = yield* self.post("initialize", params, undefined, undefined).pipe(
        Effect.timeoutFail({
          duration: INITIALIZE_TIMEOUT,
          onTimeout: () => self.error(`no answer to initialize within ${Duration.format(INITIALIZE_TIMEOUT)}`, true)
        }),
        Effect.catchTags({
          SessionGone: () => Effect.fail(self.error("initialize was refused", true)),
          RequestTimeout: (e) => Effect.fail(self.error(e.message, true))
        })
      )
      if (refusedAsModernOnly(response)) return yield* Effect.fail(new ModernOnly())
      if ("error" in response) return yield* self.error(`initialize failed: ${response.error.message}`, true)
      const version = isObject(response.result) ? response.result.protocolVersion : undefined
      if (typeof version !== "string" || !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
        return yield* self.error(`server answered initialize with unsupported protocol version ${JSON.stringify(version)}`, true)
      }
      // (Copied: as it comes, it shares the memory of the answer's whole head, for as long as the session lives.)
      const sessionHeader = headers["mcp-session-id"] === undefined ? undefined : flatString(headers["mcp-session-id"])
      const opened: Session = {
        era: "legacy",
        id: sessionHeader,
        protocolVersion: version,
        initializeResult: sharedResult(self.instance, response.result as Record<string, unknown>)
      }
      self.postOneWay({ jsonrpc: "2.0", method: "notifications/initialized" }, opened)
      self.log.info(`session ${opened.id ?? "(stateless)"} with ${self.instance.endpoint}`)
      return opened
    })
  }

  /**
   * The revision's own opening: `server/discover`. A modern server answers with what it
   * supports; an old one with an error of some kind (unknown method, no session), which makes
   * it old. Only a server that cannot be reached fails here.
   */
  private probeModern(params: Record<string, unknown>): Effect.Effect<ModernSession | { readonly why: string }, TransportError> {
    const version = MODERN_PROTOCOL_VERSIONS[0]!
    const provisional: ModernSession = {
      era: "modern",
      id: undefined,
      protocolVersion: version,
      initializeResult: {},
      discover: {},
      envelope: envelopeOf(version, params)
    }
    return this.post("server/discover", undefined, provisional, undefined).pipe(
      Effect.timeoutFail({ duration: PROBE_TIMEOUT, onTimeout: () => this.error(`no answer to server/discover within ${Duration.format(PROBE_TIMEOUT)}`, true) }),
      Effect.map(({ response }) => classifyProbe(response)),
      Effect.catchAll((e) =>
        e._tag === "TransportError" && !e.reachedBackend
          ? Effect.fail(e)
          : Effect.succeed({ _tag: "Legacy" as const, why: e._tag === "TransportError" ? e.message : "no answer" })
      ),
      Effect.map((outcome) => {
        if (outcome._tag === "Legacy") {
          // A silent server is worth saying at info: a modern one that hung is now spoken to the old way.
          if (/within/.test(outcome.why)) this.log.info(`${outcome.why}; trying the old protocol (initialize)`)
          else this.log.debug(`not a ${version} server (${outcome.why}); initializing`)
          return { why: outcome.why }
        }
        const opened: ModernSession = {
          ...provisional,
          protocolVersion: outcome.version,
          envelope: envelopeOf(outcome.version, params),
          discover: outcome.discover,
          initializeResult: initializeResultOf(outcome.version, outcome.discover, this.instance.id)
        }
        return opened
      })
    )
  }

  /**
   * Opens the "session": the revision the instance spoke last time is tried first (a new
   * instance is probed with `server/discover`, and initialized the old way if it is not modern;
   * an old one that now refuses `initialize` as modern-only is probed again).
   */
  private get handshake(): Effect.Effect<Session, TransportError> {
    const self = this
    return Effect.gen(function*() {
      const params = self.clientInitialize ?? initializeParams()
      const remembered = self.options.era?.get()
      let opened: Session | undefined
      let why: string | undefined
      if (remembered !== "legacy") {
        const probed = yield* self.probeModern(params)
        if ("era" in probed) opened = probed
        else why = probed.why
      }
      if (opened === undefined) {
        const unusable = (reason: string) =>
          self.error(`the server refuses initialize as modern-only, but its answer to server/discover is not usable: ${reason}`, true)
        opened = yield* self.initializeLegacy(params).pipe(
          Effect.catchTag("ModernOnly", () =>
            why !== undefined
              ? Effect.fail(unusable(why))
              : Effect.flatMap(self.probeModern(params), (probed) => ("era" in probed ? Effect.succeed(probed) : Effect.fail(unusable(probed.why)))))
        )
      }
      if (remembered !== opened.era) {
        self.options.era?.set(opened.era)
        if (opened.era === "modern") self.log.info(`${self.instance.endpoint} speaks MCP ${opened.protocolVersion} (no session; server/discover)`)
      }
      return opened
    })
  }

  /** The current session, or a new one; concurrent callers share one initialize. */
  private get ensureSession(): Effect.Effect<Session, TransportError> {
    return Effect.suspend(() => {
      if (this.closed) return Effect.fail(this.error("instance was removed", false))
      if (this.established !== undefined) return Effect.succeed(this.established)
      if (this.opening !== undefined) return Deferred.await(this.opening)
      const deferred = Deferred.unsafeMake<Session, TransportError>(FiberId.none)
      this.opening = deferred
      return this.handshake.pipe(
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
        return Effect.fail(new TransportError({ instanceId: this.instance.id, message: "the server ended the session", reachedBackend: true, sessionEnded: true }))
      }
      if (this.established === lost) {
        this.log.info(`session ${lost.id} expired; initializing again`)
        this.established = undefined
        this.opening = undefined
      }
      return Effect.flatMap(this.withinDeadline(this.ensureSession, relay?.deadline), (fresh) =>
        this.post(method, params, fresh, relay?.deadline, relay).pipe(
          Effect.catchTag("SessionGone", () => Effect.fail(this.error("the server rejected a fresh session", true)))
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
      return current.era === "legacy" ? this.send(current, method, params, options) : this.modernFor(current, method, params, options)
    }
    // A session that cannot be opened means this request was never sent (a tools/call may fail over).
    const session = Effect.mapError(this.ensureSession, (e) => new TransportError({ instanceId: e.instanceId, message: e.message, reachedBackend: false }))
    return Effect.flatMap(this.withinDeadline(session, options?.deadline), (s) =>
      s.era === "legacy" ? this.send(s, method, params, options) : this.modernFor(s, method, params, options))
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

  /** A request to a modern server, its answer shaped for the caller's generation. */
  private modernFor(s: ModernSession, method: string, params: Record<string, unknown> | undefined, options: RequestOptions | undefined) {
    const sent = options?.onCacheHints === undefined ? this.modernRequest(s, method, params, options) : Effect.tap(this.modernRequest(s, method, params, options), (r) => this.reportCacheHints(r, options.onCacheHints!))
    return options?.passInputRequired === true ? sent : Effect.map(sent, asLegacyResponse)
  }

  private answered(result: Record<string, unknown>): JsonRpcResponse {
    return ({ jsonrpc: "2.0", id: 0, result })
  }

  /** A complete answer's caching hints, as the server gave them. */
  private reportCacheHints(response: JsonRpcResponse, report: NonNullable<RequestOptions["onCacheHints"]>) {
    const result = "result" in response ? response.result : undefined
    if (typeof result !== "object" || result === null) return
    const { cacheScope, resultType, ttlMs } = result as Record<string, unknown>
    if ((resultType === undefined || resultType === "complete") && typeof ttlMs === "number" && ttlMs > 0) {
      report({ ttlMs, cacheScope: cacheScope === "public" ? "public" : "private" })
    }
  }

  private refused(code: number, message: string): JsonRpcResponse {
    return ({ jsonrpc: "2.0", id: 0, error: { code, message } })
  }

  /**
   * A request of an old-generation caller (an old client's session, the REST face, a health
   * probe) to a modern server, and a modern client's request passed on. What the revision
   * removed is done the revision's way: `ping` is a `server/discover`, `logging/setLevel` a
   * level in every later envelope, resource subscriptions a filter of the standing listen stream.
   * A server that asks for input gets it from whoever can answer (see fulfil).
   */
  private modernRequest(
    s: ModernSession,
    method: string,
    params: Record<string, unknown> | undefined,
    options: RequestOptions | undefined
  ): Effect.Effect<JsonRpcResponse, TransportError | RequestTimeout> {
    switch (method) {
      case "ping":
        return Effect.map(this.send(s, "server/discover", undefined, options), (r) => ("error" in r ? r : this.answered({})))
      case "logging/setLevel":
        return Effect.sync(() => {
          this.logLevel = typeof params?.level === "string" ? params.level : undefined
          return this.answered({})
        })
      case "resources/subscribe":
      case "resources/unsubscribe":
        return Effect.sync((): JsonRpcResponse | undefined => {
          const resources = isObject(s.initializeResult.capabilities) ? s.initializeResult.capabilities.resources : undefined
          if (!isObject(resources) || resources.subscribe !== true) return this.refused(-32601, "Method not found")
          if (typeof params?.uri !== "string") return this.refused(-32602, "Invalid params: uri is required")
          if (method === "resources/subscribe") (this.subscribedResources ??= new Set()).add(params.uri)
          else this.subscribedResources?.delete(params.uri)
          return undefined
        }).pipe(Effect.flatMap((refusal) =>
          refusal !== undefined
            ? Effect.succeed(refusal)
            // Answered once the stream that carries the resource's updates is acknowledged
            // (or could not be opened): an update published right after is not lost.
            : Effect.async<JsonRpcResponse>((resume) => {
              const done = () => resume(Effect.succeed(this.answered({})))
              if (this.refilter === undefined) done()
              else this.refilter(done)
            }).pipe(Effect.timeout("5 seconds"), Effect.orElseSucceed(() => this.answered({})))
        ))
      case "tools/call": {
        // A modern client's own headers go as they are: the server checks them, not the gateway.
        if (options?.clientParamHeaders !== undefined) {
          return Effect.flatMap(this.send(s, method, params, options), (r) => this.fulfil(s, method, params, r, options, 1))
        }
        // Its arguments may be mirrored in headers, which the server checks: know which first.
        const call = this.send(s, method, params, options).pipe(
          Effect.flatMap((r) =>
            "error" in r && r.error.code === -32020
              // The tool changed since the list was read (SEP-2243): read it again, once.
              ? Effect.zipRight(this.loadToolHeaders(s, options), this.send(s, method, params, options))
              : Effect.succeed(r)
          )
        )
        const ready = this.toolHeadersFresh ? call : Effect.zipRight(this.loadToolHeaders(s, options), call)
        return Effect.flatMap(ready, (r) => this.fulfil(s, method, params, r, options, 1))
      }
      default:
        return Effect.flatMap(this.send(s, method, params, options), (r) => {
          if (method === "tools/list" && "result" in r && isObject(r.result)) collectToolHeaders(r.result.tools, (this.toolHeaders ??= new Map()))
          return this.fulfil(s, method, params, r, options, 1)
        })
    }
  }

  /** Reads the server's whole tool list for the arguments it mirrors in headers (a failure leaves what is known). */
  private loadToolHeaders(s: ModernSession, options: RequestOptions | undefined) {
    const self = this
    return Effect.gen(function*() {
      let cursor: unknown = undefined
      for (let page = 0; page < 100; page++) {
        const r = yield* self.send(s, "tools/list", cursor === undefined ? undefined : { cursor }, { deadline: options?.deadline, headers: options?.headers })
        if (!("result" in r) || !isObject(r.result)) return
        collectToolHeaders(r.result.tools, (self.toolHeaders ??= new Map()))
        cursor = r.result.nextCursor
        if (typeof cursor !== "string") break
      }
      self.toolHeadersFresh = true
    }).pipe(Effect.catchAll(() => Effect.void))
  }

  /**
   * A modern server's `input_required` result, for a caller that takes server requests (an
   * old client's session): each input request is asked as the old server→client request it
   * stands for, and the request is sent again with the answers (`inputResponses`) and the
   * server's `requestState`, untouched, until the server completes it. A modern client's own
   * request (`passInputRequired`), and a caller that cannot answer, get the result as it is.
   */
  private fulfil(
    s: ModernSession,
    method: string,
    params: Record<string, unknown> | undefined,
    response: JsonRpcResponse,
    options: RequestOptions | undefined,
    round: number
  ): Effect.Effect<JsonRpcResponse, TransportError | RequestTimeout> {
    const ask = options?.onServerRequest
    if (!("result" in response) || !isInputRequired(response.result) || ask === undefined || options?.passInputRequired === true) {
      return Effect.succeed(response)
    }
    if (round > MAX_INPUT_ROUNDS) return Effect.succeed(this.refused(-32603, `the server asked for input more than ${MAX_INPUT_ROUNDS} times`))
    const result = response.result
    const requests = isObject(result.inputRequests) ? Object.entries(result.inputRequests) : []
    const answers = Effect.forEach(
      requests,
      ([key, request]) =>
        Effect.async<readonly [string, JsonRpcResponse]>((resume) => {
          const r = isObject(request) ? request : {}
          ask(
            { jsonrpc: "2.0", id: key, method: String(r.method), ...(isObject(r.params) ? { params: r.params } : {}) },
            (answer) => resume(Effect.succeed([key, answer] as const))
          )
        }),
      { concurrency: "unbounded" }
    )
    return Effect.flatMap(this.withinDeadline(answers, options?.deadline), (pairs) => {
      const failed = pairs.find(([, answer]) => "error" in answer)
      if (failed !== undefined) return Effect.succeed(failed[1])
      const inputResponses: Record<string, unknown> = {}
      for (const [key, answer] of pairs) inputResponses[key] = "result" in answer ? answer.result : {}
      const retry: Record<string, unknown> = { ...params, inputResponses }
      if (typeof result.requestState === "string") retry.requestState = result.requestState
      else delete retry.requestState
      return Effect.flatMap(this.send(s, method, retry, options), (next) => this.fulfil(s, method, params, next, options, round + 1))
    })
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
      if (s.value.era === "modern") return yield* self.listenModern(s.value, onMessage)
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

  /**
   * A modern server's standing stream: `subscriptions/listen` for every list it says changes and
   * the resources subscribed through this connection, its events passed on without the
   * subscription tag. Reopened when it ends (the server closed it, or the connection broke) and
   * when the subscribed resources change: the new stream replaces the old once acknowledged, so
   * nothing falls between them.
   */
  private listenModern(
    s: ModernSession,
    onMessage: Parameters<Connection["listen"]>[0]
  ): Effect.Effect<void, never, Scope.Scope> {
    let stopped = false
    let current: Http1Exchange | undefined
    let reconnect: ReturnType<typeof setTimeout> | undefined
    const later = (exchange: Http1Exchange) => {
      if (stopped || current !== exchange) return
      if (reconnect !== undefined) clearTimeout(reconnect)
      // raw timer: a second before the socket of a dropped stream opens again (real time).
      reconnect = setTimeout(() => open(), 1000)
    }
    const open = (ready?: () => void) => {
      let readied = false
      const isReady = () => {
        if (!readied) {
          readied = true
          ready?.()
        }
      }
      if (stopped || this.closed) return isReady()
      const previous = current
      const filter = listenFilterOf(s.initializeResult.capabilities, this.subscribedResources ?? NO_RESOURCES)
      if (Object.keys(filter).length === 0) {
        current = undefined
        previous?.abort()
        return isReady()
      }
      const params = withEnvelope({ notifications: filter }, s.envelope, this.logLevel)
      const body = JSON.stringify({ jsonrpc: "2.0", id: `gateway-listen-${this.nextId++}`, method: "subscriptions/listen", params })
      let feed: ((chunk: string) => void) | undefined
      let refused = false
      const exchange: Http1Exchange = this.requestTo("POST", this.headersFor(s, undefined, routingHeaders("subscriptions/listen", params, this.toolHeaders ?? NO_TOOL_HEADERS)), body, {
        onHead: (head) => {
          if (head.status !== 200 || !(head.headers["content-type"] ?? "").startsWith("text/event-stream")) {
            refused = true
            this.log.debug(`subscriptions/listen refused: HTTP ${head.status}`)
            return isReady()
          }
          feed = makeSseParser((event) => {
            if (event.event !== "message" || event.data === "" || current !== exchange) return
            const parsed = parseServerMessage(event.data)
            if (!parsed.ok) return this.log.debug(`ignoring a listen-stream event: ${parsed.reason}`)
            const message = parsed.value
            if (!isNotification(message)) return
            if (message.method === "notifications/subscriptions/acknowledged") {
              // The new stream carries everything now: the one it replaces can go.
              if (previous !== undefined && previous !== exchange) previous.abort()
              return isReady()
            }
            if (message.method === "notifications/tools/list_changed") this.toolHeadersFresh = false
            const params = untagged(message.params)
            onMessage(params === undefined ? { jsonrpc: "2.0", method: message.method } : { jsonrpc: "2.0", method: message.method, params })
          })
        },
        onData: (chunk) => feed?.(chunk),
        // A stream the server ends, or one whose connection breaks: listen again.
        onEnd: () => {
          isReady()
          if (!refused) later(exchange)
        },
        onError: () => {
          isReady()
          if (!refused) later(exchange)
        }
      })
      current = exchange
    }
    return acquireLean(
      () => {
        this.refilter = open
        open()
      },
      () =>
        Effect.sync(() => {
          stopped = true
          if (this.refilter === open) this.refilter = undefined
          if (reconnect !== undefined) clearTimeout(reconnect)
          current?.abort()
        })
    ).pipe(Effect.asVoid)
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
