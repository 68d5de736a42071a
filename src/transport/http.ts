import { Deferred, Duration, Effect, FiberId } from "effect"
import * as http from "node:http"
import * as https from "node:https"
import type { InstanceDefinition } from "../domain/Instance.js"
import { isNotification, isObject, isRequest, isResponse, type JsonRpcResponse } from "../domain/JsonRpc.js"
import { resolveHeaders } from "../domain/Secret.js"
import { initializeParams, SUPPORTED_PROTOCOL_VERSIONS } from "../domain/Protocol.js"
import type { Connection, ConnectionEnv, RequestDeadline, RequestOptions } from "./Connection.js"
import { answerServerRequest } from "./serverRequests.js"
import { MAX_EVENT_LENGTH, makeSseParser } from "./sse.js"
import { NEVER_SENT_ERRORS, RequestTimeout, serialize, TransportError } from "./TransportError.js"

type HttpInstance = Extract<InstanceDefinition, { transport: "http" }>

const INITIALIZE_TIMEOUT = Duration.seconds(30)

/** The largest JSON answer the gateway reads (16 Mi characters); a larger one fails the request. */
const MAX_RESPONSE_LENGTH = MAX_EVENT_LENGTH

/**
 * Statuses by which a server refuses the message itself (malformed, too large, wrong type):
 * the client's mistake, not a sign of the instance's health.
 */
const CLIENT_FAULT_STATUSES: ReadonlySet<number> = new Set([400, 413, 415, 422])

interface Session {
  /** Absent for a stateless server that issues none. */
  readonly id: string | undefined
  readonly protocolVersion: string
  /** The server's answer to `initialize`. */
  readonly initializeResult: Record<string, unknown>
}

