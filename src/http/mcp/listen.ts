import { type Cause, Effect, Exit } from "effect"
import type * as http from "node:http"
import type { Identity } from "../../domain/Identity.js"
import { ErrorCode, isObject } from "../../domain/JsonRpc.js"
import type { EndpointSessionsShape } from "../../sessions/EndpointSessions.js"
import type { RunEffect } from "../raw.js"
import type { makeRequestTelemetry } from "../requestTelemetry.js"
import { META } from "../../domain/ModernProtocol.js"
import type { ModernRequest } from "./modernEnvelope.js"
import { initializeParamsOf, type Responder, serverInfoMeta } from "./modernResponse.js"
import { rpcError } from "./rpc.js"

/** How often an idle listen stream says it is alive (proxies drop silent connections). */
const KEEPALIVE_MS = 15_000

/**
 * `subscriptions/listen` of a modern client: a stream of what the server says outside requests,
 * filtered as the client asked. The backend session the gateway keeps for this client forwards
 * its list changes and resource updates here (resources held on the old server through
 * `EndpointSession.holdSubscription`, so several streams may share one). The stream opens with
 * the acknowledgement (what is honoured: only what the server offers), carries `: keepalive`
 * comments, and ends with a response to the listen request when the backend session ends.
 */
export const makeListenHandler = (deps: {
  readonly sessions: EndpointSessionsShape
  readonly run: RunEffect
  readonly telemetry: ReturnType<typeof makeRequestTelemetry>
  readonly logDefect: (cause: Cause.Cause<unknown>) => void
}) =>
(req: http.IncomingMessage, responder: Responder, requestId: string, template: string, caller: Identity, request: ModernRequest) => {
  const { id } = request
  const filter = request.params.notifications
  if (!isObject(filter)) {
    return responder.answer(200, rpcError(id, ErrorCode.InvalidParams, "Invalid params: 'notifications' is required and must be a valid SubscriptionFilter"))
  }
  const wanted = Array.isArray(filter.resourceSubscriptions) ? filter.resourceSubscriptions.filter((u): u is string => typeof u === "string") : []
  const open = Effect.flatMap(deps.sessions.forModernClient(template, caller, initializeParamsOf(request)), ({ session, result: initialized }) => {
    // A balanced session (session_affinity "none") has no backend of its own that could listen:
    // nothing is honoured, and the stream says so at once.
    const capabilities = session.canListen && isObject(initialized.capabilities) ? initialized.capabilities : {}
    const resources = isObject(capabilities.resources) ? capabilities.resources : {}
    const uris = resources.subscribe === true ? wanted : []
    return Effect.map(
      Effect.forEach(uris, (uri) => Effect.map(session.holdSubscription(uri), (ok) => (ok ? [uri] : [])), { concurrency: "unbounded" }),
      (held) => ({ session, initialized, capabilities, uris: held.flat() })
    )
  })
  deps.telemetry(deps.run, req, requestId, () => ({ "mcp.template": template, "mcp.method": "subscriptions/listen" }))(open).addObserver((exit) => {
    if (Exit.isFailure(exit)) return responder.failed(id, exit, deps.logDefect)
    const { session, initialized, capabilities, uris } = exit.value
    const offers = (name: string) => isObject(capabilities[name]) && (capabilities[name] as Record<string, unknown>).listChanged === true
    const honoured = {
      ...(filter.toolsListChanged === true && offers("tools") ? { toolsListChanged: true } : {}),
      ...(filter.promptsListChanged === true && offers("prompts") ? { promptsListChanged: true } : {}),
      ...(filter.resourcesListChanged === true && offers("resources") ? { resourcesListChanged: true } : {}),
      ...(uris.length > 0 ? { resourceSubscriptions: uris } : {})
    }
    const tag = (params: unknown) => ({
      ...(isObject(params) ? params : {}),
      _meta: { ...(isObject(params) && isObject(params._meta) ? params._meta : {}), [META.subscriptionId]: id }
    })
    const end = () =>
      responder.answer(200, { jsonrpc: "2.0", id, result: { resultType: "complete", _meta: { [META.subscriptionId]: id, ...serverInfoMeta(initialized) } } })
    responder.event({ jsonrpc: "2.0", method: "notifications/subscriptions/acknowledged", params: tag({ notifications: honoured }) })
    if (Object.keys(honoured).length === 0) return end()

    const wantedHere = (message: { readonly method: string; readonly params?: unknown }) => {
      switch (message.method) {
        case "notifications/tools/list_changed":
          return honoured.toolsListChanged === true
        case "notifications/prompts/list_changed":
          return honoured.promptsListChanged === true
        case "notifications/resources/list_changed":
          return honoured.resourcesListChanged === true
        case "notifications/resources/updated":
          return isObject(message.params) && uris.includes(String(message.params.uri))
        default:
          return false
      }
    }
    const listener = (message: { readonly method: string; readonly params?: unknown }) => {
      if (wantedHere(message)) responder.event({ jsonrpc: "2.0", method: message.method, params: tag(message.params) })
    }
    // (A session with a listener is busy: it does not idle out under a listening client.)
    session.listeners.add(listener)
    // raw timer: a heartbeat on the client's socket (it keeps proxies from cutting an idle
    // stream), real time whatever clock the gateway's logic runs on; one per open stream.
    const keepAlive = setInterval(() => responder.comment("keepalive"), KEEPALIVE_MS)
    keepAlive.unref()
    let cleaned = false
    const cleanUp = () => {
      if (cleaned) return
      cleaned = true
      clearInterval(keepAlive)
      session.listeners.delete(listener)
      session.onClose.delete(sessionEnded)
      for (const uri of uris) deps.run(session.dropSubscription(uri))
    }
    const sessionEnded = () => {
      cleanUp()
      end()
    }
    session.onClose.add(sessionEnded)
    responder.res.once("close", cleanUp)
  })
}
