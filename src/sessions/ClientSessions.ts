import { Context, Deferred, Duration, Effect, ExecutionStrategy, Exit, Fiber, FiberId, FiberSet, Layer, Schedule, Scope, Stream } from "effect"
import { ToolPins } from "../integrity/ToolPins.js"
import type { DefinitionKind } from "../domain/ToolDefinitions.js"
import { declarationOf } from "../domain/canonicalJson.js"
import { type DispatchError, SessionLimitReached } from "../domain/GatewayError.js"
import { GatewayConfig, sessionLifetimeOf } from "../config/GatewayConfig.js"
import { EndedSessions } from "../fleet/EndedSessions.js"
import { isObject, isRequest } from "../domain/JsonRpc.js"
import { isModernVersion } from "../domain/ModernProtocol.js"
import { LATEST_PROTOCOL_VERSION, MODERN_PROTOCOL_VERSIONS, SUPPORTED_PROTOCOL_VERSIONS } from "../domain/Protocol.js"
import type { InstanceState } from "../instance/InstanceState.js"
import { Registry } from "../registry/Registry.js"
import type { Connection } from "../transport/Connection.js"
import { Transport } from "../transport/Transport.js"
import { RequestTimeout, TransportError } from "../transport/TransportError.js"
import { ClientSession } from "./ClientSession.js"
import type { Adoption, EndpointSessionsShape, SessionRefusal } from "./EndpointSessions.js"
import { Dispatcher } from "../dispatch/Dispatcher.js"
import { Exposure } from "../exposure/Exposure.js"
import { ModernSessions } from "./ModernSessions.js"
import { ownerTag, type SessionClaims, SessionSeal } from "./SessionSeal.js"
import { capabilitiesAllowSharing } from "./processSharing.js"
import { type ProcessSlot, ProcessSlots } from "./ProcessSlots.js"
import { Stats } from "../observability/Stats.js"
import { Timer } from "../clock/Timer.js"

export type { SessionRefusal } from "./EndpointSessions.js"

export interface ClientSessionsShape {
  /**
   * Opens a session for a client's `initialize`: the template's strategy picks an instance (one
   * Dispatcher operation, failing over if the session cannot be opened there), a backend session
   * is opened on it, and the answer to `initialize` comes back.
   */
  readonly open: (
    template: string,
    initializeParams: Record<string, unknown>,
    owner: string,
    /** `member`: a session an aggregate holds for the client (it counts against the gateway's cap, not the client's). */
    options?: { readonly member?: boolean }
  ) => Effect.Effect<{ readonly session: ClientSession; readonly result: Record<string, unknown> }, DispatchError | SessionLimitReached>
  /**
   * The session a request names, if this caller may use it; else why not (a session whose
   * server is gone ends here; another caller's session is as good as unknown: 404).
   */
  readonly resolve: (id: string | undefined, template: string, owner: string) => ClientSession | SessionRefusal | Adoption
  /** Ends a session: stops its requests in flight and closes what was opened for it. False when unknown. */
  readonly close: (id: string) => Effect.Effect<boolean>
  /**
   * Ends a session for good (the client's DELETE, the idle timeout): as `close`, and the id is
   * remembered as ended here and on every replica (EndedSessions), so that none takes it over again.
   */
  readonly end: (id: string) => Effect.Effect<boolean>
  /** Ends every session pinned to an instance (after it drained). */
  readonly closePinnedTo: (instance: InstanceState) => Effect.Effect<void>
  /**
   * The backend session that serves a modern (2026-07-28) client, which has no session of its
   * own: one per template, caller and declared client (capabilities, client name), opened on
   * first use like an `initialize` would, and kept until it idles out or its server goes.
   */
  readonly forModernClient: (
    template: string,
    owner: string,
    initializeParams: Record<string, unknown>,
    options?: { readonly member?: boolean }
  ) => Effect.Effect<{ readonly session: ClientSession; readonly result: Record<string, unknown> }, DispatchError | SessionLimitReached>
  /** The same sessions as `/mcp/{template}` speaks to them. */
  readonly endpoint: EndpointSessionsShape
  readonly size: () => number
  /** Sessions open, by template and protocol version (what `/metrics` and `/gateway/stats` show). */
  readonly counts: () => ReadonlyArray<{ readonly template: string; readonly protocolVersion: string; readonly count: number }>
}

/** What a client is told when what its template shows may have changed. */
const LIST_CHANGES = ["notifications/tools/list_changed", "notifications/prompts/list_changed", "notifications/resources/list_changed"]

