import { Deferred, Duration, Effect, Exit, type Fiber, FiberId, Runtime, type Scope } from "effect"
import type { InstanceDefinition } from "../domain/Instance.js"
import { isNotification, isObject, isRequest, isResponse, type JsonRpcResponse } from "../domain/JsonRpc.js"
import { resolveHeaders } from "../domain/Secret.js"
import { collectToolHeaders, isInputRequired, type ToolHeaders } from "../domain/ModernProtocol.js"
import { initializeParams, MODERN_PROTOCOL_VERSIONS, SUPPORTED_PROTOCOL_VERSIONS } from "../domain/Protocol.js"
import type { Connection, ConnectionEnv, RequestDeadline, RequestNow, RequestOptions } from "./Connection.js"
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
import { acquirePool, type Http1Error, type Http1Exchange, type Http1Handler, type Http1Head, Http1HeaderError } from "./Http1Client.js"
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

/**
 * MCP Streamable HTTP client for one instance: POSTs over a keep-alive pool, reads JSON or SSE
 * answers, initializes once and reuses the session id, and starts a new session when the
 * server has forgotten it (404, or 400 "session not found" as some servers answer).
 */
export const makeHttpConnection = (
  instance: HttpInstance,
  env: ConnectionEnv,
  options: {
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
  } = {}
): Connection => {
  const { log, scope } = env
  const url = new URL(instance.endpoint)
  // Keep-alive sockets to the instance's origin, shared with every other connection to it (Http1Client.ts).
  const pooled = acquirePool(url)
  const pool = pooled.pool
  const path = `${url.pathname}${url.search}`
  const requestTo = (method: string, headers: Record<string, string>, body: string | undefined, handler: Http1Handler): Http1Exchange =>
    pool.request(method, path, headers, body, handler)
  /** The session once established: requests use it directly, without awaiting anything. */
  let established: Session | undefined = options.resume === undefined
    ? undefined
    : { era: "legacy", id: options.resume.sessionId, protocolVersion: options.resume.protocolVersion, initializeResult: {} }
  /** The initialize in progress, which concurrent callers await; none once established (an idle connection holds no Deferred). */
  let opening: Deferred.Deferred<Session, TransportError> | undefined = undefined
  let nextId = 1
  let closed = false
  /** The server forgot the session this connection was opened for (see renewLostSession). */
  let sessionLost = false
  let generation = 0
  // Modern servers only (see ModernSession): what the revision moved out of the session.
  /** The level an old client set with logging/setLevel, sent in every envelope (the revision's way). */
  let logLevel: string | undefined
  /** Resources an old client subscribed to: the standing listen stream asks for their updates. */
  let subscribedResources: Set<string> | undefined
  /** Reopens the standing listen stream with the current filter (set while one runs); `ready` once the server acknowledged it. */
  let refilter: ((ready: () => void) => void) | undefined
  /** Tool arguments the server mirrors in headers; loaded before the first tools/call, reloaded when stale. */
  let toolHeaders: Map<string, Array<{ readonly path: ReadonlyArray<string>; readonly header: string }>> | undefined
  let toolHeadersFresh = false

  const error = (message: string, reachedBackend: boolean) =>
    new TransportError({ instanceId: instance.id, message, reachedBackend })

  // The instance's own headers, secrets read from the environment once.
  const backendHeaders = resolveHeaders(instance.headers)
  // Copied key by key: object spreads of header records (keys like "x-request-id") take V8's
  // slow path, microseconds per request where this takes a tenth of one.
  const headersFor = (
    s: Session | undefined,
    forwarded?: Readonly<Record<string, string>>,
    routing?: Readonly<Record<string, string>>
  ): Record<string, string> => {
    const headers: Record<string, string> = {}
    if (forwarded !== undefined) for (const name in forwarded) headers[name] = forwarded[name]
    for (const name in backendHeaders) headers[name] = backendHeaders[name]
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
  const postOneWay = (message: unknown, s: Session | undefined) => {
    const text = serialize(instance.id, message)
    if (typeof text !== "string") return log.debug(text.message)
    try {
      requestTo("POST", headersFor(s), text, discardAnswer(() => {}, (e) => log.debug(`one-way POST failed: ${e.message}`)))
    } catch (e) {
      log.debug(`one-way POST not sent: ${(e as Error).message}`)
    }
  }

  /** An answer to a POST: the response and the answer's headers. */
  type Posted = { readonly response: JsonRpcResponse; readonly headers: AnswerHeaders }
  type PostFailure = TransportError | SessionGone | RequestTimeout

  /**
   * POSTs one request and waits for its response, whether it comes as a JSON body or as an
   * SSE stream (notifications and server requests may come first).
   */
  const post = (
    method: string,
    params: Record<string, unknown> | undefined,
    s: Session | undefined,
    deadline: RequestDeadline | undefined,
    relay?: RequestOptions
  ): Effect.Effect<Posted, PostFailure> =>
    Effect.async((resume) => {
      const cancel = postNow(method, params, s, deadline, relay, resume)
      return Effect.sync(cancel)
    })

  /** `post` without an Effect step: `resume` is called once, unless the returned function cancelled first. */
  const postNow = (
    method: string,
    params: Record<string, unknown> | undefined,
    s: Session | undefined,
    deadline: RequestDeadline | undefined,
    relay: RequestOptions | undefined,
    resume: (outcome: Exit.Exit<Posted, PostFailure>) => void
  ): (() => void) => {
    const id = nextId++
    let routing: Record<string, string> | undefined
    if (s?.era === "modern") {
      // The revision's request: the envelope in _meta, the body mirrored in headers.
      params = withEnvelope(params, relay?.client === undefined ? s.envelope : envelopeOf(s.protocolVersion, relay.client), logLevel)
      const own = relay?.clientParamHeaders
      routing = routingHeaders(method, params, own === undefined ? toolHeaders ?? NO_TOOL_HEADERS : NO_TOOL_HEADERS)
      if (own !== undefined) for (const name in own) routing[name] = own[name]!
    }
    const body = serialize(instance.id, params === undefined ? { jsonrpc: "2.0", id, method } : { jsonrpc: "2.0", id, method, params })
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
          relay.onServerRequest(message, (answer) => postOneWay({ ...answer, id: message.id }, s))
        } else {
          postOneWay(answerServerRequest(message), s)
        }
      } else if (isNotification(message)) {
        // On this POST's stream, so about this request (progress, logging while it runs).
        if (relay?.onNotification !== undefined) relay.onNotification(message)
        else log.debug(`notification ${message.method}`)
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
            try {
              deliver(JSON.parse(event.data))
            } catch {
              log.debug(`ignoring an SSE event that is not JSON`)
            }
          }, { onOversized: () => log.warn(`dropped an SSE event larger than ${MAX_EVENT_LENGTH} characters`) })
        }
      },
      onData: (chunk) => {
        if (feed !== undefined) return feed(chunk)
        text += chunk
        if (text.length > MAX_RESPONSE_LENGTH) {
          done(Exit.fail(error(`the answer is larger than ${MAX_RESPONSE_LENGTH} characters`, true)))
          exchange.abort()
        }
      },
      onEnd: () => {
        if (feed !== undefined) return done(Exit.fail(error("the SSE stream ended without a response", true)))
        let message: unknown
        try {
          message = text === "" ? undefined : JSON.parse(text)
        } catch {
          message = undefined
        }
        if (s?.id !== undefined && (status === 404 || (status === 400 && /session/i.test(text)))) {
          return done(Exit.fail(new SessionGone()))
        }
        if (isResponse(message) && (message.id === id || (status >= 400 && message.id === null))) {
          // A JSON-RPC answer, even on an error status, is the server's word: pass it on.
          if (message.id === id) return done(Exit.succeed({ response: message, headers: answerHeaders }))
        }
        if (status >= 200 && status < 300) {
          return done(Exit.fail(error(`expected a JSON-RPC response, got HTTP ${status} ${type || "without a body"}`, true)))
        }
        done(Exit.fail(new TransportError({
          instanceId: instance.id,
          message: `HTTP ${status}${text ? `: ${text.slice(0, 200)}` : ""}`,
          reachedBackend: true,
          clientFault: CLIENT_FAULT_STATUSES.has(status)
        })))
      },
      onError: (e) => {
        if (gotResponse) {
          return done(Exit.fail(error(`${feed !== undefined ? "SSE stream" : "response"} failed: ${e.message}`, true)))
        }
        done(Exit.fail(error(`${e.code}: ${e.message}`, e.answered || !NEVER_SENT_ERRORS.has(e.code))))
      }
    }
    let exchange: Http1Exchange
    try {
      exchange = requestTo("POST", headersFor(s, relay?.headers, routing), body, handler)
    } catch (e) {
      if (!(e instanceof Http1HeaderError)) throw e
      // A header no HTTP message may carry (a forwarded value with a line break): the request's own fault.
      resume(Exit.fail(new TransportError({ instanceId: instance.id, message: `cannot send the request: ${e.message}`, reachedBackend: false, clientFault: true })))
      return () => {}
    }
    deadline?.arm(() => {
      // Closing the connection is how Streamable HTTP cancels a request.
      done(Exit.fail(new RequestTimeout({ instanceId: instance.id, timeoutMs: deadline.timeoutMs })))
      exchange.abort()
    })
    return () => {
      settled = true
      deadline?.disarm()
      exchange.abort()
    }
  }

  /** The old handshake: `initialize`, then `notifications/initialized`; the session id the server issues, if any. */
  const initializeLegacy = (params: Record<string, unknown>) =>
    Effect.gen(function*() {
      const { headers, response } = yield* post("initialize", params, undefined, undefined).pipe(
        Effect.timeoutFail({
          duration: INITIALIZE_TIMEOUT,
          onTimeout: () => error(`no answer to initialize within ${Duration.format(INITIALIZE_TIMEOUT)}`, true)
        }),
        Effect.catchTags({
          SessionGone: () => Effect.fail(error("initialize was refused", true)),
          RequestTimeout: (e) => Effect.fail(error(e.message, true))
        })
      )
      if (refusedAsModernOnly(response)) return yield* Effect.fail(new ModernOnly())
      if ("error" in response) return yield* error(`initialize failed: ${response.error.message}`, true)
      const version = isObject(response.result) ? response.result.protocolVersion : undefined
      if (typeof version !== "string" || !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
        return yield* error(`server answered initialize with unsupported protocol version ${JSON.stringify(version)}`, true)
      }
      const sessionHeader = headers["mcp-session-id"]
      const opened: Session = {
        era: "legacy",
        id: typeof sessionHeader === "string" ? sessionHeader : undefined,
        protocolVersion: version,
        initializeResult: response.result as Record<string, unknown>
      }
      postOneWay({ jsonrpc: "2.0", method: "notifications/initialized" }, opened)
      log.info(`session ${opened.id ?? "(stateless)"} with ${instance.endpoint}`)
      return opened
    })

  /**
   * The revision's own opening: `server/discover`. A modern server answers with what it
   * supports; an old one with an error of some kind (unknown method, no session), which makes
   * it old. Only a server that cannot be reached fails here.
   */
  const probeModern = (params: Record<string, unknown>): Effect.Effect<ModernSession | { readonly why: string }, TransportError> => {
    const version = MODERN_PROTOCOL_VERSIONS[0]!
    const provisional: ModernSession = {
      era: "modern",
      id: undefined,
      protocolVersion: version,
      initializeResult: {},
      discover: {},
      envelope: envelopeOf(version, params)
    }
    return post("server/discover", undefined, provisional, undefined).pipe(
      Effect.timeoutFail({ duration: PROBE_TIMEOUT, onTimeout: () => error(`no answer to server/discover within ${Duration.format(PROBE_TIMEOUT)}`, true) }),
      Effect.map(({ response }) => classifyProbe(response)),
      Effect.catchAll((e) =>
        e._tag === "TransportError" && !e.reachedBackend
          ? Effect.fail(e)
          : Effect.succeed({ _tag: "Legacy" as const, why: e._tag === "TransportError" ? e.message : "no answer" })
      ),
      Effect.map((outcome) => {
        if (outcome._tag === "Legacy") {
          // A silent server is worth saying at info: a modern one that hung is now spoken to the old way.
          if (/within/.test(outcome.why)) log.info(`${outcome.why}; trying the old protocol (initialize)`)
          else log.debug(`not a ${version} server (${outcome.why}); initializing`)
          return { why: outcome.why }
        }
        const opened: ModernSession = {
          ...provisional,
          protocolVersion: outcome.version,
          envelope: envelopeOf(outcome.version, params),
          discover: outcome.discover,
          initializeResult: initializeResultOf(outcome.version, outcome.discover, instance.id)
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
  const initialize: Effect.Effect<Session, TransportError> = Effect.gen(function*() {
    const params = options.initializeParams ?? initializeParams()
    const remembered = options.era?.get()
    let opened: Session | undefined
    let why: string | undefined
    if (remembered !== "legacy") {
      const probed = yield* probeModern(params)
      if ("era" in probed) opened = probed
      else why = probed.why
    }
    if (opened === undefined) {
      const unusable = (reason: string) =>
        error(`the server refuses initialize as modern-only, but its answer to server/discover is not usable: ${reason}`, true)
      opened = yield* initializeLegacy(params).pipe(
        Effect.catchTag("ModernOnly", () =>
          why !== undefined
            ? Effect.fail(unusable(why))
            : Effect.flatMap(probeModern(params), (probed) => ("era" in probed ? Effect.succeed(probed) : Effect.fail(unusable(probed.why)))))
      )
    }
    if (remembered !== opened.era) {
      options.era?.set(opened.era)
      if (opened.era === "modern") log.info(`${instance.endpoint} speaks MCP ${opened.protocolVersion} (no session; server/discover)`)
    }
    return opened
  })

  /** The current session, or a new one; concurrent callers share one initialize. */
  const ensureSession: Effect.Effect<Session, TransportError> = Effect.suspend(() => {
    if (closed) return Effect.fail(error("instance was removed", false))
    if (established !== undefined) return Effect.succeed(established)
    if (opening !== undefined) return Deferred.await(opening)
    const deferred = Deferred.unsafeMake<Session, TransportError>(FiberId.none)
    opening = deferred
    return initialize.pipe(
      Effect.tap((opened) =>
        Effect.sync(() => {
          if (opening === deferred) {
            opening = undefined
            established = opened
            generation++
          }
        })
      ),
      // A failed initialize is not remembered: the next use tries again.
      Effect.tapError(() => Effect.sync(() => opening === deferred && (opening = undefined))),
      Effect.intoDeferred(deferred),
      Effect.forkIn(scope),
      Effect.zipRight(Deferred.await(deferred))
    )
  })

  /** The server forgot session `lost`: open a new one (unless another request already did) and resend once. */
  const resend = (
    lost: Session,
    method: string,
    params: Record<string, unknown> | undefined,
    relay: RequestOptions | undefined
  ) =>
    Effect.suspend(() => {
      if (options.renewLostSession === false) {
        // A client's own session: its state on the server is gone, and so is this connection.
        sessionLost = true
        return Effect.fail(error("the server ended the session", true))
      }
      if (established === lost) {
        log.info(`session ${lost.id} expired; initializing again`)
        established = undefined
        opening = undefined
      }
      return Effect.flatMap(withinDeadline(ensureSession, relay?.deadline), (fresh) =>
        post(method, params, fresh, relay?.deadline, relay).pipe(
          Effect.catchTag("SessionGone", () => Effect.fail(error("the server rejected a fresh session", true)))
        ))
    })

  /** Opening a session counts against the request's time too. */
  const withinDeadline = <A, E>(effect: Effect.Effect<A, E>, deadline: RequestDeadline | undefined) =>
    deadline === undefined ? effect : effect.pipe(
      Effect.timeoutFail({
        duration: Duration.millis(Math.max(1, deadline.remainingMs())),
        onTimeout: () => new RequestTimeout({ instanceId: instance.id, timeoutMs: deadline.timeoutMs })
      })
    )

  /** One POST on a session, answered (a lost session renewed and the request sent again, where that is allowed). */
  const send = (s: Session, method: string, params: Record<string, unknown> | undefined, options: RequestOptions | undefined) =>
    post(method, params, s, options?.deadline, options).pipe(
      Effect.catchTag("SessionGone", () => resend(s, method, params, options)),
      Effect.map((r) => r.response)
    )

  const request = (method: string, params: Record<string, unknown> | undefined, options?: RequestOptions) => {
    const current = established
    if (current !== undefined) {
      // The hot path: one POST on the open session.
      return current.era === "legacy" ? send(current, method, params, options) : modernFor(current, method, params, options)
    }
    // A session that cannot be opened means this request was never sent (a tools/call may fail over).
    const session = Effect.mapError(ensureSession, (e) => new TransportError({ instanceId: e.instanceId, message: e.message, reachedBackend: false }))
    return Effect.flatMap(withinDeadline(session, options?.deadline), (s) =>
      s.era === "legacy" ? send(s, method, params, options) : modernFor(s, method, params, options))
  }

  /**
   * The request path without an Effect step (see RequestNow in Connection.ts): on an open session
   * of the old revision, one POST. A server that forgot the session is answered as `request`
   * does (a new session and the request sent again), in a fiber: that is rare.
   */
  const requestNow: RequestNow = (method, params, options, done) => {
    const current = established
    if (current === undefined || current.era !== "legacy" || closed) return undefined
    let cancelled = false
    let renewal: Fiber.RuntimeFiber<Posted, TransportError | RequestTimeout> | undefined
    const cancelPost = postNow(method, params, current, options?.deadline, options, (outcome) => {
      if (Exit.isSuccess(outcome)) return done(Exit.succeed(outcome.value.response))
      const failure = outcome.cause._tag === "Fail" ? outcome.cause.error : undefined
      if (failure === undefined || failure._tag !== "SessionGone") return done(outcome as Exit.Exit<never, TransportError | RequestTimeout>)
      renewal = Runtime.runFork(env.runtime)(resend(current, method, params, options))
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
  const modernFor = (s: ModernSession, method: string, params: Record<string, unknown> | undefined, options: RequestOptions | undefined) => {
    const sent = options?.onCacheHints === undefined ? modernRequest(s, method, params, options) : Effect.tap(modernRequest(s, method, params, options), (r) => reportCacheHints(r, options.onCacheHints!))
    return options?.passInputRequired === true ? sent : Effect.map(sent, asLegacyResponse)
  }

  const answered = (result: Record<string, unknown>): JsonRpcResponse => ({ jsonrpc: "2.0", id: 0, result })

  /** A complete answer's caching hints, as the server gave them. */
  const reportCacheHints = (response: JsonRpcResponse, report: NonNullable<RequestOptions["onCacheHints"]>) => {
    const result = "result" in response ? response.result : undefined
    if (typeof result !== "object" || result === null) return
    const { cacheScope, resultType, ttlMs } = result as Record<string, unknown>
    if ((resultType === undefined || resultType === "complete") && typeof ttlMs === "number" && ttlMs > 0) {
      report({ ttlMs, cacheScope: cacheScope === "public" ? "public" : "private" })
    }
  }
  const refused = (code: number, message: string): JsonRpcResponse => ({ jsonrpc: "2.0", id: 0, error: { code, message } })

  /**
   * A request of an old-generation caller (an old client's session, the REST face, a health
   * probe) to a modern server, and a modern client's request passed on. What the revision
   * removed is done the revision's way: `ping` is a `server/discover`, `logging/setLevel` a
   * level in every later envelope, resource subscriptions a filter of the standing listen stream.
   * A server that asks for input gets it from whoever can answer (see fulfil).
   */
  const modernRequest = (
    s: ModernSession,
    method: string,
    params: Record<string, unknown> | undefined,
    options: RequestOptions | undefined
  ): Effect.Effect<JsonRpcResponse, TransportError | RequestTimeout> => {
    switch (method) {
      case "ping":
        return Effect.map(send(s, "server/discover", undefined, options), (r) => ("error" in r ? r : answered({})))
      case "logging/setLevel":
        return Effect.sync(() => {
          logLevel = typeof params?.level === "string" ? params.level : undefined
          return answered({})
        })
      case "resources/subscribe":
      case "resources/unsubscribe":
        return Effect.sync((): JsonRpcResponse | undefined => {
          const resources = isObject(s.initializeResult.capabilities) ? s.initializeResult.capabilities.resources : undefined
          if (!isObject(resources) || resources.subscribe !== true) return refused(-32601, "Method not found")
          if (typeof params?.uri !== "string") return refused(-32602, "Invalid params: uri is required")
          if (method === "resources/subscribe") (subscribedResources ??= new Set()).add(params.uri)
          else subscribedResources?.delete(params.uri)
          return undefined
        }).pipe(Effect.flatMap((refusal) =>
          refusal !== undefined
            ? Effect.succeed(refusal)
            // Answered once the stream that carries the resource's updates is acknowledged
            // (or could not be opened): an update published right after is not lost.
            : Effect.async<JsonRpcResponse>((resume) => {
              const done = () => resume(Effect.succeed(answered({})))
              if (refilter === undefined) done()
              else refilter(done)
            }).pipe(Effect.timeout("5 seconds"), Effect.orElseSucceed(() => answered({})))
        ))
      case "tools/call": {
        // A modern client's own headers go as they are: the server checks them, not the gateway.
        if (options?.clientParamHeaders !== undefined) {
          return Effect.flatMap(send(s, method, params, options), (r) => fulfil(s, method, params, r, options, 1))
        }
        // Its arguments may be mirrored in headers, which the server checks: know which first.
        const call = send(s, method, params, options).pipe(
          Effect.flatMap((r) =>
            "error" in r && r.error.code === -32020
              // The tool changed since the list was read (SEP-2243): read it again, once.
              ? Effect.zipRight(loadToolHeaders(s, options), send(s, method, params, options))
              : Effect.succeed(r)
          )
        )
        const ready = toolHeadersFresh ? call : Effect.zipRight(loadToolHeaders(s, options), call)
        return Effect.flatMap(ready, (r) => fulfil(s, method, params, r, options, 1))
      }
      default:
        return Effect.flatMap(send(s, method, params, options), (r) => {
          if (method === "tools/list" && "result" in r && isObject(r.result)) collectToolHeaders(r.result.tools, (toolHeaders ??= new Map()))
          return fulfil(s, method, params, r, options, 1)
        })
    }
  }

  /** Reads the server's whole tool list for the arguments it mirrors in headers (a failure leaves what is known). */
  const loadToolHeaders = (s: ModernSession, options: RequestOptions | undefined) =>
    Effect.gen(function*() {
      let cursor: unknown = undefined
      for (let page = 0; page < 100; page++) {
        const r = yield* send(s, "tools/list", cursor === undefined ? undefined : { cursor }, { deadline: options?.deadline, headers: options?.headers })
        if (!("result" in r) || !isObject(r.result)) return
        collectToolHeaders(r.result.tools, (toolHeaders ??= new Map()))
        cursor = r.result.nextCursor
        if (typeof cursor !== "string") break
      }
      toolHeadersFresh = true
    }).pipe(Effect.catchAll(() => Effect.void))

  /**
   * A modern server's `input_required` result, for a caller that takes server requests (an
   * old client's session): each input request is asked as the old server→client request it
   * stands for, and the request is sent again with the answers (`inputResponses`) and the
   * server's `requestState`, untouched, until the server completes it. A modern client's own
   * request (`passInputRequired`), and a caller that cannot answer, get the result as it is.
   */
  const fulfil = (
    s: ModernSession,
    method: string,
    params: Record<string, unknown> | undefined,
    response: JsonRpcResponse,
    options: RequestOptions | undefined,
    round: number
  ): Effect.Effect<JsonRpcResponse, TransportError | RequestTimeout> => {
    const ask = options?.onServerRequest
    if (!("result" in response) || !isInputRequired(response.result) || ask === undefined || options?.passInputRequired === true) {
      return Effect.succeed(response)
    }
    if (round > MAX_INPUT_ROUNDS) return Effect.succeed(refused(-32603, `the server asked for input more than ${MAX_INPUT_ROUNDS} times`))
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
    return Effect.flatMap(withinDeadline(answers, options?.deadline), (pairs) => {
      const failed = pairs.find(([, answer]) => "error" in answer)
      if (failed !== undefined) return Effect.succeed(failed[1])
      const inputResponses: Record<string, unknown> = {}
      for (const [key, answer] of pairs) inputResponses[key] = "result" in answer ? answer.result : {}
      const retry: Record<string, unknown> = { ...params, inputResponses }
      if (typeof result.requestState === "string") retry.requestState = result.requestState
      else delete retry.requestState
      return Effect.flatMap(send(s, method, retry, options), (next) => fulfil(s, method, params, next, options, round + 1))
    })
  }

  const close = Effect.suspend(() => {
    closed = true
    const current = established
    opening = undefined
    established = undefined
    // (An initialize still in progress is interrupted with the connection's scope: nothing to end.)
    const endSession = current?.id === undefined ? Effect.void : deleteSession(current)
    return endSession.pipe(Effect.ensuring(Effect.sync(pooled.release)))
  })

  /** DELETE the session so that the server can free it; best effort, bounded. */
  const deleteSession = (s: Session) =>
    Effect.async<void>((resume) => {
      const exchange = requestTo("DELETE", headersFor(s), undefined, discardAnswer(() => resume(Effect.void)))
      return Effect.sync(() => exchange.abort())
    }).pipe(Effect.timeout("1 second"), Effect.ignore)

  /**
   * The session's standing GET stream: what the server sends outside requests. Reconnects
   * (with Last-Event-ID, after the server's `retry:` or a second) when it drops, until the
   * scope closes; a server that offers no such stream (405) is left alone.
   */
  const listen: Connection["listen"] = (onMessage) =>
    Effect.gen(function*() {
      const s = yield* Effect.option(ensureSession)
      if (s._tag === "None") return
      if (s.value.era === "modern") return yield* listenModern(s.value, onMessage)
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
        reconnect = setTimeout(open, ms)
      }
      const open = () => {
        if (stopped || closed || established !== session) return
        const headers = headersFor(session)
        headers.accept = "text/event-stream"
        if (lastEventId !== undefined) headers["last-event-id"] = lastEventId
        /** The stream's events, once the server answered with one; undefined while refused or not answered. */
        let feed: ((chunk: string) => void) | undefined
        let refused = false
        const exchange = requestTo("GET", headers, undefined, {
          onHead: (head) => {
            if (head.status !== 200 || !(head.headers["content-type"] ?? "").startsWith("text/event-stream")) {
              refused = true
              if (head.status !== 405) log.debug(`standing stream refused: HTTP ${head.status}`)
              // Not kept for the finalizer: an idle session would hold the request and its answer for ever.
              if (current === exchange) current = undefined
              return
            }
            feed = makeSseParser((event) => {
              if (event.id !== undefined) lastEventId = event.id
              if (event.retry !== undefined) retryMs = event.retry
              if (event.event !== "message" || event.data === "") return
              let message: unknown
              try {
                message = JSON.parse(event.data)
              } catch {
                return
              }
              if (isRequest(message)) onMessage(message, (answer) => postOneWay({ ...answer, id: message.id }, session))
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

  /**
   * A modern server's standing stream: `subscriptions/listen` for every list it says changes and
   * the resources subscribed through this connection, its events passed on without the
   * subscription tag. Reopened when it ends (the server closed it, or the connection broke) and
   * when the subscribed resources change: the new stream replaces the old once acknowledged, so
   * nothing falls between them.
   */
  const listenModern = (
    s: ModernSession,
    onMessage: Parameters<Connection["listen"]>[0]
  ): Effect.Effect<void, never, Scope.Scope> => {
    let stopped = false
    let current: Http1Exchange | undefined
    let reconnect: ReturnType<typeof setTimeout> | undefined
    const later = (exchange: Http1Exchange) => {
      if (stopped || current !== exchange) return
      if (reconnect !== undefined) clearTimeout(reconnect)
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
      if (stopped || closed) return isReady()
      const previous = current
      const filter = listenFilterOf(s.initializeResult.capabilities, subscribedResources ?? NO_RESOURCES)
      if (Object.keys(filter).length === 0) {
        current = undefined
        previous?.abort()
        return isReady()
      }
      const params = withEnvelope({ notifications: filter }, s.envelope, logLevel)
      const body = JSON.stringify({ jsonrpc: "2.0", id: `gateway-listen-${nextId++}`, method: "subscriptions/listen", params })
      let feed: ((chunk: string) => void) | undefined
      let refused = false
      const exchange: Http1Exchange = requestTo("POST", headersFor(s, undefined, routingHeaders("subscriptions/listen", params, toolHeaders ?? NO_TOOL_HEADERS)), body, {
        onHead: (head) => {
          if (head.status !== 200 || !(head.headers["content-type"] ?? "").startsWith("text/event-stream")) {
            refused = true
            log.debug(`subscriptions/listen refused: HTTP ${head.status}`)
            return isReady()
          }
          feed = makeSseParser((event) => {
            if (event.event !== "message" || event.data === "" || current !== exchange) return
            let message: unknown
            try {
              message = JSON.parse(event.data)
            } catch {
              return
            }
            if (!isNotification(message)) return
            if (message.method === "notifications/subscriptions/acknowledged") {
              // The new stream carries everything now: the one it replaces can go.
              if (previous !== undefined && previous !== exchange) previous.abort()
              return isReady()
            }
            if (message.method === "notifications/tools/list_changed") toolHeadersFresh = false
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
        refilter = open
        open()
      },
      () =>
        Effect.sync(() => {
          stopped = true
          if (refilter === open) refilter = undefined
          if (reconnect !== undefined) clearTimeout(reconnect)
          current?.abort()
        })
    ).pipe(Effect.asVoid)
  }

  const notify: Connection["notify"] = (method, params) =>
    Effect.sync(() => {
      // A modern server takes no notifications (cancelling is closing the request's stream).
      if (established !== undefined && established.era === "legacy") {
        postOneWay(params === undefined ? { jsonrpc: "2.0", method } : { jsonrpc: "2.0", method, params }, established)
      }
    })

  return {
    discovered: () => (established?.era === "modern" ? established.discover : undefined),
    sessionId: () => (established?.era === "legacy" ? established.id : undefined),
    generation: () => generation,
    alive: () => !closed && !sessionLost,
    listen,
    notify,
    request,
    requestNow,
    initialize: Effect.map(ensureSession, (s) => s.initializeResult),
    close
  }
}
