import { Context, Effect, ExecutionStrategy, Exit, Fiber, Layer, Schedule, Scope, Stream } from "effect"
import { randomBytes } from "node:crypto"
import { AllAttemptsFailed, type FailedAttempt, type NoHealthyInstance, type TemplateNotFound } from "../domain/GatewayError.js"
import { ErrorCode, isObject, isRequest, type JsonRpcRequest, type JsonRpcResponse } from "../domain/JsonRpc.js"
import { DEFAULT_LOAD_BALANCER } from "../domain/LoadBalancer.js"
import { LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from "../domain/Protocol.js"
import type { InstanceState } from "../registry/InstanceState.js"
import { Registry } from "../registry/Registry.js"
import type { Connection } from "../transport/Connection.js"
import { Transport } from "../transport/Transport.js"
import { Dispatcher } from "./Dispatcher.js"
import { SessionOutbox } from "./SessionOutbox.js"

/** A session the gateway holds for an MCP client of `/mcp/{template}`, pinned to one instance. */
export interface ClientSession {
  /** The gateway's own session id (what the client sends as MCP-Session-Id); never the backend's. */
  readonly id: string
  readonly template: string
  /** The instance the session is pinned to; undefined with `session_affinity: "none"` (each request balanced). */
  readonly instance: InstanceState | undefined
  readonly protocolVersion: string
  readonly backend: Connection
  /** The backend serves this session alone (HTTP session, own process): the client's notifications go to it. */
  readonly ownBackend: boolean
  /** The backend's generation when the session began (see Connection.generation). */
  readonly generation: number
  readonly scope: Scope.CloseableScope
  /** Requests in flight by the client's JSON-RPC id (JSON-encoded), so that notifications/cancelled can stop them. */
  readonly inflight: Map<string, Fiber.RuntimeFiber<unknown, unknown>>
  /**
   * Server→client requests relayed to the client and not answered yet, by the id the gateway
   * gave them; `reply` sends the client's answer back to the server under the server's own id.
   */
  readonly serverRequests: Map<string, (response: JsonRpcResponse) => void>
  nextServerRequest: number
  /** What the server sends outside requests, for the client's standing GET stream (stream "0"). */
  readonly outbox: SessionOutbox
  /**
   * The session's SSE streams by key, for resumption with Last-Event-ID (`{key}-{seq}`): "0" is
   * the standing stream, requests that answer with a stream get "1", "2", ... (kept a while after
   * they finish).
   */
  readonly streams: Map<string, SessionOutbox>
  nextStream: number
  /** Resources the client subscribed to: on a shared process, updates go only to their subscribers. */
  readonly subscriptions: Set<string>
  /** Called when the session ends (to close its open streams). */
  readonly onClose: Set<() => void>
  lastSeen: number
}

/** Relays a server request to the client under a gateway id; the answer goes back through `reply`. */
export const relayServerRequest = (
  session: ClientSession,
  request: JsonRpcRequest,
  reply: (response: JsonRpcResponse) => void,
  send: (message: unknown) => void
): string => {
  const relayId = `gateway-${session.nextServerRequest++}`
  session.serverRequests.set(relayId, reply)
  send({ ...request, id: relayId })
  return relayId
}

export interface ClientSessionsShape {
  /**
   * Picks an instance with the template's strategy, opens a backend session for the client on
   * it (failing over to another instance if it cannot), and answers the client's `initialize`.
   */
  readonly open: (
    template: string,
    initializeParams: Record<string, unknown>
  ) => Effect.Effect<
    { readonly session: ClientSession; readonly result: Record<string, unknown> },
    TemplateNotFound | NoHealthyInstance | AllAttemptsFailed
  >
  readonly get: (id: string) => ClientSession | undefined
  /** Ends a session: stops its requests in flight and closes what was opened for it. False when unknown. */
  readonly close: (id: string) => Effect.Effect<boolean>
  readonly size: () => number
}

/** How often sessions idle past their template's session_idle_timeout are ended (clients that vanished without DELETE). */
const REAP_EVERY = "10 seconds"

/** 128 bits from the system's CSPRNG, as the MCP spec asks of session ids. */
const newSessionId = () => randomBytes(16).toString("hex")

export class ClientSessions extends Context.Tag("mcp-gateway/ClientSessions")<ClientSessions, ClientSessionsShape>() {
  static readonly layer: Layer.Layer<ClientSessions, never, Registry | Dispatcher | Transport> = Layer.scoped(
    ClientSessions,
    Effect.gen(function*() {
      const registry = yield* Registry
      const dispatcher = yield* Dispatcher
      const transport = yield* Transport
      const layerScope = yield* Effect.scope
      const sessions = new Map<string, ClientSession>()

      const close = (id: string) =>
        Effect.suspend(() => {
          const session = sessions.get(id)
          if (session === undefined) return Effect.succeed(false)
          sessions.delete(id)
          for (const closed of session.onClose) closed()
          session.onClose.clear()
          const fibers = Array.from(session.inflight.values())
          session.inflight.clear()
          return Fiber.interruptAll(fibers).pipe(
            Effect.zipRight(Scope.close(session.scope, Exit.void)),
            Effect.as(true)
          )
        })

      const newSession = (
        template: string,
        instance: InstanceState | undefined,
        protocolVersion: string,
        backend: Connection,
        ownBackend: boolean,
        scope: Scope.CloseableScope
      ): ClientSession => {
        const standing = new SessionOutbox()
        const session: ClientSession = {
          id: newSessionId(),
          template,
          instance,
          protocolVersion,
          backend,
          ownBackend,
          generation: backend.generation(),
          scope,
          inflight: new Map(),
          serverRequests: new Map(),
          nextServerRequest: 1,
          outbox: standing,
          streams: new Map([["0", standing]]),
          nextStream: 1,
          subscriptions: new Set(),
          onClose: new Set(),
          lastSeen: Date.now()
        }
        sessions.set(session.id, session)
        return session
      }

      /**
       * `session_affinity: "none"`: the session is the gateway's alone; each request is balanced
       * on its own through the Dispatcher (with its failover), over the instances' shared
       * connections. For stateless servers.
       */
      const openBalanced = (template: string, initializeParams: Record<string, unknown>) =>
        Effect.gen(function*() {
          const first = yield* dispatcher.selectInstance(template, "initialize")
          const result = yield* transport.initializeResult(first.definition).pipe(
            Effect.mapError((e) => new AllAttemptsFailed({ template, attempts: [{ instanceId: first.id, message: e.message }] }))
          )
          const requested = initializeParams.protocolVersion
          const protocolVersion = typeof requested === "string" && SUPPORTED_PROTOCOL_VERSIONS.includes(requested)
            ? requested
            : LATEST_PROTOCOL_VERSION
          const balanced: Connection = {
            request: (method, params, options) =>
              dispatcher.call(template, method, params, { relay: options }).pipe(
                Effect.map((r): JsonRpcResponse => ({ jsonrpc: "2.0", id: 0, result: r.result })),
                Effect.catchAll((e) =>
                  Effect.succeed<JsonRpcResponse>({
                    jsonrpc: "2.0",
                    id: 0,
                    error: e._tag === "BackendError" ? e.error : { code: ErrorCode.InternalError, message: e.message }
                  })
                )
              ),
            initialize: Effect.succeed(result),
            listen: () => Effect.void,
            notify: () => Effect.void,
            generation: () => 0,
            alive: () => true,
            close: Effect.void
          }
          const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
          const session = newSession(template, undefined, protocolVersion, balanced, false, scope)
          return { session, result: { ...result, protocolVersion } }
        })

      const open: ClientSessionsShape["open"] = (template, initializeParams) =>
        registry.template(template)?.settings.session_affinity === "none"
          ? openBalanced(template, initializeParams)
          : openPinned(template, initializeParams)

      const openPinned: ClientSessionsShape["open"] = (template, initializeParams) =>
        Effect.gen(function*() {
          const tried = new Set<string>()
          const failures: Array<FailedAttempt> = []
          const settings = registry.template(template)?.settings
          const maxAttempts = 1 + (settings?.max_retries ?? 0)
          while (tried.size < maxAttempts) {
            const instance = yield* dispatcher.selectInstance(template, "initialize", tried).pipe(
              Effect.catchTag("NoHealthyInstance", (e): Effect.Effect<never, NoHealthyInstance | AllAttemptsFailed> =>
                tried.size === 0 ? Effect.fail(e) : Effect.fail(new AllAttemptsFailed({ template, attempts: failures })))
            )
            tried.add(instance.id)
            const ownProcess = settings?.session_process === "per_session" && instance.definition.transport !== "http"
            if (ownProcess) {
              let count = 0
              for (const s of sessions.values()) if (s.instance === instance) count++
              if (count >= (settings?.max_sessions_per_instance ?? Infinity)) {
                failures.push({ instanceId: instance.id, message: `already has ${count} sessions (max_sessions_per_instance)` })
                continue
              }
            }
            const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
            const opened = yield* transport.openSession(instance.definition, initializeParams, { ownProcess }).pipe(
              Effect.flatMap((backend) => Effect.map(backend.initialize, (result) => ({ backend, result }))),
              Scope.extend(scope),
              Effect.either
            )
            if (opened._tag === "Left") {
              yield* Scope.close(scope, Exit.void)
              failures.push({ instanceId: instance.id, message: opened.left.message })
              instance.markUnhealthy(opened.left.message)
              yield* Effect.logWarning(`${template}/${instance.id}: cannot open a session: ${opened.left.message}`)
              continue
            }
            const requested = initializeParams.protocolVersion
            // An HTTP backend or a process of the session's own negotiated with the client's own
            // initialize; a shared process was initialized by the gateway, so the client gets the
            // version it asked for if we speak it.
            const protocolVersion = instance.definition.transport === "http" || ownProcess
              ? String(opened.right.result.protocolVersion ?? LATEST_PROTOCOL_VERSION)
              : typeof requested === "string" && SUPPORTED_PROTOCOL_VERSIONS.includes(requested)
              ? requested
              : LATEST_PROTOCOL_VERSION
            const ownBackend = instance.definition.transport === "http" || ownProcess
            const session = newSession(template, instance, protocolVersion, opened.right.backend, ownBackend, scope)
            yield* session.backend.listen((message, reply) => {
              if (isRequest(message)) {
                if (reply !== undefined) relayServerRequest(session, message, reply, (m) => session.outbox.push(m))
                return
              }
              if (message.method === "notifications/resources/updated" && isObject(message.params)) {
                if (!session.subscriptions.has(String(message.params.uri))) return
              }
              session.outbox.push(message)
            }).pipe(Scope.extend(scope))
            yield* Effect.logDebug(`session ${session.id} of template ${template} pinned to ${instance.id}`)
            return { session, result: { ...(isObject(opened.right.result) ? opened.right.result : {}), protocolVersion } }
          }
          return yield* new AllAttemptsFailed({ template, attempts: failures })
        })

      // Sessions pinned to a removed instance end with it (their next request answers 404).
      const changes = yield* registry.changes
      yield* changes.pipe(
        Stream.filter((change) => change._tag === "InstanceRemoved"),
        Stream.runForEach((change) =>
          Effect.forEach(
            Array.from(sessions.values()).filter((s) => s.instance === change.instance),
            (s) => close(s.id),
            { discard: true }
          )
        ),
        Effect.forkScoped
      )

      yield* Effect.suspend(() => {
        const now = Date.now()
        const idle = Array.from(sessions.values()).filter((s) =>
          s.inflight.size === 0 &&
          now - s.lastSeen > (registry.template(s.template)?.settings.session_idle_timeout ?? DEFAULT_LOAD_BALANCER.session_idle_timeout) * 1000
        )
        return Effect.forEach(idle, (s) => close(s.id), { discard: true })
      }).pipe(Effect.repeat(Schedule.spaced(REAP_EVERY)), Effect.forkScoped)

      yield* Effect.addFinalizer(() => Effect.forEach(Array.from(sessions.keys()), close, { discard: true }))

      return { open, get: (id) => sessions.get(id), close, size: () => sessions.size }
    })
  )
}