/** What a client is told when tool integrity changes what it may use of a kind. */
const INTEGRITY_LIST_CHANGES: Readonly<Record<DefinitionKind, string>> = {
  tool: "notifications/tools/list_changed",
  prompt: "notifications/prompts/list_changed",
  resource_template: "notifications/resources/list_changed"
}

/**
 * How long a session with a process of its own must have been idle before a newcomer may end it
 * for room (one whose client dropped its standing stream may be ended at once): a client that is
 * there sends its next request within this, and ending its session under it costs it a new one.
 */
const EVICTION_GRACE_MS = 5_000

/** How often sessions idle past their template's session_idle_timeout are ended (clients that vanished without DELETE). */
const REAP_EVERY = Duration.seconds(10)


/** The protocol version the client gets from a server the gateway initialized itself: the client's, if the gateway speaks it. */
const versionFor = (initializeParams: Record<string, unknown>) => {
  const requested = initializeParams.protocolVersion
  return typeof requested === "string" && SUPPORTED_PROTOCOL_VERSIONS.includes(requested) ? requested : LATEST_PROTOCOL_VERSION
}

export class ClientSessions extends Context.Tag("mcp-gateway/ClientSessions")<ClientSessions, ClientSessionsShape>() {
  static readonly layer: Layer.Layer<ClientSessions, never, GatewayConfig | Registry | Dispatcher | Transport | Timer | Exposure | EndedSessions | Stats | ToolPins> = Layer.scoped(
    ClientSessions,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const registry = yield* Registry
      const dispatcher = yield* Dispatcher
      const transport = yield* Transport
      const timer = yield* Timer
      const exposure = yield* Exposure
      const pins = yield* ToolPins
      const ended = yield* EndedSessions
      const stats = yield* Stats
      // Short background work (closing a session, starting to listen, a log line) runs in the
      // gateway's runtime (its logger writes to stderr; Effect.runFork's default one logs to
      // stdout), in a FiberSet of this layer's scope: what is still running at shutdown, after the
      // shutdown finalizer below (added later, so run first), is interrupted, never left behind.
      const runFork = yield* FiberSet.makeRuntime<never>()
      // Sessions' scopes are children of this one, closed after the shutdown finalizer below (added
      // later, so run first) has said what stays open at the backends, and in parallel: at shutdown
      // every session ends (and stops its process) at once, not one after another.
      const layerScope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.parallel)
      // Session ids carry what any replica needs to serve them (see SessionSeal.ts).
      const seal = new SessionSeal(config.gateway.sessionKeys ?? [])
      const lifetimeMs = sessionLifetimeOf(config.gateway)
      /** When a session opened now ends however busy (to the second: what its sealed id says). */
      const expiryFromNow = () => Math.ceil((timer.now() + lifetimeMs) / 1000) * 1000
      const sessions = new Map<string, ClientSession>()
      /** Processes (SSE sessions) of sessions' own, by instance: what max_sessions_per_instance bounds. */
      const slots = new ProcessSlots()
      /** The slot each session with a process of its own holds. */
      const slotOf = new WeakMap<ClientSession, ProcessSlot>()
      /** Open sessions by owner: what max_sessions_per_client caps. */
      const byOwner = new Map<string, number>()

      /** Backend sessions of modern clients, by who they serve (see forModernClient). */
      const modern = new ModernSessions<{ readonly session: ClientSession; readonly result: Record<string, unknown> }, DispatchError | SessionLimitReached>(
        (id) => sessions.has(id),
        () => timer.now()
      )

      const close = (id: string) =>
        Effect.suspend(() => {
          const session = sessions.get(id)
          if (session === undefined) return Effect.succeed(false)
          sessions.delete(id)
          modern.forget(id)
          // Its slot stays taken until its process has stopped, but nobody may end the session again for room.
          const slot = slotOf.get(session)
          if (slot !== undefined) slot.session = undefined
          if (!members.has(session)) {
            const owned = (byOwner.get(session.owner) ?? 1) - 1
            if (owned === 0) byOwner.delete(session.owner)
            else byOwner.set(session.owner, owned)
          }
          return Fiber.interruptAll(session.interruptAll()).pipe(
            Effect.zipRight(Scope.close(session.scope, Exit.void)),
            Effect.as(true)
          )
        })

      /** `close`, and the id ended on every replica (only ids other replicas could take over need telling). */
      const end = (id: string) =>
        Effect.suspend(() => {
          const session = sessions.get(id)
          // (A modern client's session has an id no client was given: nothing to tell.)
          if (session !== undefined && seal.shared && !session.servesModernClient) ended.end(id, session.expiresAt)
          return close(id)
        })
      /**
       * Whose process a session that shares one uses: with auth on, its owner's own (a process
       * is shared only within one caller, see transport/CallerConnections.ts); without auth every
       * client is one caller (the gateway then listens on loopback only), the instance's.
       */
      const callerOf = (owner: string) => config.gateway.auth === undefined ? undefined : owner

