import { Cause, Effect, Exit, FiberId, FiberSet, Option } from "effect"
import type * as http from "node:http"
import { GatewayConfig } from "../config/GatewayConfig.js"
import {
  ErrorCode,
  isNotification,
  isObject,
  isRequest,
  isResponse,
  type JsonRpcId,
  type JsonRpcRequest,
  type JsonRpcResponse
} from "../domain/JsonRpc.js"
import { SUPPORTED_PROTOCOL_VERSIONS } from "../domain/Protocol.js"
import { type ClientSession, ClientSessions, relayServerRequest } from "../proxy/ClientSessions.js"
import { SessionOutbox } from "../proxy/SessionOutbox.js"
import { Stats } from "../proxy/Stats.js"
import { Registry } from "../registry/Registry.js"
import { readJsonBody, sendJson } from "./raw.js"

/** JSON-RPC error body, the form every answer of this endpoint takes (clients parse JSON-RPC here). */
const rpcError = (id: JsonRpcId | null, code: number, message: string) => ({ jsonrpc: "2.0", id, error: { code, message } })

const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]", "::1"])

/** Keeps the session's resource subscriptions (updates on a shared process go only to subscribers). */
const trackSubscription = (
  session: ClientSession,
  method: string,
  params: Record<string, unknown> | undefined,
  response: JsonRpcResponse
) => {
  if ("error" in response || typeof params?.uri !== "string") return
  if (method === "resources/subscribe") session.subscriptions.add(params.uri)
  else if (method === "resources/unsubscribe") session.subscriptions.delete(params.uri)
}

const writeEvent = (res: http.ServerResponse, id: string, message: unknown) => {
  if (!res.destroyed) res.write(`id: ${id}\nevent: message\ndata: ${JSON.stringify(message)}\n\n`)
}

/** What the gateway's SSE streams tell clients to wait before reconnecting (the `retry:` field). */
const RECONNECT_AFTER_MS = 1000

/**
 * The priming event a request's stream starts with: an id (so the stream is resumable from the
 * start) with no data, and the reconnection delay.
 */
const primeStream = (res: http.ServerResponse, streamKey: string) =>
  res.write(`id: ${streamKey}-0\nretry: ${RECONNECT_AFTER_MS}\ndata:\n\n`)

/** How long a finished request stream stays resumable. */
const FINISHED_STREAM_RETENTION_MS = 60_000

const forgetLater = (session: ClientSession, stream: SessionOutbox) =>
  setTimeout(() => {
    for (const [key, s] of session.streams) if (s === stream) session.streams.delete(key)
  }, FINISHED_STREAM_RETENTION_MS).unref()

/** How often an idle standing stream gets a comment, so that proxies in between keep it open. */
const KEEP_ALIVE_MS = 25_000

/** The `accept` header lists every one of these (or a wildcard that covers them). */
const accepts = (header: string | undefined, ...types: ReadonlyArray<string>) => {
  if (header === undefined) return false
  const listed = header.split(",").map((part) => part.split(";")[0]!.trim().toLowerCase())
  return types.every((type) => listed.includes(type) || listed.includes("*/*") || listed.includes(`${type.split("/")[0]}/*`))
}

/**
 * The MCP Streamable HTTP endpoint `/mcp/{template}`: an MCP client connects to the gateway as
 * if it were the server. `initialize` pins the client's session to one instance (the template's
 * strategy picks it); the session id is the gateway's own; requests go to the pinned instance;
 * `notifications/cancelled` stops the matching request down to the backend; DELETE ends the
 * session. A session whose instance died or was removed answers 404, so the client starts a
 * new one, which lands on a healthy instance.
 */
