import { type Cause, Effect, Exit, FiberId } from "effect"
import type * as http from "node:http"
import type { DispatchError, SessionLimitReached } from "../../domain/GatewayError.js"
import type { Identity } from "../../domain/Identity.js"
import { ErrorCode, isObject, type JsonRpcId, type JsonRpcRequest, type JsonRpcResponse } from "../../domain/JsonRpc.js"
import { collectToolHeaders, ModernErrorCode, paramHeaderMismatch } from "../../domain/ModernProtocol.js"
import { MODERN_PROTOCOL_VERSIONS } from "../../domain/Protocol.js"
import type { EndpointSession, SessionAnswer } from "../../sessions/EndpointSession.js"
import type { EndpointSessionsShape } from "../../sessions/EndpointSessions.js"
import { type RunEffect, sendJson } from "../raw.js"
import type { makeRequestTelemetry } from "../requestTelemetry.js"
import { makeListenHandler } from "./listen.js"
import { readModernRequest } from "./modernEnvelope.js"
import { initializeParamsOf, Responder, serverInfoMeta } from "./modernResponse.js"
import { CallEvents, isParkedState, makeParkedCalls, type ParkedCall } from "./parkedCalls.js"
import { rpcError } from "./rpc.js"

/** Results the revision requires caching hints on; without hints from the server, "do not cache". */
const CACHEABLE = new Set(["tools/list", "resources/list", "resources/templates/list", "resources/read", "prompts/list"])

/**
 * What a modern client is told the server can do: not `logging` (gone from the revision: its
 * `notifications/message` needs a per-request level), not the old revision's `tasks` (tasks
 * are an extension in the new one, which the gateway does not carry yet).
 */
const modernCapabilities = (capabilities: unknown): Record<string, unknown> => {
  const { tasks: _tasks, ...rest } = withoutLogging(capabilities)
  return rest
}