      /** Sessions an aggregate holds: not counted for the client (its aggregate session is). */
      const members = new WeakSet<ClientSession>()
      const add = (session: ClientSession, member = false) => {
        sessions.set(session.id, session)
        if (member) members.add(session)
        else byOwner.set(session.owner, (byOwner.get(session.owner) ?? 0) + 1)
        return session
      }

      /** The caps, checked before anything is opened for a new session. */
      const admit = (owner: string, member = false): Effect.Effect<void, SessionLimitReached> => {
        if (sessions.size >= config.gateway.maxSessions) {
          return Effect.fail(new SessionLimitReached({ scope: "gateway", limit: config.gateway.maxSessions }))
        }
        if (!member && (byOwner.get(owner) ?? 0) >= config.gateway.maxSessionsPerClient) {
          return Effect.fail(new SessionLimitReached({ scope: "client", limit: config.gateway.maxSessionsPerClient }))
        }
        return Effect.void
      }

      /**
       * `session_affinity: "none"`: the session is the gateway's alone; each of its requests is
       * balanced on its own (with failover), over the instances' shared connections. For
       * stateless servers. The answer to `initialize` is the one of whichever instance answers.
       */
      const openBalanced = (template: string, initializeParams: Record<string, unknown>, owner: string, member: boolean) =>
        Effect.gen(function*() {
          const { value: result } = yield* dispatcher.execute({
            template,
            method: "initialize",
            retryable: () => true,
            attempt: (instance) => transport.initializeResult(instance.definition)
          })
          const protocolVersion = versionFor(initializeParams)
          const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
          const expiresAt = expiryFromNow()
          const session = add(
            new ClientSession({
              id: seal.seal({ endpoint: template, owner, protocolVersion, kind: "balanced", client: initializeParams, expiresAt }),
              template,
              pinned: undefined,
              protocolVersion,
              connection: undefined,
              ownBackend: false,
              scope,
              owner,
              dispatcher,
              now: timer.now(),
              exposure,
              declaration: declarationOf(initializeParams)
            }),
            member
          )
          session.expiresAt = expiresAt
          session.processCaller = callerOf(owner)
          return { session, result: { ...result, protocolVersion } }
        })

      /**
       * Opens the backend side of a pinned session on one instance, in a scope of its own;
       * `ended` runs when that scope closes, after everything opened in it (its process stopped).
       */
      const openOn = (
        instance: InstanceState,
        initializeParams: Record<string, unknown>,
        ownProcess: boolean,
        remainingMs: number,
        ended: Effect.Effect<void> | undefined,
        caller: string | undefined
      ) =>
        Effect.gen(function*() {
          const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
          if (ended !== undefined) yield* Scope.addFinalizer(scope, ended)
          const opened = yield* transport.openSession(instance.definition, initializeParams, { ownProcess, caller }).pipe(
            Effect.flatMap((backend) => Effect.map(backend.initialize, (result) => ({ backend, result }))),
            Effect.timeoutFail({
              duration: Duration.millis(Math.max(1, remainingMs)),
              onTimeout: () => new RequestTimeout({ instanceId: instance.id, timeoutMs: remainingMs })
            }),
            Scope.extend(scope),
            Effect.tapErrorCause(() => Scope.close(scope, Exit.void))
          )
          return { ...opened, scope }
        })

      /**
       * Whether a session's process of its own serves nobody now: nothing in flight, no stream
       * open (for an aggregate's member: on the aggregate either), so it may be ended for room.
       */
      const idle = (session: ClientSession) => !session.engaged && !(session.holder?.engaged ?? false)
      /** When the session's client last used it (a member's: its aggregate's client). */
      const lastUsed = (session: ClientSession) => Math.max(session.lastSeen, session.holder?.lastSeen ?? 0)
      /** Its client closed its standing stream and has not been back since (a member's: its aggregate's client). */
      const departed = (session: ClientSession) => {
        const client = session.holder ?? session
        return client.streamDroppedAt !== undefined && client.streamDroppedAt === client.lastSeen
      }
      /**
       * Which idle session to end for a newcomer, lowest first; undefined: none to end. Sessions
       * whose client left (its stream dropped, nothing since) go first, least recently used first;
       * then sessions idle for EVICTION_GRACE at least, least recently used first. A session used
       * just now is never ended for room: its client is between two requests (a new session
       * between its initialize and its next request, above all), not gone.
       */
      const evictionRank = (session: ClientSession): number | undefined => {
        if (!idle(session)) return undefined
        const used = lastUsed(session)
        if (departed(session)) return used - Number.MAX_SAFE_INTEGER / 2
        return timer.now() - used >= EVICTION_GRACE_MS ? used : undefined
      }
      const noteSlots = (instance: InstanceState) => {
        instance.sessionProcesses = slots.used(instance)
      }
      const freeSlot = (slot: ProcessSlot) =>
        Effect.sync(() => {
          slots.release(slot)
          noteSlots(slot.instance)
          keepWarm(slot.instance)
        })

