import { Cause, Effect, Exit, FiberId, Option } from "effect"
import type * as http from "node:http"
import type { DispatchError, SessionLimitReached } from "../../domain/GatewayError.js"
import { ErrorCode, isObject, type JsonRpcId, type JsonRpcRequest, type JsonRpcResponse } from "../../domain/JsonRpc.js"
import { LATEST_PROTOCOL_VERSION, MODERN_PROTOCOL_VERSIONS } from "../../domain/Protocol.js"
import type { SessionAnswer } from "../../proxy/ClientSession.js"
import type { ClientSessionsShape } from "../../proxy/ClientSessions.js"
import { sendJson } from "../raw.js"
import type { RunEffect } from "../raw.js"
import type { makeRequestTelemetry } from "../requestTelemetry.js"
import { META, type ModernRequest, readModernRequest } from "./modernEnvelope.js"
import { rpcError } from "./rpc.js"

/** Results the revision requires caching hints on; without hints from the server, "do not cache". */
const CACHEABLE = new Set(["tools/list", "resources/list", "resources/templates/list", "resources/read", "prompts/list"])

/**
 * What a modern client is told the server can do. Until the gateway carries
 * `subscriptions/listen`, it does not promise list-change or resource-update notifications;
 * `logging` is gone from the revision (its `notifications/message` needs a per-request level).
 */
const modernCapabilities = (capabilities: unknown): Record<string, unknown> => {
  if (!isObject(capabilities)) return {}
  const out: Record<string, unknown> = {}
  for (const [name, value] of Object.entries(capabilities)) {
    if (name === "logging") continue
    if (isObject(value)) {
      const { listChanged: _listChanged, subscribe: _subscribe, ...rest } = value
      out[name] = rest
    } else {
      out[name] = value
    }
  }
  return out
}

/** The `initialize` an old backend gets on behalf of a modern client (its own info and capabilities). */
const initializeParamsOf = (request: ModernRequest) => ({
  protocolVersion: LATEST_PROTOCOL_VERSION,
  capabilities: request.capabilities,
  clientInfo: request.clientInfo ?? { name: "unknown", version: "0" }
})

const serverInfoMeta = (initialized: Record<string, unknown>) =>
  initialized.serverInfo === undefined ? {} : { [META.serverInfo]: initialized.serverInfo }

/**
 * A request of the MCP 2026-07-28 revision ("modern") on `/mcp/{template}`, from a client that
 * has no session: the envelope and headers are checked (modernEnvelope.ts), then the request
 * goes to the backend session the gateway keeps for this caller and declared client
 * (ClientSessions.forModernClient: an old backend is initialized with the client's own info and
 * capabilities), and the answer comes back in the revision's shape (`resultType`, caching
 * hints, the server's info in `_meta`). `server/discover` is answered from the backend's
 * `initialize` result. Closing the response stream cancels the request, as the revision says.
 */
