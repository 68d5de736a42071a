import { Cause, Duration, Exit, FiberId, Option } from "effect"
import type * as http from "node:http"
import {
  ErrorCode,
  isNotification,
  isObject,
  isRequest,
  isResponse,
  type JsonRpcId,
  type JsonRpcRequest,
  type JsonRpcResponse
} from "../../domain/JsonRpc.js"
import type { Identity } from "../../domain/Identity.js"
import { SUPPORTED_PROTOCOL_VERSIONS } from "../../domain/Protocol.js"
import type { EndpointSession, SessionAnswer } from "../../sessions/EndpointSession.js"
import type { EndpointSessionsShape } from "../../sessions/EndpointSessions.js"
import { forwardedHeaders } from "../forwardedHeaders.js"
import { type BodyLimits, readJsonBody, type RunEffect, sendJson } from "../raw.js"
import type { makeRequestTelemetry, RequestSpan } from "../requestTelemetry.js"
import { makeModernHandler } from "./modern.js"
import { isModernVersion } from "../../domain/ModernProtocol.js"
import { envelopeVersion } from "./modernEnvelope.js"
import { withSession } from "./resolved.js"
import { acceptsJsonAndEventStream, rpcError, sessionFailureAnswer } from "./rpc.js"
import { carry, openRequestStream, writeOneEventStream } from "./sse.js"

/** How long a finished request stream stays resumable. */
const FINISHED_STREAM_RETENTION = Duration.seconds(60)


/**
 * POST /mcp/{template}: one JSON-RPC message. `initialize` opens a session; a request goes
 * through the session (one Dispatcher call) and is answered as an SSE stream: what the server
 * says before the response (progress, its requests of the client) streams as it happens, then
 * the response; notifications and the client's answers to relayed server requests get 202.
 */