      /** Instances that served a session with a process of its own: from then on they keep processes warm. */
      const warmed = new WeakSet<InstanceState>()
      /**
       * The processes a stdio instance keeps warm for new sessions: `warm_processes`, within
       * what its slots leave free (taken slots and warm processes together never pass
       * max_sessions_per_instance), once it served a session with a process of its own (an
       * instance only ever used by sessions that share its process keeps none). Set again
       * whenever a slot is given back or a session took one (a warm process, if there was one).
       */
      const keepWarm = (instance: InstanceState) => {
        if (transport.keepWarm === undefined || instance.definition.transport !== "stdio" || !warmed.has(instance)) return
        const template = registry.template(instance.template)
        if (template === undefined || template.instances.get(instance.id) !== instance) return
        const settings = template.settings
        const count = settings.session_process === "shared" || settings.session_affinity === "none" || instance.draining
          ? 0
          : Math.max(0, Math.min(settings.warm_processes, settings.max_sessions_per_instance - slots.used(instance)))
        transport.keepWarm(instance.definition, count)
      }

      /**
       * A slot for a process of the session's own on an instance (max_sessions_per_instance),
       * taken before the process starts: a free one, or the least recently used idle session's,
       * which is ended first (its client's next request gets a 404 and initializes again).
       * Undefined when every slot is held by a session in use.
       */
      const takeSlot = (instance: InstanceState, max: number): Effect.Effect<ProcessSlot | undefined> =>
        Effect.suspend(() => {
          const free = slots.take(instance, max)
          if (free !== undefined) {
            noteSlots(instance)
            return Effect.succeed(free)
          }
          const victim = slots.evictionCandidate(instance, evictionRank)
          if (victim === undefined) return Effect.succeed(undefined)
          const session = victim.session!
          const taken = slots.handOver(victim)
          stats.recordSessionEnded(session.template, "room")
          return Effect.logInfo(
            `ending session …${session.id.slice(-8)} of template ${session.template} on ${instance.id}, idle ` +
              `${Math.round((timer.now() - lastUsed(session)) / 1000)} s, to make room for a new session (every process slot taken)`
          ).pipe(
            // (Its end is not cut short if the newcomer gives up: the slot is then free again.)
            Effect.zipRight(Effect.uninterruptible(end(session.id))),
            Effect.onInterrupt(() => freeSlot(taken)),
            Effect.as(taken)
          )
        })

      const capReached = (instance: InstanceState, max: number) =>
        `every one of its ${max} process slots (max_sessions_per_instance) is held by a session in use (${slots.used(instance)} taken)`

