import { Context, Duration, Effect, ExecutionStrategy, Exit, Fiber, FiberSet, Layer, Schedule, Scope, Stream } from "effect"
import { declarationOf } from "../domain/canonicalJson.js"
import { DEFAULT_AGGREGATION, GatewayConfig, sessionLifetimeOf, type VirtualServerSettings } from "../config/GatewayConfig.js"
import { EndedSessions } from "../fleet/EndedSessions.js"
import { type DispatchError, SessionLimitReached } from "../domain/GatewayError.js"
import { allows, grantOf, type Identity } from "../domain/Identity.js"
import { GATEWAY_NAME, GATEWAY_VERSION, LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from "../domain/Protocol.js"
import type { PluginError } from "../loader/PluginError.js"
import { Registry } from "../registry/Registry.js"
import { type AggregateMember, AggregateSession } from "./AggregateSession.js"
import type { ClientSession } from "../sessions/ClientSession.js"
import { ClientSessions } from "../sessions/ClientSessions.js"
import type { EndpointSessionsShape, OpenedSession } from "../sessions/EndpointSessions.js"
import { Exposure, type View } from "../exposure/Exposure.js"
import type { RateDecision } from "../limits/RateDecision.js"
import { RateLimiter } from "../limits/RateLimiter.js"
import { grantTag, ownerTag, SessionSeal } from "../sessions/SessionSeal.js"
import { ModernSessions } from "../sessions/ModernSessions.js"
import { Stats } from "../observability/Stats.js"
import { Timer } from "../clock/Timer.js"

/** How often aggregate sessions idle past the default session_idle_timeout are ended. */
const REAP_EVERY = Duration.seconds(10)

/** The endpoint key of `/mcp`; a virtual server's is `v/{name}`. */
export const ALL_TEMPLATES = "*"
export const virtualServerKey = (name: string) => `v/${name}`

const OTHER_GRANT = "Session not found: it was opened with a credential of other scopes (the same subject's other token); initialize again"

export interface AggregateSessionsShape {
  /** The sessions of `/mcp` and `/mcp/v/{name}`, as the MCP endpoint speaks to them. */
  readonly endpoint: EndpointSessionsShape
  readonly size: () => number
}

interface Served {
  readonly settings: VirtualServerSettings
  readonly view: View | undefined
}

/**
 * The aggregate endpoints: `/mcp` (every template, unless `aggregation.enabled` is false) and
 * each virtual server at `/mcp/v/{name}` (chosen templates, filtered). Their sessions
 * (AggregateSession) hold one ClientSession per template the caller may call; this service
 * opens, finds, reaps and ends them, gives them the registry's current templates with their
 * prefixes, and tells them when the templates behind them change.
 */
export class AggregateSessions extends Context.Tag("mcp-gateway/AggregateSessions")<AggregateSessions, AggregateSessionsShape>() {
  static readonly layer: Layer.Layer<
    AggregateSessions,
    PluginError,
    GatewayConfig | Registry | ClientSessions | Exposure | RateLimiter | Stats | Timer | EndedSessions
  > = Layer.scoped(
    AggregateSessions,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const registry = yield* Registry
      const clientSessions = yield* ClientSessions
      const exposure = yield* Exposure
      const limiter = yield* RateLimiter
      const stats = yield* Stats
      const timer = yield* Timer
      const layerScope = yield* Effect.scope
      // Short background work (closing a session, starting to listen, a log line) runs in the
      // gateway's runtime (its logger writes to stderr; Effect.runFork's default one logs to
      // stdout), in a FiberSet of this layer's scope: what is still running at shutdown, after the
      // shutdown finalizer below (added later, so run first), is interrupted, never left behind.
      const runFork = yield* FiberSet.makeRuntime<never>()
      const settings = config.aggregation ?? DEFAULT_AGGREGATION
      const seal = new SessionSeal(config.gateway.sessionKeys ?? [])
      const ended = yield* EndedSessions
      const lifetimeMs = sessionLifetimeOf(config.gateway)
      const touching = ended.shouldTouch && seal.shared

      const served = new Map<string, Served>()
      const compile = (s: VirtualServerSettings, location: string) => exposure.compile(s.name, s.exposure, layerScope, location)
      if (settings.enabled) served.set(ALL_TEMPLATES, { settings: settings.all, view: yield* compile(settings.all, "aggregation") })
      for (const v of settings.virtualServers) {
        served.set(virtualServerKey(v.name), { settings: v, view: yield* compile(v, `virtual_servers.${v.name}`) })
      }

      /** The templates an aggregate serves now, in order, with their prefixes (before the caller's scopes narrow them). */
      const templatesOf = (s: VirtualServerSettings): ReadonlyArray<AggregateMember> => {
        const names = s.templates ?? registry.templates().map((t) => t.name)
        const present = names.filter((n) => registry.template(n) !== undefined)
        // Names get no prefix where they cannot collide: an aggregate of one template.
        return present.map((template) => ({
          template,
          prefix: registry.template(template)?.exposure?.prefix ?? (present.length === 1 ? "" : template)
        }))
      }

      /** What a client is told at `initialize` of an aggregate it has not been described. */
      const describeServed = (key: string, members: ReadonlyArray<AggregateMember>) => {
        if (members.length === 0) return "No templates are served here yet."
        const which = key === ALL_TEMPLATES ? "every template" : `template${members.length === 1 ? "" : "s"} ${members.map((m) => m.template).join(", ")}`
        const names = members.every((m) => m.prefix === "")
          ? "names are the templates' own"
          : `names are "{prefix}${settings.separator}{name}" (prefixes: ${members.map((m) => m.prefix === "" ? `${m.template}: none` : m.prefix).join(", ")})`
        return `The tools, prompts and resources of ${which} of this gateway; ${names}.`
      }

      const logged = new Set<string>()
      const logOnce = (key: string, log: Effect.Effect<void>) => {
        if (logged.has(key)) return
        if (logged.size > 10_000) logged.clear()
        logged.add(key)
        runFork(log)
      }

      /** Prefixes that can make two templates' names meet (`a` + `__` + `b__c` and `a__b` + `__` + `c`), said at start and on every change. */
      const checkPrefixes = () => {
        for (const [key, s] of served) {
          const members = templatesOf(s.settings)
          const where = key === ALL_TEMPLATES ? "/mcp" : `/mcp/${key}`
          for (const a of members) {
            for (const b of members) {
              if (a === b) continue
              const clash = a.prefix === "" || a.prefix === b.prefix
                ? a.prefix === b.prefix && a.template < b.template
                : `${b.prefix}${settings.separator}`.startsWith(`${a.prefix}${settings.separator}`)
              if (!clash) continue
              logOnce(
                `prefix\u0000${key}\u0000${a.template}\u0000${b.template}\u0000${a.prefix}\u0000${b.prefix}`,
                Effect.logError(
                  `aggregate ${where}: the names of templates "${a.template}" (prefix "${a.prefix}") and "${b.template}" (prefix "${b.prefix}") can collide; ` +
                    `give one of them another "prefix" (a collision serves the first template's and leaves out the other's)`
                )
              )
            }
          }
        }
      }
      checkPrefixes()

      const sessions = new Map<string, AggregateSession>()
      const modern = new ModernSessions<OpenedSession, DispatchError | SessionLimitReached>((id) => sessions.has(id), () => timer.now())

      /** `close`, and the id ended on every replica (the client's DELETE, the idle timeout). */
      const end = (id: string) =>
        Effect.suspend(() => {
          const session = sessions.get(id)
          // (A modern client's session has an id no client was given: nothing to tell.)
          if (session !== undefined && seal.shared && !session.servesModernClient) ended.end(id, session.expiresAt)
          return close(id)
        })

      const close = (id: string) =>
        Effect.suspend(() => {
          const session = sessions.get(id)
          if (session === undefined) return Effect.succeed(false)
          sessions.delete(id)
          modern.forget(id)
          return Fiber.interruptAll(session.interruptAll()).pipe(
            Effect.zipRight(Effect.forEach(session.memberSessions, (member) => clientSessions.close(member.id), { concurrency: "unbounded", discard: true })),
            Effect.zipRight(Scope.close(session.scope, Exit.void)),
            Effect.as(true)
          )
        })

      /** A session of `key` for `caller`, under `id` (a new one's, or one taken over from another replica). */
      const create = (id: string, key: string, initializeParams: Record<string, unknown>, caller: Identity, protocolVersion: string, modernClient: boolean, expiresAt: number) =>
        Effect.gen(function*() {
          const server = served.get(key)!
          if (sessions.size >= config.gateway.maxSessions) return yield* new SessionLimitReached({ scope: "gateway", limit: config.gateway.maxSessions })
          let owned = 0
          for (const other of sessions.values()) if (other.owner === caller.id) owned++
          if (owned >= config.gateway.maxSessionsPerClient) return yield* new SessionLimitReached({ scope: "client", limit: config.gateway.maxSessionsPerClient })
          const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
          const session: AggregateSession = new AggregateSession(
            id,
            key,
            protocolVersion,
            scope,
            caller.id,
            timer.now(),
            declarationOf(initializeParams),
            {
              // The caller's scopes narrow the templates (a key for one template sees that one's tools
              // only): the scopes of the credential of the session's latest request, as the config stands.
              members: () => templatesOf(server.settings).filter((m) => allows(session.caller, "mcp:call", m.template)),
              allowed: (template) => allows(session.caller, "mcp:call", template),
              // (Members count against the gateway's cap, not the client's: the aggregate session is what the client holds.)
              openMember: (template) =>
                Effect.map(
                  session.servesModernClient
                    ? clientSessions.forModernClient(template, caller.id, initializeParams, { member: true })
                    : clientSessions.open(template, initializeParams, caller.id, { member: true }),
                  (opened) => ({ session: opened.session, capabilities: opened.result.capabilities })
                ),
              memberAlive: (member: ClientSession) => "id" in clientSessions.resolve(member.id, member.template, member.owner),
              closeMember: (member) => Effect.asVoid(clientSessions.close(member.id)),
              view: server.view,
              exposure,
              separator: settings.separator,
              pageSize: settings.pageSize,
              listTimeout: settings.listTimeout,
              maxListPages: config.gateway.maxListPages,
              admit: (template) => {
                const counted = (decision: RateDecision) => {
                  if (!decision.allowed) stats.recordRateLimited("template", template)
                  return decision
                }
                const admission = limiter.admitTemplate(template)
                return admission instanceof Promise ? admission.then(counted) : counted(admission)
              },
              headersFor: (template, headers) => {
                if (headers === undefined) return undefined
                const forwarded = registry.template(template)?.forwardHeaders ?? []
                const out: Record<string, string> = {}
                for (const name in headers) if (name === "x-request-id" || forwarded.includes(name)) out[name] = headers[name]!
                return out
              },
              collision: (kind, name, kept, dropped) =>
                logOnce(
                  `name\u0000${key}\u0000${kind}\u0000${name}\u0000${kept}\u0000${dropped}`,
                  Effect.logError(
                    `aggregate ${key === ALL_TEMPLATES ? "/mcp" : `/mcp/${key}`}: ${kind} "${name}" comes from templates "${kept}" and "${dropped}"; ` +
                      `"${kept}"'s is served, "${dropped}"'s is left out (` +
                      (kind === "tools" || kind === "prompts"
                        ? `give a template a "prefix", or filter one of them out)`
                        : `resource URIs are never prefixed: hide one of them with a "resources" deny list)`)
                  )
                ),
              leftOut: (template, method, reason) =>
                logOnce(
                  `left\u0000${key}\u0000${template}\u0000${method}\u0000${reason}`,
                  Effect.logWarning(`aggregate ${key === ALL_TEMPLATES ? "/mcp" : `/mcp/${key}`}: ${method} goes on without template "${template}": ${reason}`)
                )
            }
          )
          session.servesModernClient = modernClient
          session.caller = caller
          session.grant = grantOf(caller)
          session.expiresAt = expiresAt
          sessions.set(session.id, session)
          return session
        })

      const open = (key: string, initializeParams: Record<string, unknown>, caller: Identity, modernClient: boolean) =>
        Effect.gen(function*() {
          const server = served.get(key)!
          const requested = initializeParams.protocolVersion
          const protocolVersion = typeof requested === "string" && SUPPORTED_PROTOCOL_VERSIONS.includes(requested) ? requested : LATEST_PROTOCOL_VERSION
          const expiresAt = Math.ceil((timer.now() + lifetimeMs) / 1000) * 1000
          const id = seal.seal({ endpoint: key, owner: caller.id, protocolVersion, kind: "aggregate", client: initializeParams, grant: grantTag(grantOf(caller)), expiresAt })
          yield* create(id, key, initializeParams, caller, protocolVersion, modernClient, expiresAt)
          const name = key === ALL_TEMPLATES ? GATEWAY_NAME : `${GATEWAY_NAME}/${server.settings.name}`
          const result = {
            protocolVersion,
            capabilities: {
              tools: { listChanged: true },
              prompts: { listChanged: true },
              resources: { subscribe: true, listChanged: true },
              completions: {},
              logging: {}
            },
            serverInfo: { name, version: GATEWAY_VERSION },
            instructions: server.settings.description ?? describeServed(key, templatesOf(server.settings))
          }
          return { session: sessions.get(id)!, result } satisfies OpenedSession
        })

      const forModernClient: EndpointSessionsShape["forModernClient"] = (key, caller, initializeParams) =>
        // (One per grant too: a narrower token of the same subject is not served the broader one's session.)
        modern.get(key, `${caller.id}\u0000${grantOf(caller)}`, initializeParams, open(key, initializeParams, caller, true))

      const endpoint: EndpointSessionsShape = {
        exists: (key) => served.has(key),
        unknown: (key) =>
          key === ALL_TEMPLATES
            ? "/mcp is not served here (aggregation.enabled is false); use /mcp/{template}"
            : `unknown virtual server "${key.slice(2)}" (virtual_servers: ${settings.virtualServers.map((v) => v.name).join(", ") || "none"})`,
        // Each member forwards its own template's headers (AggregateSession.headersFor): the endpoint reads them all.
        forwardHeaders: () => Array.from(new Set(registry.templates().flatMap((t) => t.forwardHeaders))),
        open: (key, initializeParams, caller) => open(key, initializeParams, caller, false),
        resolve: (id, key, caller) => {
          if (id === undefined || id === "") return { status: 400, message: "Bad Request: Mcp-Session-Id header is required" }
          const session = sessions.get(id)
          if (session === undefined) {
            // Another replica's: a new aggregate session under its id, whose template sessions open
            // as they are needed; if the caller's, not ended anywhere nor expired, and for a token,
            // of the grant it was opened with.
            const claims = seal.shared ? seal.open(id) : undefined
            if (claims === undefined || claims.kind !== "aggregate" || claims.endpoint !== key || claims.owner !== ownerTag(caller.id) || !served.has(key)) {
              return { status: 404, message: "Session not found" }
            }
            if (ended.isEnded(id, claims.expiresAt)) return { status: 404, message: "Session not found: it has ended" }
            if (caller.kind !== "api_key" && claims.grant !== grantTag(grantOf(caller))) return { status: 404, message: OTHER_GRANT }
            return {
              adopt: Effect.suspend(() => {
                const known = sessions.get(id)
                if (known !== undefined) return Effect.succeed(known)
                return create(id, key, claims.client, caller, claims.protocolVersion, false, claims.expiresAt).pipe(
                  Effect.catchAll((e) => Effect.succeed({ status: 404 as const, message: `Session not found: ${e.message}` }))
                )
              })
            }
          }
          if (session.template !== key || session.owner !== caller.id) return { status: 404, message: "Session not found" }
          const now = timer.now()
          if (now >= session.expiresAt) {
            runFork(close(id))
            return { status: 404, message: "Session not found: it reached its maximum lifetime (gateway.session_max_lifetime); initialize again" }
          }
          // (Anonymous callers, one object per request, all have the same grant: nothing to compare.)
          if (caller !== session.caller && caller.kind !== "anonymous") {
            // Authorized with the request's credential: a key's grant is the config's as it stands
            // (narrowed or widened by a reload, it serves what it allows now); a token of another
            // grant is another caller of the same subject.
            const grant = grantOf(caller)
            if (grant !== session.grant) {
              if (caller.kind !== "api_key") return { status: 404, message: OTHER_GRANT }
              session.grant = grant
              session.caller = caller
              session.grantChanged()
            } else session.caller = caller
          }
          session.lastSeen = now
          // (The idle timeout is the fleet's: see ClientSessions' touch.)
          if (touching && now - session.lastTouched >= Duration.toMillis(config.gateway.defaults.session_idle_timeout) / 4) {
            session.lastTouched = now
            ended.touch(id)
          }
          return session
        },
        close: end,
        forModernClient
      }

      for (const v of settings.virtualServers) {
        const missing = (v.templates ?? []).filter((t) => registry.template(t) === undefined)
        if (missing.length > 0) {
          yield* Effect.logWarning(
            `virtual server ${v.name}: no template ${missing.map((t) => `"${t}"`).join(", ")} (yet); it serves ${missing.length === v.templates!.length ? "nothing" : "the others"} until one is registered or configured`
          )
        }
      }

      // The templates behind the aggregates changed (added, removed, or what one shows: its
      // filters, transforms, prefix): every session's lists are stale, and prefixes may clash anew.
      let names = registry.templates().map((t) => t.name).join("\u0000")
      const changes = yield* registry.changes
      yield* changes.pipe(
        Stream.runForEach((change) =>
          Effect.sync(() => {
            const now = registry.templates().map((t) => t.name).join("\u0000")
            if (now === names && change._tag !== "TemplateChanged") return
            names = now
            checkPrefixes()
            for (const session of sessions.values()) session.membershipChanged()
          })
        ),
        Effect.forkScoped
      )

      // Idle sessions end for good, on every replica; expired ones here (their id says so everywhere).
      yield* Effect.suspend(() => {
        const now = timer.now()
        const timeout = Duration.toMillis(config.gateway.defaults.session_idle_timeout)
        const expired = Array.from(sessions.values()).filter((s) => now >= s.expiresAt)
        const idle = Array.from(sessions.values()).filter((s) => now < s.expiresAt && !s.busy && now - s.lastSeen > timeout)
        return Effect.zipRight(Effect.forEach(idle, (s) => end(s.id), { discard: true }), Effect.forEach(expired, (s) => close(s.id), { discard: true }))
      }).pipe(Effect.repeat(Schedule.spaced(REAP_EVERY)), Effect.forkScoped)

      ended.onTouchedElsewhere((id) => {
        const session = sessions.get(id)
        if (session !== undefined) session.lastSeen = Math.max(session.lastSeen, timer.now())
      })

      // Another replica ended a session: this one's copy goes too.
      ended.onEndedElsewhere((id) => {
        if (sessions.has(id)) runFork(close(id))
      })

      // Shutdown: every aggregate session (and its members' processes) ends at once, not one after another.
      yield* Effect.addFinalizer(() =>
        Effect.suspend(() =>
          sessions.size === 0 ? Effect.void : Effect.logInfo(`shutting down: ending ${sessions.size} aggregate MCP sessions`).pipe(
            Effect.zipRight(Effect.forEach(Array.from(sessions.keys()), close, { concurrency: "unbounded", discard: true }))
          )
        )
      )

      return { endpoint, size: () => sessions.size }
    })
  )
}