/** The server no longer knows our session: initialize again and resend. */
class SessionGone {
  readonly _tag = "SessionGone"
}

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
  } = {}
): Connection => {
  const { log, scope } = env
  const url = new URL(instance.endpoint)
  const client = url.protocol === "https:" ? https : http
  const agent = new client.Agent({ keepAlive: true, maxSockets: 256 })
  let session: Deferred.Deferred<Session, TransportError> | undefined
  /** The session once established: requests use it directly, without awaiting anything. */
  let established: Session | undefined
  let nextId = 1
  let closed = false
  /** The server forgot the session this connection was opened for (see renewLostSession). */
  let sessionLost = false
  let generation = 0

  const error = (message: string, reachedBackend: boolean) =>
    new TransportError({ instanceId: instance.id, message, reachedBackend })

  // The instance's own headers, secrets read from the environment once.
  const backendHeaders = resolveHeaders(instance.headers)
  // Copied key by key: object spreads of header records (keys like "x-request-id") take V8's
  // slow path, microseconds per request where this takes a tenth of one.
  const headersFor = (s: Session | undefined, forwarded?: Readonly<Record<string, string>>): http.OutgoingHttpHeaders => {
    const headers: http.OutgoingHttpHeaders = {}
    if (forwarded !== undefined) for (const name in forwarded) headers[name] = forwarded[name]
    for (const name in backendHeaders) headers[name] = backendHeaders[name]
    headers["content-type"] = "application/json"
    headers.accept = "application/json, text/event-stream"
    if (s !== undefined) {
      headers["mcp-protocol-version"] = s.protocolVersion
      if (s.id !== undefined) headers["mcp-session-id"] = s.id
    }
    return headers
  }

  /** Fire-and-forget POST of a message that has no answer (a notification, or our reply to a server request). */
  const postOneWay = (message: unknown, s: Session | undefined) => {
    const text = serialize(instance.id, message)
    if (typeof text !== "string") return log.debug(text.message)
    const req = client.request(url, { method: "POST", agent, headers: headersFor(s) }, (res) => res.resume())
    req.on("error", (e) => log.debug(`one-way POST failed: ${e.message}`))
    req.end(text)
  }

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
  ): Effect.Effect<{ response: JsonRpcResponse; headers: http.IncomingHttpHeaders }, TransportError | SessionGone | RequestTimeout> =>
    Effect.async((resume) => {
      const id = nextId++
      const body = serialize(instance.id, params === undefined ? { jsonrpc: "2.0", id, method } : { jsonrpc: "2.0", id, method, params })
      if (typeof body !== "string") return resume(Effect.fail(body))
      let settled = false
      let gotResponse = false
      const done = (
        outcome: Effect.Effect<{ response: JsonRpcResponse; headers: http.IncomingHttpHeaders }, TransportError | SessionGone | RequestTimeout>
      ) => {
        if (!settled) {
          settled = true
          deadline?.disarm()
          resume(outcome)
        }
      }
      const req = client.request(url, { method: "POST", agent, headers: headersFor(s, relay?.headers) }, (res) => {
        gotResponse = true
        const status = res.statusCode ?? 0
        const type = String(res.headers["content-type"] ?? "")
        res.setEncoding("utf8")
        const deliver = (message: unknown) => {
          if (isResponse(message) && message.id === id) {
            done(Effect.succeed({ response: message, headers: res.headers }))
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
        if (status >= 200 && status < 300 && type.startsWith("text/event-stream")) {
          const feed = makeSseParser((event) => {
            if (event.event !== "message" || event.data === "") return
            try {
              deliver(JSON.parse(event.data))
            } catch {
              log.debug(`ignoring an SSE event that is not JSON`)
            }
          }, { onOversized: () => log.warn(`dropped an SSE event larger than ${MAX_EVENT_LENGTH} characters`) })
          res.on("data", feed)
          res.on("end", () => done(Effect.fail(error("the SSE stream ended without a response", true))))
          res.on("error", (e) => done(Effect.fail(error(`SSE stream failed: ${e.message}`, true))))
          return
        }
        let text = ""
        res.on("data", (chunk: string) => {
          text += chunk
          if (text.length > MAX_RESPONSE_LENGTH) {
            done(Effect.fail(error(`the answer is larger than ${MAX_RESPONSE_LENGTH} characters`, true)))
            req.destroy()
          }
        })
        res.on("error", (e) => done(Effect.fail(error(`response failed: ${e.message}`, true))))
        res.on("end", () => {
          let message: unknown
          try {
            message = text === "" ? undefined : JSON.parse(text)
          } catch {
            message = undefined
          }
          if (s?.id !== undefined && (status === 404 || (status === 400 && /session/i.test(text)))) {
            return done(Effect.fail(new SessionGone()))
          }
          if (isResponse(message) && (message.id === id || (status >= 400 && message.id === null))) {
            // A JSON-RPC answer, even on an error status, is the server's word: pass it on.
            if (message.id === id) return done(Effect.succeed({ response: message, headers: res.headers }))
          }
          if (status >= 200 && status < 300) {
            return done(Effect.fail(error(`expected a JSON-RPC response, got HTTP ${status} ${type || "without a body"}`, true)))
          }
          done(Effect.fail(new TransportError({
            instanceId: instance.id,
            message: `HTTP ${status}${text ? `: ${text.slice(0, 200)}` : ""}`,
            reachedBackend: true,
            clientFault: CLIENT_FAULT_STATUSES.has(status)
          })))
        })
      })
      req.on("error", (e: NodeJS.ErrnoException) => {
        const sent = gotResponse || !NEVER_SENT_ERRORS.has(e.code ?? "")
        done(Effect.fail(error(`${e.code ?? "error"}: ${e.message}`, sent)))
      })
      req.end(body)
      deadline?.arm(() => {
        // Closing the connection is how Streamable HTTP cancels a request.
        done(Effect.fail(new RequestTimeout({ instanceId: instance.id, timeoutMs: deadline.timeoutMs })))
        req.destroy()
      })
      return Effect.sync(() => {
        settled = true
        deadline?.disarm()
        req.destroy()
      })
    })

  const initialize = Effect.gen(function*() {
    const params = options.initializeParams ?? initializeParams()
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
    if ("error" in response) return yield* error(`initialize failed: ${response.error.message}`, true)
    const version = isObject(response.result) ? response.result.protocolVersion : undefined
    if (typeof version !== "string" || !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
      return yield* error(`server answered initialize with unsupported protocol version ${JSON.stringify(version)}`, true)
    }
    const sessionHeader = headers["mcp-session-id"]
    const opened: Session = {
      id: typeof sessionHeader === "string" ? sessionHeader : undefined,
      protocolVersion: version,
      initializeResult: response.result as Record<string, unknown>
    }
    postOneWay({ jsonrpc: "2.0", method: "notifications/initialized" }, opened)
    log.info(`session ${opened.id ?? "(stateless)"} with ${instance.endpoint}`)
    return opened
  })

  /** The current session, or a new one; concurrent callers share one initialize. */
  const ensureSession: Effect.Effect<Session, TransportError> = Effect.suspend(() => {
    if (closed) return Effect.fail(error("instance was removed", false))
    if (session !== undefined) return Deferred.await(session)
    const deferred = Deferred.unsafeMake<Session, TransportError>(FiberId.none)
    session = deferred
    return initialize.pipe(
      Effect.tap((opened) =>
        Effect.sync(() => {
          if (session === deferred) {
            established = opened
            generation++
          }
        })
      ),
      // A failed initialize is not remembered: the next use tries again.
      Effect.tapError(() => Effect.sync(() => session === deferred && (session = undefined))),
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
        session = undefined
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

  const request = (method: string, params: Record<string, unknown> | undefined, options?: RequestOptions) => {
    const deadline = options?.deadline
    const current = established
    if (current !== undefined) {
      // The hot path: one POST on the open session.
      return post(method, params, current, deadline, options).pipe(
        Effect.catchTag("SessionGone", () => resend(current, method, params, options)),
        Effect.map((r) => r.response)
      )
    }
    // A session that cannot be opened means this request was never sent (a tools/call may fail over).
    const session = Effect.mapError(ensureSession, (e) => new TransportError({ instanceId: e.instanceId, message: e.message, reachedBackend: false }))
    return Effect.flatMap(withinDeadline(session, deadline), (s) =>
      post(method, params, s, deadline, options).pipe(
        Effect.catchTag("SessionGone", () => resend(s, method, params, options)),
        Effect.map((r) => r.response)
      ))
  }

  const close = Effect.suspend(() => {
    closed = true
    const current = session
    session = undefined
    established = undefined
    const endSession = current === undefined
      ? Effect.void
      : Deferred.poll(current).pipe(
        Effect.flatMap((polled) => polled._tag === "Some" ? Effect.option(polled.value) : Effect.succeedNone),
        Effect.flatMap((s) =>
          s._tag === "Some" && s.value.id !== undefined ? deleteSession(s.value) : Effect.void
        )
      )
    return endSession.pipe(Effect.ensuring(Effect.sync(() => agent.destroy())))
  })

  /** DELETE the session so that the server can free it; best effort, bounded. */
  const deleteSession = (s: Session) =>
    Effect.async<void>((resume) => {
      const req = client.request(url, { method: "DELETE", agent, headers: headersFor(s) }, (res) => {
        res.resume()
        res.on("end", () => resume(Effect.void))
      })
      req.on("error", () => resume(Effect.void))
      req.end()
      return Effect.sync(() => req.destroy())
    }).pipe(Effect.timeout("1 second"), Effect.ignore)

  /**
   * The session's standing GET stream: what the server sends outside requests. Reconnects
   * (with Last-Event-ID, after the server's `retry:` or a second) when it drops, until the
   * scope closes; a server that offers no such stream (405) is left alone.
   */
  const listen: Connection["listen"] = (onMessage) =>
    Effect.gen(function*() {
      const s = yield* Effect.option(ensureSession)
      if (s._tag === "None" || s.value.id === undefined) return
      const session = s.value
      let stopped = false
      let current: http.ClientRequest | undefined
      let lastEventId: string | undefined
      let retryMs = 1000
      let reconnect: ReturnType<typeof setTimeout> | undefined
      const later = (ms: number) => {
        if (!stopped) reconnect = setTimeout(open, ms)
      }
      const open = () => {
        if (stopped || closed || established !== session) return
        const headers = { ...headersFor(session), accept: "text/event-stream" }
        if (lastEventId !== undefined) (headers as Record<string, string>)["last-event-id"] = lastEventId
        const req = client.request(url, { method: "GET", agent, headers }, (res) => {
          if (res.statusCode !== 200 || !String(res.headers["content-type"] ?? "").startsWith("text/event-stream")) {
            res.resume()
            if (res.statusCode !== 405) log.debug(`standing stream refused: HTTP ${res.statusCode}`)
            return
          }
          res.setEncoding("utf8")
          res.on("data", makeSseParser((event) => {
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
          }))
          res.on("end", () => later(retryMs))
          res.on("error", () => {})
        })
        req.on("error", () => later(Math.max(retryMs, 1000)))
        req.end()
        current = req
      }
      yield* Effect.acquireRelease(Effect.sync(open), () =>
        Effect.sync(() => {
          stopped = true
          if (reconnect !== undefined) clearTimeout(reconnect)
          current?.destroy()
        }))
    })

  const notify: Connection["notify"] = (method, params) =>
    Effect.sync(() => {
      if (established !== undefined) {
        postOneWay(params === undefined ? { jsonrpc: "2.0", method } : { jsonrpc: "2.0", method, params }, established)
      }
    })

  return {
    generation: () => generation,
    alive: () => !closed && !sessionLost,
    listen,
    notify,
    request,
    initialize: Effect.map(ensureSession, (s) => s.initializeResult),
    close
  }
}