      const openPinned = (template: string, initializeParams: Record<string, unknown>, owner: string, member: boolean) =>
        Effect.gen(function*() {
          const settings = registry.template(template)!.settings
          const mode = settings.session_process
          const max = settings.max_sessions_per_instance
          const requestedVersion = initializeParams.protocolVersion
          // Known before any instance is tried: the session declares what a shared process was not initialized with.
          const mustOwn = mode === "per_session" || (mode === "auto" && !capabilitiesAllowSharing(initializeParams))
          /** Instances left out because every slot was held by a session in use. */
          const saturated = new Set<string>()
          const full = (instance: InstanceState) => {
            saturated.add(instance.id)
            return capReached(instance, max)
          }
          const { instance, value: opened } = yield* dispatcher.execute({
            template,
            method: "initialize",
            // A session can be opened anywhere: failing over never repeats anything a server did.
            retryable: () => true,
            ineligible: (instance) =>
              instance.definition.transport !== "http" && mustOwn && slots.used(instance) >= max &&
                slots.evictionCandidate(instance, evictionRank) === undefined
                ? full(instance)
                : undefined,
            attempt: (instance, deadline) =>
              Effect.gen(function*() {
                let own = false
                if (instance.definition.transport !== "http" && mode !== "shared") {
                  own = mustOwn
                  if (!own && mode === "auto") {
                    // The shared process speaks the version it negotiated with the gateway: a
                    // client asking for another one would get answers shaped for the wrong version.
                    const shared = yield* transport.initializeResult(instance.definition, callerOf(owner))
                    own = shared.protocolVersion !== requestedVersion
                  }
                }
                const slot = own ? yield* takeSlot(instance, max) : undefined
                if (own && slot === undefined) {
                  return yield* new TransportError({ instanceId: instance.id, reason: "unavailable", message: full(instance), reachedBackend: false })
                }
                const result = yield* openOn(instance, initializeParams, own, deadline.remainingMs(), slot === undefined ? undefined : freeSlot(slot), callerOf(owner)).pipe(
                  // It took a warm process, if there was one: another replaces it (within the bound).
                  Effect.ensuring(slot === undefined ? Effect.void : Effect.sync(() => {
                    warmed.add(instance)
                    keepWarm(instance)
                  }))
                )
                return { ...result, own, slot }
              })
          }).pipe(
            Effect.catchTag("AllAttemptsFailed", (e): Effect.Effect<never, DispatchError | SessionLimitReached> => {
              if (e.attempts.length === 0 || !e.attempts.every((a) => saturated.has(a.instanceId))) return Effect.fail(e)
              // Every instance tried had every slot busy: the template is saturated, not failing.
              const now = timer.now()
              for (const i of registry.template(template)?.instances.values() ?? []) if (saturated.has(i.id)) i.saturatedAt = now
              stats.recordSessionRefused(template, "slots_busy")
              return Effect.logWarning(
                `refused a new session of template ${template}: every process slot of its instances (${max} each, ` +
                  `max_sessions_per_instance) is held by a session in use, none idle to end; answered 503`
              ).pipe(Effect.zipRight(Effect.fail(new SessionLimitReached({ scope: "instance", limit: max, template }))))
            })
          )
          const ownBackend = instance.definition.transport === "http" || opened.own
          // An HTTP backend or a process of the session's own negotiated with the client's own
          // initialize; a shared process was initialized by the gateway.
          // A modern server (no session, no initialize) speaks what the gateway speaks with the client.
          const protocolVersion = ownBackend && !isModernVersion(opened.result.protocolVersion)
            ? String(opened.result.protocolVersion ?? LATEST_PROTOCOL_VERSION)
            : versionFor(initializeParams)
          const expiresAt = expiryFromNow()
          const session = add(
            new ClientSession({
              id: seal.seal({
                endpoint: template,
                owner,
                protocolVersion,
                kind: "pinned",
                instance: instance.id,
                backendSession: opened.backend.sessionId?.(),
                ownProcess: instance.definition.transport !== "http" && opened.own,
                client: initializeParams,
                expiresAt
              }),
              template,
              pinned: instance,
              protocolVersion,
              connection: opened.backend,
              ownBackend,
              scope: opened.scope,
              owner,
              dispatcher,
              now: timer.now(),
              exposure,
              declaration: declarationOf(initializeParams)
            }),
            member
          )
          session.expiresAt = expiresAt
          if (opened.slot !== undefined) {
            opened.slot.session = session
            slotOf.set(session, opened.slot)
          }
          yield* listenForSession(session, opened.backend)
          yield* Effect.logDebug(
            `session ${session.id} of template ${template} pinned to ${instance.id}` +
              (instance.definition.transport === "http" ? "" : opened.own ? " (a process of its own)" : " (the shared process)")
          )
          return { session, result: { ...(isObject(opened.result) ? opened.result : {}), protocolVersion } }
        })

      /** What the server sends outside requests goes to the session's standing stream (its requests relayed to the client). */
      const listenForSession = (session: ClientSession, backend: Connection) =>
        backend.listen((message, reply) => {
          if (isRequest(message)) {
            if (reply === undefined) return
            if (!session.servesModernClient) return void session.relayServerRequest(message, reply, (m) => session.outbox.push(m))
            // A modern client has no stream outside its requests: the question goes to a request
            // in flight, or is refused at once rather than left waiting for ever.
            const relay = session.askRelay()
            if (relay !== undefined) return relay(message, reply)
            return reply({
              jsonrpc: "2.0",
              id: message.id,
              error: { code: -32601, message: `${message.method}: the client speaks MCP 2026-07-28 and has no request in flight to answer it` }
            })
          }
          // What the template caches goes stale the moment the server says so, whoever listens.
          exposure.noticed(session.template, message)
          if (message.method === "notifications/resources/updated" && isObject(message.params)) {
            if (!session.subscribedTo(String(message.params.uri))) return
          }
          if (session.servesModernClient) {
            session.tellListeners(message)
            return
          }
          session.outbox.push(message)
        }).pipe(Scope.extend(session.scope))

      const open: ClientSessionsShape["open"] = (template, initializeParams, owner, options) =>
        Effect.zipRight(
          admit(owner, options?.member === true),
          registry.template(template)?.settings.session_affinity === "none"
            ? openBalanced(template, initializeParams, owner, options?.member === true)
            : openPinned(template, initializeParams, owner, options?.member === true)
        )