export const makeModernHandler = (deps: {
  readonly sessions: ClientSessionsShape
  readonly run: RunEffect
  readonly telemetry: ReturnType<typeof makeRequestTelemetry>
  readonly logDefect: (cause: Cause.Cause<unknown>) => void
  readonly forwardedHeaders: (req: http.IncomingMessage, template: string, requestId: string) => Record<string, string>
}) =>
(req: http.IncomingMessage, res: http.ServerResponse, requestId: string, template: string, owner: string, message: JsonRpcRequest) => {
  const request = readModernRequest(req, message)
  if ("status" in request) return sendJson(res, request.status, request.body)
  const { id, method } = request

  // Notifications before the answer (progress, log lines) turn the answer into an SSE stream.
  let streaming = false
  const event = (payload: unknown) => {
    if (res.destroyed) return
    if (!streaming) {
      streaming = true
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache, no-transform", "x-accel-buffering": "no" })
    }
    res.write(`event: message\ndata: ${JSON.stringify(payload)}\n\n`)
  }
  const answer = (status: number, payload: unknown, headers?: http.OutgoingHttpHeaders) => {
    if (!streaming) return sendJson(res, status, payload, headers)
    if (!res.destroyed) res.end(`event: message\ndata: ${JSON.stringify(payload)}\n\n`)
  }

  // An old backend may ask "its client" for sampling, elicitation or roots mid-request; the
  // revision has no server-initiated requests, and the gateway does not yet turn them into an
  // input_required result, so the server is told no.
  const onServerRequest = (serverRequest: JsonRpcRequest, reply: (response: JsonRpcResponse) => void) =>
    reply({
      jsonrpc: "2.0",
      id: serverRequest.id,
      error: { code: ErrorCode.MethodNotFound, message: `${serverRequest.method}: the client speaks MCP ${request.version}, which has no server-initiated requests` }
    })

  const once = Effect.flatMap(deps.sessions.forModernClient(template, owner, initializeParamsOf(request)), ({ session, result: initialized }) =>
    method === "server/discover"
      ? Effect.succeed({ answer: undefined as SessionAnswer | undefined, initialized, session })
      : Effect.map(
        session.request(method, request.params, { onNotification: event, onServerRequest }, deps.forwardedHeaders(req, template, requestId)),
        (answer) => ({ answer: answer as SessionAnswer | undefined, initialized, session })
      ))
  // A backend session that ended (its process restarted, the server forgot it) is the gateway's
  // to renew: the client has no session to lose. Once.
  const work = Effect.flatMap(once, (outcome) =>
    outcome.answer?._tag === "Gone" ? Effect.zipRight(deps.sessions.close(outcome.session.id), once) : Effect.succeed(outcome))

  const fork = deps.telemetry(deps.run, req, requestId, () => ({ "mcp.template": template, "mcp.method": method, "mcp.protocol_version": request.version }))
  const fiber = fork(work)
  // Closing the response stream is cancellation in this revision.
  const onClose = () => {
    if (!res.writableFinished) fiber.unsafeInterruptAsFork(FiberId.none)
  }
  res.once("close", onClose)
  fiber.addObserver((exit) => {
    res.off("close", onClose)
    if (Exit.isSuccess(exit)) return respond(id, exit.value.answer, exit.value.initialized)
    const failure = Cause.failureOption(exit.cause)
    if (Option.isSome(failure)) return refuse(id, failure.value)
    if (!Cause.isInterruptedOnly(exit.cause)) {
      deps.logDefect(exit.cause)
      answer(500, rpcError(id, ErrorCode.InternalError, "the gateway failed to handle the request; see its log"))
    }
  })

  const respond = (id: JsonRpcId, outcome: SessionAnswer | undefined, initialized: Record<string, unknown>) => {
    if (outcome === undefined) {
      // server/discover, from what the backend said when it was initialized for this client.
      return answer(200, {
        jsonrpc: "2.0",
        id,
        result: {
          supportedVersions: MODERN_PROTOCOL_VERSIONS,
          capabilities: modernCapabilities(initialized.capabilities),
          ...(typeof initialized.instructions === "string" ? { instructions: initialized.instructions } : {}),
          resultType: "complete",
          ttlMs: 0,
          cacheScope: "private",
          _meta: serverInfoMeta(initialized)
        }
      })
    }
    switch (outcome._tag) {
      case "Answer": {
        if ("error" in outcome.message) return answer(200, { jsonrpc: "2.0", id, error: outcome.message.error })
        const result = isObject(outcome.message.result) ? outcome.message.result : {}
        return answer(200, {
          jsonrpc: "2.0",
          id,
          result: {
            ...result,
            resultType: typeof result.resultType === "string" ? result.resultType : "complete",
            ...(CACHEABLE.has(method) && result.ttlMs === undefined ? { ttlMs: 0, cacheScope: "private" } : {}),
            _meta: { ...(isObject(result._meta) ? result._meta : {}), ...serverInfoMeta(initialized) }
          }
        })
      }
      case "Gone":
        return answer(503, rpcError(id, ErrorCode.InternalError, outcome.message), { "retry-after": "1" })
      case "Unavailable":
        return answer(503, rpcError(id, ErrorCode.InternalError, outcome.message), { "retry-after": String(outcome.retryAfterSeconds) })
    }
  }

  const refuse = (id: JsonRpcId, error: DispatchError | SessionLimitReached) => {
    const status = error._tag === "TemplateNotFound"
      ? 404
      : error._tag === "NoHealthyInstance" || (error._tag === "SessionLimitReached" && error.scope === "gateway")
      ? 503
      : error._tag === "SessionLimitReached"
      ? 429
      : 502
    const retryAfter = error._tag === "NoHealthyInstance" ? error.retryAfterSeconds : error._tag === "SessionLimitReached" ? 60 : undefined
    answer(status, rpcError(id, ErrorCode.InternalError, error.message), retryAfter === undefined ? undefined : { "retry-after": String(retryAfter) })
  }
}