export const makeMcpEndpoint = Effect.gen(function*() {
  const sessions = yield* ClientSessions
  const registry = yield* Registry
  const stats = yield* Stats
  const config = yield* GatewayConfig
  const run = yield* FiberSet.makeRuntime<never, unknown, unknown>()
  const allowedOrigins = new Set(config.gateway.allowedOrigins)
  const openStreams = new WeakMap<ClientSession, () => void>()

  const originAllowed = (origin: string) => {
    if (allowedOrigins.has(origin) || allowedOrigins.has("*")) return true
    try {
      return LOOPBACK_HOSTS.has(new URL(origin).hostname)
    } catch {
      return false
    }
  }

  /** The session named by the request, or the answer to give when there is none. */
  const sessionOf = (req: http.IncomingMessage, template: string): ClientSession | { status: number; message: string } => {
    const id = req.headers["mcp-session-id"]
    if (typeof id !== "string" || id === "") return { status: 400, message: "Bad Request: Mcp-Session-Id header is required" }
    const session = sessions.get(id)
    if (session === undefined || session.template !== template) return { status: 404, message: "Session not found" }
    // The pinned instance was removed or is down: end the session so that the client re-initializes.
    const pinned = session.instance
    if (pinned !== undefined && !session.ownBackend && !session.backend.alive()) {
      // Its process died: out of rotation until a health probe (which restarts it) says otherwise,
      // so that the client's new session lands on another instance.
      pinned.markUnhealthy("process exited")
    }
    if (
      pinned !== undefined &&
      (registry.template(template)?.instances.get(pinned.id) !== pinned || pinned.status === "unhealthy" ||
        session.backend.generation() !== session.generation)
    ) {
      run(sessions.close(session.id))
      return { status: 404, message: "Session not found: its server instance is no longer available" }
    }
    session.lastSeen = Date.now()
    return session
  }

  const initialize = (res: http.ServerResponse, template: string, id: JsonRpcId, params: Record<string, unknown>) => {
    const started = performance.now()
    const fiber = run(sessions.open(template, params))
    fiber.addObserver((exit) => {
      if (Exit.isSuccess(exit)) {
        const { result, session } = exit.value as Effect.Effect.Success<ReturnType<typeof sessions.open>>
        stats.recordRequest({ template, strategy: registry.template(template)?.settings.strategy ?? "", instanceId: session.instance?.id, latencyMs: performance.now() - started, ok: true })
        return sendJson(res, 200, { jsonrpc: "2.0", id, result }, { "mcp-session-id": session.id })
      }
      const failure = Cause.failureOption(exit.cause)
      if (Option.isNone(failure)) return sendJson(res, 500, rpcError(id, ErrorCode.InternalError, "the gateway failed to open a session"))
      const error = failure.value as { _tag: string; message: string }
      const status = error._tag === "TemplateNotFound" ? 404 : error._tag === "NoHealthyInstance" ? 503 : 502
      sendJson(res, status, rpcError(id, ErrorCode.InternalError, error.message))
    })
  }

  const forward = (
    res: http.ServerResponse,
    session: ClientSession,
    id: JsonRpcId,
    method: string,
    params: Record<string, unknown> | undefined
  ) => {
    const key = JSON.stringify(id)
    const timeoutMs = (registry.template(session.template)?.settings.timeout ?? 60) * 1000
    const started = performance.now()
    // The answer is an SSE stream. It opens at the first thing the server says before the
    // response (progress while a long tool runs), the notifications go out as they come, and
    // the response closes it; a plain answer is written at once (see `answer`).
    // Its events carry ids, so that a client that loses the connection can resume the stream
    // with GET and Last-Event-ID (see `standingStream`).
    let stream: SessionOutbox | undefined
    const event = (message: unknown) => {
      if (stream === undefined) {
        const streamKey = String(session.nextStream++)
        stream = new SessionOutbox()
        session.streams.set(streamKey, stream)
        if (!res.destroyed) {
          res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
          primeStream(res, streamKey)
          const detach = stream.attach((seq, m) => writeEvent(res, `${streamKey}-${seq}`, m), undefined, () => res.end())
          res.once("close", detach)
        }
      }
      stream.push(message)
    }
    const answer = (status: number, message: unknown) => {
      if (stream === undefined) {
        if (status !== 200 || res.destroyed) return sendJson(res, status, message)
        // Nothing came before the answer: a stream of one event (after the priming one), in
        // one write, as the servers themselves answer (the SDK's default).
        const streamKey = session.nextStream++
        const body = `id: ${streamKey}-0\nretry: ${RECONNECT_AFTER_MS}\ndata:\n\n` +
          `id: ${streamKey}-1\nevent: message\ndata: ${JSON.stringify(message)}\n\n`
        res.writeHead(200, {
          "content-type": "text/event-stream",
          "cache-control": "no-cache",
          "content-length": Buffer.byteLength(body)
        })
        res.end(body)
        return
      }
      stream.push(message)
      stream.finish()
      forgetLater(session, stream)
    }
    // Requests the server makes of the client while this one runs go out on the same stream,
    // under ids of the gateway's; the client's answers come back as POSTs (see `post`).
    const relayed: Array<string> = []
    const onServerRequest = (request: JsonRpcRequest, reply: (response: JsonRpcResponse) => void) =>
      void relayed.push(relayServerRequest(session, request, reply, event))
    const fiber = run(session.backend.request(method, params, { timeoutMs, onNotification: event, onServerRequest }))
    session.inflight.set(key, fiber)
    // A client that hangs up has not cancelled (the spec's word: it sends notifications/cancelled
    // for that); the answer waits in the stream for it to resume, or is dropped.
    fiber.addObserver((exit) => {
      if (session.inflight.get(key) === fiber) session.inflight.delete(key)
      // Server requests the client never answered: the server gets an error rather than silence.
      for (const relayId of relayed) {
        const reply = session.serverRequests.get(relayId)
        if (reply === undefined) continue
        session.serverRequests.delete(relayId)
        reply(rpcError(relayId, ErrorCode.InternalError, "the client's request ended before it answered") as JsonRpcResponse)
      }
      const ok = Exit.isSuccess(exit)
      // (A balanced session's requests went through the Dispatcher, which counted them.)
      if (session.instance !== undefined) {
        stats.recordRequest({
          template: session.template,
          strategy: "session",
          instanceId: session.instance.id,
          latencyMs: performance.now() - started,
          ok
        })
      }
      if (ok) {
        const response = exit.value as JsonRpcResponse
        trackSubscription(session, method, params, response)
        return answer(200, "error" in response ? { jsonrpc: "2.0", id, error: response.error } : { jsonrpc: "2.0", id, result: response.result })
      }
      if (Cause.isInterruptedOnly(exit.cause)) {
        // Cancelled by the client (notifications/cancelled) or it hung up: nobody waits for an answer.
        return answer(200, rpcError(id, ErrorCode.InternalError, "request cancelled"))
      }
      const failure = Cause.failureOption(exit.cause)
      const error = Option.getOrUndefined(failure) as { _tag?: string; message?: string } | undefined
      if (error?._tag === "RequestTimeout") {
        return answer(200, rpcError(id, ErrorCode.InternalError, `the server did not answer within ${timeoutMs / 1000}s`))
      }
      // The pinned instance (or the client's session on it) failed under this session: it is gone
      // for the client, who starts anew. (Whether the instance itself is down is for the health
      // checks, and for the next initialize, which fails over if it cannot open a session.)
      run(sessions.close(session.id))
      answer(404, rpcError(id, ErrorCode.InternalError, `Session not found: ${error?.message ?? "its server instance failed"}`))
    })
  }

  const post = (req: http.IncomingMessage, res: http.ServerResponse, requestId: string, template: string) => {
    if (!accepts(req.headers.accept, "application/json", "text/event-stream")) {
      req.resume()
      return sendJson(res, 406, rpcError(null, ErrorCode.InvalidRequest, "Not Acceptable: Accept must list application/json and text/event-stream"))
    }
    const version = req.headers["mcp-protocol-version"]
    if (typeof version === "string" && !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
      req.resume()
      return sendJson(res, 400, rpcError(null, ErrorCode.InvalidRequest, `Bad Request: unsupported MCP-Protocol-Version ${version} (supported: ${SUPPORTED_PROTOCOL_VERSIONS.join(", ")})`))
    }
    readJsonBody(req, requestId, config.gateway.maxBodyBytes, (body) => {
      if (!body.ok) {
        const code = body.error.status === 413 ? ErrorCode.InvalidRequest : ErrorCode.ParseError
        return sendJson(res, body.error.status, rpcError(null, code, body.error.body.error.message))
      }
      const message = body.value
      if (Array.isArray(message)) {
        return sendJson(res, 400, rpcError(null, ErrorCode.InvalidRequest, "Bad Request: JSON-RPC batches are not supported"))
      }
      if (!isObject(message) || message.jsonrpc !== "2.0") {
        return sendJson(res, 400, rpcError(null, ErrorCode.InvalidRequest, "Bad Request: expected one JSON-RPC 2.0 message"))
      }
      if (isRequest(message) && message.method === "initialize") {
        if (registry.template(template) === undefined) {
          return sendJson(res, 404, rpcError(message.id, ErrorCode.InvalidRequest, `unknown template "${template}"`))
        }
        return initialize(res, template, message.id, isObject(message.params) ? message.params : {})
      }
      const session = sessionOf(req, template)
      if (!("id" in session && "backend" in session)) {
        return sendJson(res, session.status, rpcError(isRequest(message) ? message.id : null, ErrorCode.InvalidRequest, session.message))
      }
      if (isRequest(message)) {
        return forward(res, session, message.id, message.method, isObject(message.params) ? message.params : undefined)
      }
      if (isNotification(message)) {
        if (message.method === "notifications/cancelled" && isObject(message.params)) {
          const fiber = session.inflight.get(JSON.stringify(message.params.requestId))
          if (fiber !== undefined) fiber.unsafeInterruptAsFork(FiberId.none)
        }
        // notifications/initialized: the gateway completed the backend's handshake itself. Other
        // notifications (roots/list_changed, ...) go to a backend that serves this session alone;
        // a process shared with other sessions is not told one client's news.
        else if (message.method !== "notifications/initialized" && session.ownBackend) {
          run(session.backend.notify(message.method, isObject(message.params) ? message.params : undefined))
        }
        res.writeHead(202).end()
        return
      }
      if (isResponse(message)) {
        // The client's answer to a server→client request the gateway relayed.
        const reply = session.serverRequests.get(String(message.id))
        if (reply !== undefined) {
          session.serverRequests.delete(String(message.id))
          reply(message)
        }
        res.writeHead(202).end()
        return
      }
      sendJson(res, 400, rpcError(null, ErrorCode.InvalidRequest, "Bad Request: not a JSON-RPC request, notification or response"))
    })
  }

  /**
   * GET: the session's standing SSE stream, for what the server sends outside requests. Events
   * carry ids; reconnecting with Last-Event-ID replays what the client missed (from a bounded
   * buffer). A new stream replaces the session's previous one.
   */
  const standingStream = (req: http.IncomingMessage, res: http.ServerResponse, template: string) => {
    if (!accepts(req.headers.accept, "text/event-stream")) {
      return sendJson(res, 406, rpcError(null, ErrorCode.InvalidRequest, "Not Acceptable: Accept must list text/event-stream"))
    }
    const session = sessionOf(req, template)
    if (!("backend" in session)) return sendJson(res, session.status, rpcError(null, ErrorCode.InvalidRequest, session.message))
    // Last-Event-ID names the stream to resume ("{stream}-{seq}"): a request's stream (its
    // missed events, then the rest of it until its response), or the standing stream "0".
    const resume = /^(\d+)-(\d+)$/.exec(String(req.headers["last-event-id"] ?? ""))
    const resumed = resume === null ? undefined : session.streams.get(resume[1]!)
    if (resumed !== undefined && resume![1] !== "0") {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
      res.write(`retry: ${RECONNECT_AFTER_MS}\n\n`)
      const streamKey = resume![1]!
      const detachRequest = resumed.attach((seq, m) => writeEvent(res, `${streamKey}-${seq}`, m), Number(resume![2]), () => res.end())
      res.once("close", detachRequest)
      return
    }
    // One standing stream per session: the new one replaces the old.
    openStreams.get(session)?.()
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
    res.write(`: open\nretry: ${RECONNECT_AFTER_MS}\n\n`)
    const detach = session.outbox.attach(
      (seq, message) => writeEvent(res, `0-${seq}`, message),
      resume !== null && resume[1] === "0" ? Number(resume[2]) : undefined
    )
    const keepAlive = setInterval(() => res.write(": keep-alive\n\n"), KEEP_ALIVE_MS)
    const end = () => res.end()
    session.onClose.add(end)
    openStreams.set(session, end)
    res.on("close", () => {
      detach()
      clearInterval(keepAlive)
      session.onClose.delete(end)
      if (openStreams.get(session) === end) openStreams.delete(session)
    })
  }

  return (req: http.IncomingMessage, res: http.ServerResponse, requestId: string, template: string) => {
    const origin = req.headers.origin
    if (typeof origin === "string" && !originAllowed(origin)) {
      req.resume()
      return sendJson(res, 403, rpcError(null, ErrorCode.InvalidRequest, `Forbidden: origin ${origin} is not allowed`))
    }
    switch (req.method) {
      case "POST":
        return post(req, res, requestId, template)
      case "DELETE": {
        const session = sessionOf(req, template)
        if (!("backend" in session)) return sendJson(res, session.status, rpcError(null, ErrorCode.InvalidRequest, session.message))
        run(sessions.close(session.id)).addObserver(() => {
          res.writeHead(200).end()
        })
        return
      }
      case "GET":
        return standingStream(req, res, template)
      default:
        req.resume()
        res.writeHead(405, { allow: "GET, POST, DELETE" }).end()
    }
  }
})