      const forModernClient: ClientSessionsShape["forModernClient"] = (template, owner, initializeParams, options) =>
        modern.get(
          template,
          owner,
          initializeParams,
          Effect.tap(open(template, initializeParams, owner, options), (opened) => Effect.sync(() => void (opened.session.servesModernClient = true)))
        )

      const resolve: ClientSessionsShape["resolve"] = (id, template, owner) => {
        if (id === undefined || id === "") return { status: 400, message: "Bad Request: Mcp-Session-Id header is required" }
        const session = sessions.get(id)
        if (session === undefined) {
          // Another replica's (or this one's before a restart), if it opens with the shared keys,
          // is this caller's, and was not ended (here or on another replica) nor expired.
          const claims = seal.shared ? seal.open(id) : undefined
          if (claims === undefined || claims.endpoint !== template || claims.owner !== ownerTag(owner)) return { status: 404, message: "Session not found" }
          if (ended.isEnded(id, claims.expiresAt)) return { status: 404, message: "Session not found: it has ended" }
          if (claims.local === true) return { status: 404, message: "Session not found: only the replica of the gateway that opened it can serve it; initialize again" }
          return { adopt: adopt(id, claims, owner) }
        }
        if (session.template !== template || session.owner !== owner) {
          return { status: 404, message: "Session not found" }
        }
        const now = timer.now()
        if (now >= session.expiresAt) {
          runFork(close(session.id))
          return { status: 404, message: "Session not found: it reached its maximum lifetime (gateway.session_max_lifetime); initialize again" }
        }
        const pinned = session.instance
        if (pinned !== undefined) {
          const status = pinned.status
          const reason = registry.template(template)?.instances.get(pinned.id) !== pinned || pinned.draining
            ? "its server instance was removed"
            : status === "unhealthy" || status === "failed"
            ? `its server instance is ${status}`
            : session.backendLost
            ? "its server restarted or ended the session"
            : undefined
          if (reason !== undefined) {
            // Requests still in flight on a removed instance finish (it drains); a dead one's have failed already.
            if (!pinned.draining) runFork(close(session.id))
            return { status: 404, message: `Session not found: ${reason}` }
          }
        }
        session.lastSeen = now
        // (An aggregate's members are never taken over from their ids: their aggregate is.)
        if (touching && now - session.lastTouched >= 1000 && !members.has(session)) touch(session, registry.template(template)?.settings.session_idle_timeout, now)
        return session
      }

      /**
       * With a fleet, the idle timeout is the fleet's: a replica serving a session says so (at
       * most every quarter of the timeout), and a copy another replica holds counts it as use,
       * so that it does not idle out there and end the session everywhere.
       */
      const touching = ended.shouldTouch && seal.shared
      const touch = (session: ClientSession, idle: Duration.Duration | undefined, now: number) => {
        if (idle !== undefined && now - session.lastTouched < Duration.toMillis(idle) / 4) return
        session.lastTouched = now
        ended.touch(session.id)
      }
      ended.onTouchedElsewhere((id) => {
        const session = sessions.get(id)
        if (session !== undefined) session.lastSeen = Math.max(session.lastSeen, timer.now())
      })

      /** Sessions being taken over, so that concurrent requests of one session take it over once. */
      const adopting = new Map<string, Deferred.Deferred<ClientSession | SessionRefusal>>()

      /**
       * Takes over a session another replica opened, from what its id carries: a balanced one
       * at once; a pinned one on the same instance, through the backend's own session (an HTTP
       * server keeps it, whichever replica talks to it), a modern server's anew, or the
       * instance's shared process. A process of the session's own lived on the other replica.
       */
      const adopt = (id: string, claims: SessionClaims, owner: string): Effect.Effect<ClientSession | SessionRefusal> =>
        Effect.suspend(() => {
          const pending = adopting.get(id)
          if (pending !== undefined) return Deferred.await(pending)
          const done = Deferred.unsafeMake<ClientSession | SessionRefusal>(FiberId.none)
          adopting.set(id, done)
          return takeOver(id, claims, owner).pipe(
            Effect.catchAll((e) => Effect.succeed<SessionRefusal>({ status: 404, message: `Session not found: ${e.message}` })),
            Effect.tap((outcome) => Deferred.succeed(done, outcome)),
            Effect.ensuring(Effect.sync(() => adopting.delete(id)))
          )
        })

