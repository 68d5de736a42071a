import { Cause, Effect, Exit, FiberId, Option } from "effect"
import type * as http from "node:http"
import type { DispatchError, SessionLimitReached } from "../../domain/GatewayError.js"
import { ErrorCode, isObject, type JsonRpcId, type JsonRpcRequest, type JsonRpcResponse } from "../../domain/JsonRpc.js"
import { LATEST_PROTOCOL_VERSION, MODERN_PROTOCOL_VERSIONS } from "../../domain/Protocol.js"
import type { ClientSession, SessionAnswer } from "../../proxy/ClientSession.js"
import type { ClientSessionsShape } from "../../proxy/ClientSessions.js"
import { sendJson } from "../raw.js"
import type { RunEffect } from "../raw.js"
import type { makeRequestTelemetry } from "../requestTelemetry.js"
import { META, type ModernRequest, readModernRequest } from "./modernEnvelope.js"
import { CallEvents, makeParkedCalls, type ParkedCall } from "./parkedCalls.js"
import { rpcError, sessionFailureAnswer } from "./rpc.js"

/** Results the revision requires caching hints on; without hints from the server, "do not cache". */
const CACHEABLE = new Set(["tools/list", "resources/list", "resources/templates/list", "resources/read", "prompts/list"])

/**
 * What a modern client is told the server can do: not `logging` (gone from the revision: its
 * `notifications/message` needs a per-request level), not the old revision's `tasks` (tasks
 * are an extension in the new one, which the gateway does not carry yet).
 */