export const makePostHandler = (deps: {
  readonly sessions: EndpointSessionsShape
  readonly templateExists: (template: string) => boolean
  /** The client headers a template forwards to its backends. */
  readonly forwardHeaders: (template: string) => ReadonlyArray<string>
  readonly limits: BodyLimits
  readonly run: RunEffect
  readonly logDefect: (cause: Cause.Cause<unknown>) => void
  readonly telemetry: ReturnType<typeof makeRequestTelemetry>
  /** How long a modern client's call waits for the input its server asked for (modern.ts). */
  readonly inputWaitMs: number
}) => {
  const { run, sessions } = deps
  const modern = makeModernHandler({
    sessions,
    run,
    telemetry: deps.telemetry,
    logDefect: deps.logDefect,
    forwardedHeaders: (req, template, requestId) => forwardedHeaders(req, deps.forwardHeaders(template), requestId),
    inputWaitMs: deps.inputWaitMs
  })

  const initialize = (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    requestId: string,
    template: string,
    id: JsonRpcId,
    params: Record<string, unknown>,
    caller: Identity
  ) =>
    deps.telemetry(run, req, requestId, () => ({ "mcp.template": template, "mcp.method": "initialize" }))(sessions.open(template, params, caller)).addObserver((exit) => {
      if (Exit.isSuccess(exit)) {
        const { result, session } = exit.value
        return sendJson(res, 200, { jsonrpc: "2.0", id, result }, { "mcp-session-id": session.id })
      }
      const failure = Cause.failureOption(exit.cause)
      if (Option.isNone(failure)) {
        if (!Cause.isInterruptedOnly(exit.cause)) deps.logDefect(exit.cause)
        return sendJson(res, 500, rpcError(id, ErrorCode.InternalError, "the gateway failed to open a session"))
      }
      const answer = sessionFailureAnswer(id, failure.value)
      sendJson(res, answer.status, answer.body, answer.headers)
    })

  /** A client request on its session; the answer is an SSE stream (see sse.ts). */
  const forward = (
    req: http.IncomingMessage,
    requestId: string,
    res: http.ServerResponse,
    session: EndpointSession,
    id: JsonRpcId,
    method: string,
    params: Record<string, unknown> | undefined,
    headers: Record<string, string> | undefined
  ) => {
    // The stream opens at the first thing the server says before the response, the
    // notifications go out as they come, and the response closes it; a plain answer is written
    // at once (see `answer`).
    let opened: ReturnType<EndpointSession["openStream"]> | undefined
    const event = (message: unknown) => {
      if (opened === undefined) {
        opened = session.openStream()
        if (!res.destroyed) {
          // A client that takes nothing for the write timeout (or overflows its bound) is cut off,
          // and then its request is cancelled, down to the backend: nobody would read its end.
          carry(openRequestStream(res, opened.key, () => session.cancel(id)), opened.key, opened.stream)
        }
      }
      opened.stream.push(message)
    }
    const answer = (status: number, message: unknown, headers?: http.OutgoingHttpHeaders) => {
      if (opened === undefined) {
        if (status !== 200 || res.destroyed) return sendJson(res, status, message, headers)
        return writeOneEventStream(res, session.reserveStreamKey(), message)
      }
      opened.stream.push(message)
      opened.stream.finish()
      session.retireStream(opened.key, FINISHED_STREAM_RETENTION)
    }
    // Requests the server makes of the client while this one runs go out on the same stream,
    // under ids of the gateway's; the client's answers come back as POSTs (see below).
    const relayed: Array<string> = []
    const onServerRequest = (request: JsonRpcRequest, reply: (response: JsonRpcResponse) => void) =>
      void relayed.push(session.relayServerRequest(request, reply, event))
    const answerWith = (outcome: SessionAnswer) => {
      switch (outcome._tag) {
        case "Answer":
          return answer(200, { jsonrpc: "2.0", id, ...outcome.message })
        case "Gone":
          run(sessions.close(session.id))
          return answer(404, rpcError(id, ErrorCode.InternalError, outcome.message))
        case "Unavailable":
          return answer(503, rpcError(id, ErrorCode.InternalError, outcome.message), {
            "retry-after": String(outcome.retryAfterSeconds)
          })
        case "Failed":
          return answer(outcome.status, { jsonrpc: "2.0", id, error: outcome.error }, outcome.headers)
      }
    }
    const finished = (exit: Exit.Exit<SessionAnswer>) => {
      session.abandonServerRequests(relayed)
      if (Exit.isSuccess(exit)) return answerWith(exit.value)
      if (Cause.isInterruptedOnly(exit.cause)) {
        // Cancelled by the client (notifications/cancelled), or the session ended: nobody waits for an answer.
        return answer(200, rpcError(id, ErrorCode.InternalError, "request cancelled"))
      }
      deps.logDefect(exit.cause)
      answer(500, rpcError(id, ErrorCode.InternalError, "the gateway failed to handle the request; see its log"))
    }
    const relay = { onNotification: event, onServerRequest }
    // Without a fiber where the session can (the request path: Dispatcher.callNow), traced or
    // not: with tracing on, its gateway.request span is made here, only if the session serves it so.
    let over = false
    let untrack: (() => void) | undefined
    let traced: RequestSpan | undefined
    const spanNow = () => {
      traced = deps.telemetry.spanNow(req, requestId, () => ({ "mcp.template": session.template, "mcp.method": method }))
      return traced?.span
    }
    const cancel = session.requestNow(method, params, relay, headers, requestId, (exit) => {
      over = true
      untrack?.()
      traced?.end(exit)
      finished(exit)
    }, spanNow)
    if (cancel !== undefined) {
      // A client that hangs up has not cancelled (see below); notifications/cancelled and the session's end do.
      if (!over) {
        untrack = session.trackNow(id, () => {
          if (over) return
          over = true
          untrack?.()
          cancel()
          const interrupted = Exit.interrupt(FiberId.none)
          traced?.end(interrupted)
          finished(interrupted)
        })
      }
      return
    }
    const fork = deps.telemetry(run, req, requestId, () => ({ "mcp.template": session.template, "mcp.method": method }))
    const fiber = fork(session.request(method, params, relay, headers))
    // A client that hangs up has not cancelled (the spec's word: it sends notifications/cancelled
    // for that); the answer waits in the stream for it to resume, or is dropped.
    session.track(id, fiber)
    fiber.addObserver(finished)
  }

  return (req: http.IncomingMessage, res: http.ServerResponse, requestId: string, template: string, caller: Identity) => {
    if (!acceptsJsonAndEventStream(req.headers.accept)) {
      req.resume()
      return sendJson(res, 406, rpcError(null, ErrorCode.InvalidRequest, "Not Acceptable: Accept must list application/json and text/event-stream"))
    }
    const version = req.headers["mcp-protocol-version"]
    // (A modern version is checked against the request's envelope, below.)
    if (typeof version === "string" && !SUPPORTED_PROTOCOL_VERSIONS.includes(version) && !isModernVersion(version)) {
      req.resume()
      return sendJson(
        res,
        400,
        rpcError(null, ErrorCode.InvalidRequest, `Bad Request: unsupported MCP-Protocol-Version ${version} (supported: ${SUPPORTED_PROTOCOL_VERSIONS.join(", ")})`)
      )
    }
    readJsonBody(req, requestId, deps.limits, (body) => {
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
      // The two generations on one URL, told apart as the 2026-07-28 revision says: a request
      // whose envelope (or version header) claims a modern version, with no session, is modern.
      if (req.headers["mcp-session-id"] === undefined && (isModernVersion(envelopeVersion(message)) || isModernVersion(version))) {
        if (isRequest(message)) {
          if (!deps.templateExists(template)) {
            return sendJson(res, 404, rpcError(message.id, ErrorCode.MethodNotFound, sessions.unknown(template)))
          }
          return modern(req, res, requestId, template, caller, message)
        }
        // The revision defines no client notifications over HTTP (an SDK cancelling a listen sends one): accepted, dropped.
        res.writeHead(202).end()
        return
      }
      if (isRequest(message) && message.method === "initialize") {
        if (!deps.templateExists(template)) {
          return sendJson(res, 404, rpcError(message.id, ErrorCode.InvalidRequest, sessions.unknown(template)))
        }
        return initialize(req, res, requestId, template, message.id, isObject(message.params) ? message.params : {}, caller)
      }
      const sessionId = req.headers["mcp-session-id"]
      withSession(sessions.resolve(typeof sessionId === "string" ? sessionId : undefined, template, caller), run, (session) => {
        if (!("id" in session)) {
          return sendJson(res, session.status, rpcError(isRequest(message) ? message.id : null, ErrorCode.InvalidRequest, session.message))
        }
        if (isRequest(message)) {
          return forward(
            req,
            requestId,
            res,
            session,
            message.id,
            message.method,
            isObject(message.params) ? message.params : undefined,
            forwardedHeaders(req, deps.forwardHeaders(template), requestId)
          )
        }
        if (isNotification(message)) {
          if (message.method === "notifications/cancelled" && isObject(message.params)) session.cancel(message.params.requestId)
          // notifications/initialized: the gateway completed the backend's handshake itself.
          else if (message.method !== "notifications/initialized") {
            run(session.notify(message.method, isObject(message.params) ? message.params : undefined))
          }
          res.writeHead(202).end()
          return
        }
        if (isResponse(message)) {
          // The client's answer to a server→client request the gateway relayed.
          session.answerServerRequest(message)
          res.writeHead(202).end()
          return
        }
        sendJson(res, 400, rpcError(null, ErrorCode.InvalidRequest, "Bad Request: not a JSON-RPC request, notification or response"))
      })
    })
  }
}