      const takeOver = (id: string, claims: SessionClaims, owner: string) =>
        Effect.gen(function*() {
          const existing = sessions.get(id)
          if (existing !== undefined) return existing
          const template = registry.template(claims.endpoint)
          if (template === undefined) return { status: 404, message: "Session not found: its template is gone" } satisfies SessionRefusal
          yield* admit(owner)
          const declaration = declarationOf(claims.client)
          const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
          if (claims.kind === "balanced") {
            const session = new ClientSession({
              id,
              template: claims.endpoint,
              pinned: undefined,
              protocolVersion: claims.protocolVersion,
              connection: undefined,
              ownBackend: false,
              scope,
              owner,
              dispatcher,
              now: timer.now(),
              exposure,
              declaration
            })
            session.expiresAt = claims.expiresAt
            session.processCaller = callerOf(owner)
            yield* Effect.logDebug(`session of template ${claims.endpoint} taken over from another replica (balanced)`)
            return add(session)
          }
          const instance = claims.instance === undefined ? undefined : template.instances.get(claims.instance)
          const refusal = instance === undefined || instance.draining
            ? "its server instance was removed"
            : claims.ownProcess === true
            ? "its server process ran on another replica of the gateway; initialize again"
            : instance.status === "unhealthy" || instance.status === "failed"
            ? `its server instance is ${instance.status}`
            : undefined
          if (refusal !== undefined) {
            yield* Scope.close(scope, Exit.void)
            return { status: 404, message: `Session not found: ${refusal}` } satisfies SessionRefusal
          }
          const backend = yield* transport.openSession(instance!.definition, claims.client, {
            caller: callerOf(claims.owner),
            resume: claims.backendSession === undefined ? undefined : { sessionId: claims.backendSession, protocolVersion: claims.protocolVersion }
          }).pipe(
            Effect.tap((connection) => claims.backendSession === undefined && instance!.definition.transport === "http" ? connection.initialize : Effect.void),
            Scope.extend(scope),
            Effect.tapErrorCause(() => Scope.close(scope, Exit.void))
          )
          const session = add(
            new ClientSession({
              id,
              template: claims.endpoint,
              pinned: instance,
              protocolVersion: claims.protocolVersion,
              connection: backend,
              ownBackend: instance!.definition.transport === "http",
              scope,
              owner,
              dispatcher,
              now: timer.now(),
              exposure,
              declaration
            })
          )
          session.expiresAt = claims.expiresAt
          // What the server says outside requests is heard once the client's standing stream is
          // here: the replica that opened the session may still carry it.
          session.listenLater(() => runFork(listenForSession(session, backend).pipe(Effect.catchAllCause(() => Effect.void))))
          yield* Effect.logDebug(`session of template ${claims.endpoint} taken over from another replica (pinned to ${instance!.id})`)
          return session
        })

      const closePinnedTo = (instance: InstanceState) =>
        Effect.forEach(
          Array.from(sessions.values()).filter((s) => s.instance === instance),
          (s) => close(s.id),
          { discard: true }
        )

      // What a template shows changed (a reload: filters, transforms, prefix): its clients list again.
      const changes = yield* registry.changes
      yield* changes.pipe(
        Stream.runForEach((change) =>
          Effect.sync(() => {
            if (change._tag !== "TemplateChanged") return
            for (const instance of change.template.instances.values()) keepWarm(instance)
            for (const session of sessions.values()) {
              if (session.template !== change.template.name || session.heldByAggregate) continue
              for (const method of LIST_CHANGES) {
                if (session.servesModernClient) session.tellListeners({ method })
                else session.outbox.push({ jsonrpc: "2.0", method })
              }
            }
          })
        ),
        Effect.forkScoped
      )

      // What a template's clients may use changed by tool integrity (a block, an approval): they list again.
      yield* pins.listChanges.pipe(
        Stream.runForEach(({ template, kind }) =>
          Effect.sync(() => {
            const method = INTEGRITY_LIST_CHANGES[kind]
            // (Sessions an aggregate holds too: it hears them through their outbox and tells its client once.)
            for (const session of sessions.values()) {
              if (session.template !== template) continue
              if ((session.holder ?? session).servesModernClient) session.tellListeners({ method })
              else session.outbox.push({ jsonrpc: "2.0", method })
            }
          })
        ),
        Effect.forkScoped
      )

      // Sessions idle past their template's session_idle_timeout end for good, on every replica
      // (clients that vanished without DELETE); sessions past their maximum lifetime end here
      // (their id says they are over everywhere).
      yield* Effect.suspend(() => {
        const now = timer.now()
        const idle: Array<string> = []
        const expired: Array<string> = []
        for (const s of sessions.values()) {
          if (members.has(s)) continue
          const timeout = registry.template(s.template)?.settings.session_idle_timeout
          if (now >= s.expiresAt) expired.push(s.id)
          else if (!s.busy && timeout !== undefined && now - s.lastSeen > Duration.toMillis(timeout)) idle.push(s.id)
        }
        return Effect.zipRight(Effect.forEach(idle, end, { discard: true }), Effect.forEach(expired, close, { discard: true }))
      }).pipe(Effect.repeat(Schedule.spaced(REAP_EVERY)), Effect.forkScoped)