/** A modern server's capabilities as a modern client sees them: logging is the old revision's. */
const withoutLogging = (capabilities: unknown): Record<string, unknown> => {
  if (!isObject(capabilities)) return {}
  const { logging: _logging, ...rest } = capabilities
  return rest
}

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
  readonly sessions: EndpointSessionsShape
  readonly run: RunEffect
  readonly telemetry: ReturnType<typeof makeRequestTelemetry>
  readonly logDefect: (cause: Cause.Cause<unknown>) => void
  readonly forwardedHeaders: (req: http.IncomingMessage, template: string, requestId: string) => Record<string, string>
  /** How long a call waits for the client to come back with the input its server asked for. */
  readonly inputWaitMs: number
}) => {
  const parked = makeParkedCalls<CallExit, Responder>(deps.inputWaitMs)
  const listen = makeListenHandler(deps)

  const handle = (req: http.IncomingMessage, res: http.ServerResponse, requestId: string, template: string, caller: Identity, message: JsonRpcRequest) => {
    const owner = caller.id
    const request = readModernRequest(req, message)
    if ("status" in request) return sendJson(res, request.status, request.body)
    const { id, method } = request
    const responder = new Responder(res)
    if (method === "subscriptions/listen") return listen(req, responder, requestId, template, caller, request)
    const mayAsk = INPUT_METHODS.has(method)

    // Answers that are not an object of answers are the client's mistake, whoever would have read them.
    if (mayAsk && "inputResponses" in request.params) {
      const responses = request.params.inputResponses
      if (!isObject(responses) || Array.isArray(responses) || Object.values(responses).some((r) => !isObject(r))) {
        return responder.answer(200, rpcError(id, ErrorCode.InvalidParams, "Invalid params: inputResponses must be an object of input responses, one object per key"))
      }
    }
    // A retry with the answers to what the server asked: the call it continues goes on.
    if (mayAsk && isParkedState(request.params.requestState)) {
      const call = parked.take(request.params.requestState, owner, template, method)
      if (call === undefined) {
        return responder.answer(200, rpcError(id, ErrorCode.InvalidParams, "Invalid or expired requestState"))
      }
      const responses = isObject(request.params.inputResponses) ? request.params.inputResponses : {}
      for (const [key, ask] of call.asked) {
        const response = responses[key]
        ask.reply(
          response === undefined
            ? { jsonrpc: "2.0", id: ask.request.id, error: { code: ErrorCode.InvalidParams, message: `the client gave no answer to ${ask.request.method}` } }
            : { jsonrpc: "2.0", id: ask.request.id, result: isObject(response) ? response : {} }
        )
      }
      call.retarget(responder)
      return follow(responder, id, call)
    }

    // Notifications before the answer (progress) go to whichever response of the call is open.
    const target = { current: responder }
    const events = new CallEvents<CallExit>()
    const onServerRequest = (serverRequest: JsonRpcRequest, reply: (response: JsonRpcResponse) => void) => {
      if (mayAsk) return events.push({ _tag: "Ask", ask: { request: serverRequest, reply } })
      // Only tools/call, prompts/get and resources/read may ask the client for input.
      reply({
        jsonrpc: "2.0",
        id: serverRequest.id,
        error: { code: ErrorCode.MethodNotFound, message: `${serverRequest.method}: the client speaks MCP ${request.version}, where ${method} cannot ask it for input` }
      })
    }
    const clientOf = initializeParamsOf(request)
    const once = Effect.flatMap(deps.sessions.forModernClient(template, caller, clientOf), ({ session, result: initialized }) => {
      if (method === "server/discover") return Effect.succeed<Outcome>({ answer: undefined, initialized, session })
      // A state that is not the gateway's is a modern server's own; an old server has none.
      // (A balanced session's next instance is not known yet: the state goes on, for its server to judge.)
      if (request.params.requestState !== undefined && session.backend !== undefined && session.backendDiscover === undefined) {
        return Effect.succeed<Outcome>({ answer: { _tag: "Answer", message: { error: { code: ErrorCode.InvalidParams, message: "Invalid or expired requestState" } } }, initialized, session })
      }
      const modernBackend = session.backendDiscover !== undefined
      const clientParamHeaders = paramHeadersOf(req)
      if (method === "tools/call" && !modernBackend) {
        // A modern server checks these itself (it gets the client's own); for an old one the gateway checks them.
        const mismatch = paramHeaderMismatch(session.toolHeaders, request.params, (name) => clientParamHeaders[name])
        if (mismatch !== undefined) {
          return Effect.succeed<Outcome>({
            answer: { _tag: "Answer", message: { error: { code: ModernErrorCode.HeaderMismatch, message: `Bad Request: the request headers and body disagree: ${mismatch.problem}`, data: { mismatch } } } },
            initialized,
            session
          })
        }
      }
      return Effect.map(
        session.request(
          method,
          request.params,
          // A modern server's input_required goes to the client as it is; an old server's questions become one (onServerRequest).
          {
            onNotification: (n) => target.current.event(n),
            onServerRequest,
            passInputRequired: true,
            client: clientOf,
            clientParamHeaders: modernBackend && method === "tools/call" ? clientParamHeaders : undefined
          },
          deps.forwardedHeaders(req, template, requestId)
        ),
        (answer): Outcome => {
          // The tools' mirrored arguments, for checking this client's later calls (above).
          if (method === "tools/list" && answer._tag === "Answer" && "result" in answer.message && isObject(answer.message.result)) {
            collectToolHeaders(answer.message.result.tools, session.toolHeaders)
          }
          return { answer, initialized, session }
        }
      )
    })
    // A backend session that ended (its process restarted, the server forgot it) is the gateway's
    // to renew: the client has no session to lose. Once.
    const work = Effect.flatMap(once, (outcome) =>
      outcome.answer?._tag === "Gone" ? Effect.zipRight(deps.sessions.close(outcome.session.id), once) : Effect.succeed(outcome))

    const fork = deps.telemetry(deps.run, req, requestId, () => ({ "mcp.template": template, "mcp.method": method, "mcp.protocol_version": request.version }))
    const fiber = fork(work)
    fiber.addObserver((exit) => events.push({ _tag: "Done", outcome: exit }))
    const call: ParkedCall<CallExit, Responder> = {
      owner,
      template,
      method,
      events,
      asked: new Map(),
      cancel: () => fiber.unsafeInterruptAsFork(FiberId.none),
      retarget: (next) => void (target.current = next)
    }
    follow(responder, id, call)
  }

  /**
   * Answers a client request with the call's next event: its outcome, or the server's question
   * as an `input_required` result (the call waits, parked, for the client's retry).
   */
  const follow = (responder: Responder, id: JsonRpcId, call: ParkedCall<CallExit, Responder>) => {
    // Closing the response stream is cancellation in this revision.
    const onClose = () => {
      if (!responder.res.writableFinished) call.cancel()
    }
    responder.res.once("close", onClose)
    call.events.next((event) => {
      responder.res.off("close", onClose)
      if (event._tag === "Done") {
        const exit = event.outcome
        return Exit.isSuccess(exit)
          ? respond(responder, id, call.method, exit.value.answer, exit.value.initialized, exit.value.session.backendDiscover)
          : responder.failed(id, exit, deps.logDefect)
      }
      const key = `input-${++asks}`
      const state = parked.park({ ...call, asked: new Map([[key, event.ask]]) })
      responder.answer(200, {
        jsonrpc: "2.0",
        id,
        result: {
          resultType: "input_required",
          inputRequests: { [key]: { method: event.ask.request.method, params: event.ask.request.params ?? {} } },
          requestState: state
        }
      })
    })
  }
  let asks = 0

  const respond = (
    responder: Responder,
    id: JsonRpcId,
    method: string,
    outcome: SessionAnswer | undefined,
    initialized: Record<string, unknown>,
    discovered: Record<string, unknown> | undefined
  ) => {
    if (outcome === undefined && discovered !== undefined) {
      // server/discover of a modern server: its own answer, the versions narrowed to what the gateway speaks too.
      const supported = Array.isArray(discovered.supportedVersions) ? discovered.supportedVersions : []
      return responder.answer(200, {
        jsonrpc: "2.0",
        id,
        result: {
          supportedVersions: MODERN_PROTOCOL_VERSIONS.filter((v) => supported.includes(v)),
          capabilities: withoutLogging(discovered.capabilities),
          ...(typeof discovered.instructions === "string" ? { instructions: discovered.instructions } : {}),
          resultType: "complete",
          ttlMs: typeof discovered.ttlMs === "number" && discovered.ttlMs >= 0 ? discovered.ttlMs : 0,
          cacheScope: discovered.cacheScope === "public" ? "public" : "private",
          _meta: { ...(isObject(discovered._meta) ? discovered._meta : {}), ...serverInfoMeta(initialized) }
        }
      })
    }
    if (outcome === undefined) {
      // server/discover, from what the backend said when it was initialized for this client.
      return responder.answer(200, {
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
        if ("error" in outcome.message) {
          // In-band, but for a capability the client did not declare, or headers that disagree with the body: a 400 wherever it comes from.
          const code = outcome.message.error.code
          const status = code === ModernErrorCode.MissingRequiredClientCapability || code === ModernErrorCode.HeaderMismatch ? 400 : 200
          return responder.answer(status, { jsonrpc: "2.0", id, error: outcome.message.error })
        }
        const result = isObject(outcome.message.result) ? outcome.message.result : {}
        return responder.answer(200, {
          jsonrpc: "2.0",
          id,
          result: {
            ...result,
            resultType: typeof result.resultType === "string" ? result.resultType : "complete",
            ...(CACHEABLE.has(method) && result.ttlMs === undefined && result.resultType !== "input_required" ? { ttlMs: 0, cacheScope: "private" } : {}),
            // The server's own info when it gives it (a modern one does, for the instance that answered).
            _meta: { ...serverInfoMeta(initialized), ...(isObject(result._meta) ? result._meta : {}) }
          }
        })
      }
      case "Gone":
        return responder.answer(503, rpcError(id, ErrorCode.InternalError, outcome.message), { "retry-after": "1" })
      case "Unavailable":
        return responder.answer(503, rpcError(id, ErrorCode.InternalError, outcome.message), { "retry-after": String(outcome.retryAfterSeconds) })
      case "Failed":
        return responder.answer(outcome.status, { jsonrpc: "2.0", id, error: outcome.error }, outcome.headers)
    }
  }

  return handle
}

interface Outcome {
  readonly answer: SessionAnswer | undefined
  readonly initialized: Record<string, unknown>
  readonly session: EndpointSession
}

/** How a modern call ends, as its events deliver it. */
type CallExit = Exit.Exit<Outcome, DispatchError | SessionLimitReached>

/** The client's `Mcp-Param-*` headers, by lower-cased name. */
const paramHeadersOf = (req: http.IncomingMessage): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const name in req.headers) {
    const value = req.headers[name]
    if (name.startsWith("mcp-param-") && typeof value === "string") out[name] = value
  }
  return out
}

/** Methods whose server may ask the client for input (the revision's input_required results). */
const INPUT_METHODS: ReadonlySet<string> = new Set(["tools/call", "prompts/get", "resources/read"])