const modernCapabilities = (capabilities: unknown): Record<string, unknown> => {
  if (!isObject(capabilities)) return {}
  const { logging: _logging, tasks: _tasks, ...rest } = capabilities
  return rest
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
  /** How long a call waits for the client to come back with the input its server asked for. */
  readonly inputWaitMs: number
}) => {
  const parked = makeParkedCalls<Exit.Exit<Outcome, DispatchError | SessionLimitReached>>(deps.inputWaitMs)

  const handle = (req: http.IncomingMessage, res: http.ServerResponse, requestId: string, template: string, owner: string, message: JsonRpcRequest) => {
    const request = readModernRequest(req, message)
    if ("status" in request) return sendJson(res, request.status, request.body)
    const { id, method } = request
    const responder = new Responder(res)
    if (method === "subscriptions/listen") return listen(req, responder, requestId, template, owner, request)
    const mayAsk = INPUT_METHODS.has(method)

    // A retry with the answers to what the server asked: the call it continues goes on.
    if (mayAsk && request.params.requestState !== undefined) {
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
      return follow(responder, id, call, owner, template, method)
    }

    // Notifications before the answer (progress) go to whichever response of the call is open.
    const target = { current: responder }
    const events = new CallEvents<Exit.Exit<Outcome, DispatchError | SessionLimitReached>>()
    const onServerRequest = (serverRequest: JsonRpcRequest, reply: (response: JsonRpcResponse) => void) => {
      if (mayAsk) return events.push({ _tag: "Ask", ask: { request: serverRequest, reply } })
      // Only tools/call, prompts/get and resources/read may ask the client for input.
      reply({
        jsonrpc: "2.0",
        id: serverRequest.id,
        error: { code: ErrorCode.MethodNotFound, message: `${serverRequest.method}: the client speaks MCP ${request.version}, where ${method} cannot ask it for input` }
      })
    }
    const once = Effect.flatMap(deps.sessions.forModernClient(template, owner, initializeParamsOf(request)), ({ session, result: initialized }) =>
      method === "server/discover"
        ? Effect.succeed<Outcome>({ answer: undefined, initialized, session })
        : Effect.map(
          session.request(method, request.params, { onNotification: (n) => target.current.event(n), onServerRequest }, deps.forwardedHeaders(req, template, requestId)),
          (answer): Outcome => ({ answer, initialized, session })
        ))
    // A backend session that ended (its process restarted, the server forgot it) is the gateway's
    // to renew: the client has no session to lose. Once.
    const work = Effect.flatMap(once, (outcome) =>
      outcome.answer?._tag === "Gone" ? Effect.zipRight(deps.sessions.close(outcome.session.id), once) : Effect.succeed(outcome))

    const fork = deps.telemetry(deps.run, req, requestId, () => ({ "mcp.template": template, "mcp.method": method, "mcp.protocol_version": request.version }))
    const fiber = fork(work)
    fiber.addObserver((exit) => events.push({ _tag: "Done", outcome: exit }))
    const call: ParkedCall<Exit.Exit<Outcome, DispatchError | SessionLimitReached>> = {
      owner,
      template,
      method,
      events,
      asked: new Map(),
      cancel: () => fiber.unsafeInterruptAsFork(FiberId.none),
      retarget: (next) => void (target.current = next as Responder)
    }
    follow(responder, id, call, owner, template, method)
  }

  /**
   * Answers a client request with the call's next event: its outcome, or the server's question
   * as an `input_required` result (the call waits, parked, for the client's retry).
   */
  const follow = (
    responder: Responder,
    id: JsonRpcId,
    call: ParkedCall<Exit.Exit<Outcome, DispatchError | SessionLimitReached>>,
    owner: string,
    template: string,
    method: string
  ) => {
    // Closing the response stream is cancellation in this revision.
    const onClose = () => {
      if (!responder.res.writableFinished) call.cancel()
    }
    responder.res.once("close", onClose)
    call.events.next((event) => {
      responder.res.off("close", onClose)
      if (event._tag === "Done") return finish(responder, id, method, event.outcome)
      const key = `input-${++asks}`
      const asked = new Map([[key, event.ask]])
      const state = parked.park({ ...call, owner, template, method, asked })
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

  const finish = (responder: Responder, id: JsonRpcId, method: string, exit: Exit.Exit<Outcome, DispatchError | SessionLimitReached>) => {
    if (Exit.isSuccess(exit)) return respond(responder, id, method, exit.value.answer, exit.value.initialized)
    const failure = Cause.failureOption(exit.cause)
    if (Option.isSome(failure)) return refuse(responder, id, failure.value)
    if (!Cause.isInterruptedOnly(exit.cause)) {
      deps.logDefect(exit.cause)
      responder.answer(500, rpcError(id, ErrorCode.InternalError, "the gateway failed to handle the request; see its log"))
    }
  }

  const respond = (responder: Responder, id: JsonRpcId, method: string, outcome: SessionAnswer | undefined, initialized: Record<string, unknown>) => {
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
        if ("error" in outcome.message) return responder.answer(200, { jsonrpc: "2.0", id, error: outcome.message.error })
        const result = isObject(outcome.message.result) ? outcome.message.result : {}
        return responder.answer(200, {
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
        return responder.answer(503, rpcError(id, ErrorCode.InternalError, outcome.message), { "retry-after": "1" })
      case "Unavailable":
        return responder.answer(503, rpcError(id, ErrorCode.InternalError, outcome.message), { "retry-after": String(outcome.retryAfterSeconds) })
    }
  }

  const refuse = (responder: Responder, id: JsonRpcId, error: DispatchError | SessionLimitReached) => {
    const answer = sessionFailureAnswer(id, error)
    responder.answer(answer.status, answer.body, answer.headers)
  }

  /**
   * `subscriptions/listen`: a stream of what the server says outside requests, filtered as the
   * client asked. The backend session the gateway keeps for this client forwards its list
   * changes and resource updates here (resources subscribed on the old server with
   * `resources/subscribe`, unsubscribed when the last stream that wanted them closes). The
   * stream opens with the acknowledgement (what is honoured: only what the server offers),
   * carries `: keepalive` comments, and ends with a response to the listen request when the
   * backend session ends.
   */
  const listen = (req: http.IncomingMessage, responder: Responder, requestId: string, template: string, owner: string, request: ModernRequest) => {
    const { id } = request
    const filter = request.params.notifications
    if (!isObject(filter)) {
      return responder.answer(200, rpcError(id, ErrorCode.InvalidParams, "Invalid params: 'notifications' is required and must be a valid SubscriptionFilter"))
    }
    const wanted = Array.isArray(filter.resourceSubscriptions) ? filter.resourceSubscriptions.filter((u): u is string => typeof u === "string") : []
    const open = Effect.flatMap(deps.sessions.forModernClient(template, owner, initializeParamsOf(request)), ({ session, result: initialized }) => {
      const capabilities = isObject(initialized.capabilities) ? initialized.capabilities : {}
      const resources = isObject(capabilities.resources) ? capabilities.resources : {}
      const uris = resources.subscribe === true ? wanted : []
      return Effect.map(
        Effect.forEach(uris, (uri) => Effect.map(subscribe(session, uri), (ok) => (ok ? [uri] : [])), { concurrency: "unbounded" }),
        (subscribed) => ({ session, initialized, capabilities, uris: subscribed.flat() })
      )
    })
    deps.telemetry(deps.run, req, requestId, () => ({ "mcp.template": template, "mcp.method": "subscriptions/listen" }))(open).addObserver((exit) => {
      if (Exit.isFailure(exit)) return finish(responder, id, "subscriptions/listen", exit as Exit.Exit<never, DispatchError | SessionLimitReached>)
      const { session, initialized, capabilities, uris } = exit.value
      const offers = (name: string) => isObject(capabilities[name]) && (capabilities[name] as Record<string, unknown>).listChanged === true
      const honoured = {
        ...(filter.toolsListChanged === true && offers("tools") ? { toolsListChanged: true } : {}),
        ...(filter.promptsListChanged === true && offers("prompts") ? { promptsListChanged: true } : {}),
        ...(filter.resourcesListChanged === true && offers("resources") ? { resourcesListChanged: true } : {}),
        ...(uris.length > 0 ? { resourceSubscriptions: uris } : {})
      }
      const tag = (params: unknown) => ({ ...(isObject(params) ? params : {}), _meta: { ...(isObject(params) && isObject(params._meta) ? params._meta : {}), [META.subscriptionId]: id } })
      const end = () => {
        responder.answer(200, { jsonrpc: "2.0", id, result: { resultType: "complete", _meta: { [META.subscriptionId]: id, ...serverInfoMeta(initialized) } } })
      }
      responder.event({ jsonrpc: "2.0", method: "notifications/subscriptions/acknowledged", params: tag({ notifications: honoured }) })
      if (Object.keys(honoured).length === 0) return end()
      const listener = (message: { readonly method: string; readonly params?: unknown }) => {
        const wantedHere = message.method === "notifications/tools/list_changed"
          ? honoured.toolsListChanged
          : message.method === "notifications/prompts/list_changed"
          ? honoured.promptsListChanged
          : message.method === "notifications/resources/list_changed"
          ? honoured.resourcesListChanged
          : message.method === "notifications/resources/updated"
          ? isObject(message.params) && uris.includes(String(message.params.uri))
          : false
        if (wantedHere) responder.event({ jsonrpc: "2.0", method: message.method, params: tag(message.params) })
      }
      session.listeners.add(listener)
      // The stream keeps the session in use (it must not idle out under a listening client).
      const keepAlive = setInterval(() => {
        session.lastSeen = Date.now()
        responder.comment("keepalive")
      }, KEEPALIVE_MS)
      keepAlive.unref()
      const sessionEnded = () => {
        cleanUp()
        end()
      }
      session.onClose.add(sessionEnded)
      let cleaned = false
      const cleanUp = () => {
        if (cleaned) return
        cleaned = true
        clearInterval(keepAlive)
        session.listeners.delete(listener)
        session.onClose.delete(sessionEnded)
        for (const uri of uris) deps.run(unsubscribe(session, uri))
      }
      responder.res.once("close", cleanUp)
    })
  }

  /** Resource subscriptions on a backend session, counted: several listen streams may want the same resource. */
  const subscribed = new WeakMap<ClientSession, Map<string, number>>()
  const subscribe = (session: ClientSession, uri: string): Effect.Effect<boolean> => {
    const counts = subscribed.get(session) ?? new Map<string, number>()
    subscribed.set(session, counts)
    const count = counts.get(uri) ?? 0
    counts.set(uri, count + 1)
    if (count > 0) return Effect.succeed(true)
    return Effect.map(session.request("resources/subscribe", { uri }, {}), (answer) => {
      const ok = answer._tag === "Answer" && !("error" in answer.message)
      if (!ok) counts.set(uri, (counts.get(uri) ?? 1) - 1)
      return ok
    })
  }
  const unsubscribe = (session: ClientSession, uri: string): Effect.Effect<void> => {
    const counts = subscribed.get(session)
    const count = counts?.get(uri) ?? 0
    if (count > 1) return Effect.sync(() => counts!.set(uri, count - 1))
    counts?.delete(uri)
    return Effect.asVoid(session.request("resources/unsubscribe", { uri }, {}))
  }

  return handle
}

/** How often an idle listen stream says it is alive (proxies drop silent connections). */
const KEEPALIVE_MS = 15_000

interface Outcome {
  readonly answer: SessionAnswer | undefined
  readonly initialized: Record<string, unknown>
  readonly session: ClientSession
}

/** Methods whose server may ask the client for input (the revision's input_required results). */
const INPUT_METHODS: ReadonlySet<string> = new Set(["tools/call", "prompts/get", "resources/read"])

/**
 * One HTTP response of a modern request: a single JSON answer, or, when notifications come
 * first (progress), an SSE stream that the answer ends.
 */
class Responder {
  private streaming = false
  constructor(readonly res: http.ServerResponse) {}

  event(payload: unknown) {
    if (this.res.writableEnded || this.res.destroyed) return
    if (!this.streaming) {
      this.streaming = true
      this.res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache, no-transform", "x-accel-buffering": "no" })
    }
    this.res.write(`event: message\ndata: ${JSON.stringify(payload)}\n\n`)
  }

  /** An SSE comment (`: text`), once the stream is open. */
  comment(text: string) {
    if (this.streaming && !this.res.writableEnded && !this.res.destroyed) this.res.write(`: ${text}\n\n`)
  }

  answer(status: number, payload: unknown, headers?: http.OutgoingHttpHeaders) {
    if (!this.streaming) return sendJson(this.res, status, payload, headers)
    if (!this.res.writableEnded && !this.res.destroyed) this.res.end(`event: message\ndata: ${JSON.stringify(payload)}\n\n`)
  }
}