      // Another replica ended a session (its client's DELETE, its idle timeout): this one's copy goes too.
      ended.onEndedElsewhere((id) => {
        if (sessions.has(id)) runFork(close(id))
      })

      // Sessions with a process of their own that serve nobody (nothing in flight, no stream open)
      // for session_process_idle_timeout end, and their processes with them: a client that left
      // without DELETE must not hold a process for the whole session_idle_timeout.
      const reapIdleProcesses = Effect.suspend(() => {
        const now = timer.now()
        const idleSessions: Array<ClientSession> = []
        for (const slot of slots.all()) {
          const session = slot.session!
          // In use now: its idle time starts when the client stops using it.
          if (!idle(session)) session.lastSeen = now
          const timeout = registry.template(session.template)?.settings.session_process_idle_timeout
          if (timeout !== undefined && idle(session) && now - lastUsed(session) > Duration.toMillis(timeout)) idleSessions.push(session)
        }
        if (idleSessions.length === 0) return Effect.void
        for (const session of idleSessions) stats.recordSessionEnded(session.template, "idle")
        return Effect.logInfo(`ending ${idleSessions.length} sessions with a process of their own, idle past session_process_idle_timeout`).pipe(
          Effect.zipRight(Effect.forEach(idleSessions, (s) => end(s.id), { concurrency: "unbounded", discard: true }))
        )
      })
      /** Often enough for the shortest session_process_idle_timeout: a quarter of it, between 250 ms and REAP_EVERY. */
      const reapProcessesEvery = () => {
        let shortest = Duration.toMillis(REAP_EVERY) * 4
        for (const t of registry.templates()) shortest = Math.min(shortest, Duration.toMillis(t.settings.session_process_idle_timeout))
        return Duration.millis(Math.min(Duration.toMillis(REAP_EVERY), Math.max(250, shortest / 4)))
      }
      yield* reapIdleProcesses.pipe(
        Effect.zipRight(Effect.suspend(() => Effect.sleep(reapProcessesEvery()))),
        Effect.forever,
        Effect.forkScoped
      )

      // Shutdown: every session ends at once (each stops its process, if it has one of its own),
      // not one after another: with many sessions open that took seconds per dozen.
      yield* Effect.addFinalizer(() =>
        Effect.suspend(() => {
          if (sessions.size === 0) return Effect.void
          const count = sessions.size
          const own = Array.from(slots.all()).length
          // A rolling restart keeps sessions: what another replica can serve from its id (an HTTP
          // backend's own session) is left open at the backend; the rest ends with this replica.
          if (seal.shared) for (const s of sessions.values()) s.backend?.keepAtServer?.()
          return Effect.logInfo(`shutting down: ending ${count} MCP sessions (${own} with a process of their own)`).pipe(
            Effect.zipRight(Effect.forEach(Array.from(sessions.keys()), close, { concurrency: "unbounded", discard: true })),
            Effect.zipRight(Effect.logInfo(`shutting down: ${count} MCP sessions ended, their processes stopped`))
          )
        })
      )

      const counts = () => {
        const byKey = new Map<string, { template: string; protocolVersion: string; count: number }>()
        for (const s of sessions.values()) {
          // A modern client's backend session counts under the revision the client speaks.
          const protocolVersion = s.servesModernClient ? MODERN_PROTOCOL_VERSIONS[0]! : s.protocolVersion
          const key = `${s.template}\u0000${protocolVersion}`
          const entry = byKey.get(key)
          if (entry === undefined) byKey.set(key, { template: s.template, protocolVersion, count: 1 })
          else entry.count++
        }
        return Array.from(byKey.values())
      }

      const endpoint: EndpointSessionsShape = {
        exists: (template) => registry.template(template) !== undefined,
        unknown: (template) => `unknown template "${template}"`,
        forwardHeaders: (template) => registry.template(template)?.forwardHeaders ?? [],
        open: (template, initializeParams, caller) => open(template, initializeParams, caller.id),
        resolve: (id, template, caller) => resolve(id, template, caller.id),
        close: end,
        forModernClient: (template, caller, initializeParams) => forModernClient(template, caller.id, initializeParams)
      }

      return { open, resolve, close, end, closePinnedTo, forModernClient, endpoint, size: () => sessions.size, counts }
    })
  )
}
