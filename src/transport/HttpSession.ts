import { Duration, Effect } from "effect"
import type { InstanceDefinition } from "../domain/Instance.js"
import { isObject } from "../domain/JsonRpc.js"
import { canonicalJson } from "../domain/canonicalJson.js"
import { MODERN_PROTOCOL_VERSIONS, SUPPORTED_PROTOCOL_VERSIONS } from "../domain/Protocol.js"
import type { ConnectionLog } from "./Connection.js"
import { flatString } from "./Http1Exchange.js"
import type { Posted, PostFailure } from "./httpAnswer.js"
import { classifyProbe, envelopeOf, initializeResultOf, refusedAsModernOnly } from "./modernBackend.js"
import { TransportError, type TransportErrorReason } from "./TransportError.js"

/**
 * The MCP session an HTTP connection holds with its instance, and how one is opened: a new
 * instance is probed with `server/discover` (the 2026-07-28 revision's opening) and initialized
 * the old way if it is not modern; the revision it spoke is remembered for the next session.
 * (Keeping it, sharing one opening among concurrent requests and opening it again when the
 * server forgets it is the connection's: http.ts.)
 */

type HttpInstance = Extract<InstanceDefinition, { transport: "http" }>

const INITIALIZE_TIMEOUT = Duration.seconds(30)

/** Which revision an instance speaks, remembered across its connections (see Transport.ts). */
export interface EraMemory {
  readonly get: () => "legacy" | "modern" | undefined
  readonly set: (era: "legacy" | "modern") => void
}

export type Session = LegacySession | ModernSession

export interface LegacySession {
  readonly era: "legacy"
  /** Absent for a stateless server that issues none. */
  readonly id: string | undefined
  readonly protocolVersion: string
  /** The server's answer to `initialize`. */
  readonly initializeResult: Record<string, unknown>
}

/**
 * A server of the 2026-07-28 revision has no session: what stands for one here is the version
 * both speak, the envelope every request carries (the client the gateway speaks for), and the
 * server's discover answer (also shown as an `initialize` result, which the gateway reads).
 */
export interface ModernSession {
  readonly era: "modern"
  readonly id: undefined
  readonly protocolVersion: string
  readonly initializeResult: Record<string, unknown>
  readonly discover: Record<string, unknown>
  readonly envelope: Record<string, unknown>
}

/** How long a backend may take to answer the `server/discover` probe before it is taken for an old one. */
const PROBE_TIMEOUT = Duration.seconds(10)

/** An old-style `initialize` was refused with 400 / -32022 naming a modern version: the server is modern-only. */
class ModernOnly {
  readonly _tag = "ModernOnly"
}

/**
 * A server's answer to `initialize`, one object for every session that got the same answer
 * from the instance (its capabilities, its instructions: often kilobytes, and the same for
 * thousands of sessions). Never changed once made (a session only reads it). Module-level but
 * no gateway's state: keyed weakly by the instance definition (one gateway's object), bounded.
 */
const results = new WeakMap<HttpInstance, Map<string, Record<string, unknown>>>()
const MAX_SHARED_RESULTS = 16
const sharedResult = (instance: HttpInstance, result: Record<string, unknown>): Record<string, unknown> => {
  let known = results.get(instance)
  if (known === undefined) results.set(instance, known = new Map())
  const key = canonicalJson(result)
  const shared = known.get(key)
  if (shared !== undefined) return shared
  if (known.size >= MAX_SHARED_RESULTS) known.clear()
  known.set(key, result)
  return result
}

/** What opening a session needs of its connection. */
export interface SessionOpener {
  readonly instance: HttpInstance
  readonly log: ConnectionLog
  /** Which revision the instance spoke last time, if remembered. */
  readonly era: EraMemory | undefined
  /** POSTs one request on `session` (none yet for `initialize`) and reads its answer. */
  readonly post: (method: string, params: Record<string, unknown> | undefined, session: Session | undefined) => Effect.Effect<Posted, PostFailure>
  /** Sends a message that has no answer. */
  readonly postOneWay: (message: unknown, session: Session) => void
}

/** The server answered, but opening a session with it failed. */
const failed = (self: SessionOpener, reason: TransportErrorReason, message: string) =>
  new TransportError({ instanceId: self.instance.id, reason, message, reachedBackend: true })

/** The old handshake: `initialize`, then `notifications/initialized`; the session id the server issues, if any. */
const initializeLegacy = (self: SessionOpener, params: Record<string, unknown>) =>
  Effect.gen(function*() {
    const { headers, response } = yield* self.post("initialize", params, undefined).pipe(
      Effect.timeoutFail({
        duration: INITIALIZE_TIMEOUT,
        onTimeout: () => failed(self, "timeout", `no answer to initialize within ${Duration.format(INITIALIZE_TIMEOUT)}`)
      }),
      Effect.catchTags({
        SessionGone: () => Effect.fail(failed(self, "protocol", "initialize was refused")),
        RequestTimeout: (e) => Effect.fail(failed(self, "timeout", e.message))
      })
    )
    if (refusedAsModernOnly(response)) return yield* Effect.fail(new ModernOnly())
    if ("error" in response) return yield* failed(self, "protocol", `initialize failed: ${response.error.message}`)
    const version = isObject(response.result) ? response.result.protocolVersion : undefined
    if (typeof version !== "string" || !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
      return yield* failed(self, "protocol", `server answered initialize with unsupported protocol version ${JSON.stringify(version)}`)
    }
    // (Copied: as it comes, it shares the memory of the answer's whole head, for as long as the session lives.)
    const sessionHeader = headers["mcp-session-id"] === undefined ? undefined : flatString(headers["mcp-session-id"])
    const opened: Session = {
      era: "legacy",
      id: sessionHeader,
      protocolVersion: version,
      initializeResult: sharedResult(self.instance, response.result as Record<string, unknown>)
    }
    self.postOneWay({ jsonrpc: "2.0", method: "notifications/initialized" }, opened)
    self.log.info(`session ${opened.id ?? "(stateless)"} with ${self.instance.endpoint}`)
    return opened
  })

/**
 * The revision's own opening: `server/discover`. A modern server answers with what it
 * supports; an old one with an error of some kind (unknown method, no session), which makes
 * it old. Only a server that cannot be reached fails here.
 */
const probeModern = (self: SessionOpener, params: Record<string, unknown>): Effect.Effect<ModernSession | { readonly why: string }, TransportError> => {
  const version = MODERN_PROTOCOL_VERSIONS[0]!
  const provisional: ModernSession = {
    era: "modern",
    id: undefined,
    protocolVersion: version,
    initializeResult: {},
    discover: {},
    envelope: envelopeOf(version, params)
  }
  return self.post("server/discover", undefined, provisional).pipe(
    Effect.timeoutFail({ duration: PROBE_TIMEOUT, onTimeout: () => failed(self, "timeout", `no answer to server/discover within ${Duration.format(PROBE_TIMEOUT)}`) }),
    Effect.map(({ response }) => classifyProbe(response)),
    Effect.catchAll((e) =>
      e._tag === "TransportError" && !e.reachedBackend
        ? Effect.fail(e)
        : Effect.succeed({ _tag: "Legacy" as const, why: e._tag === "TransportError" ? e.message : "no answer", silent: e._tag === "TransportError" && e.reason === "timeout" })
    ),
    Effect.map((outcome) => {
      if (outcome._tag === "Legacy") {
        // A silent server is worth saying at info: a modern one that hung is now spoken to the old way.
        if ("silent" in outcome && outcome.silent) self.log.info(`${outcome.why}; trying the old protocol (initialize)`)
        else self.log.debug(`not a ${version} server (${outcome.why}); initializing`)
        return { why: outcome.why }
      }
      const opened: ModernSession = {
        ...provisional,
        protocolVersion: outcome.version,
        envelope: envelopeOf(outcome.version, params),
        discover: outcome.discover,
        initializeResult: initializeResultOf(outcome.version, outcome.discover, self.instance.id)
      }
      return opened
    })
  )
}

/**
 * Opens the "session": the revision the instance spoke last time is tried first (a new
 * instance is probed with `server/discover`, and initialized the old way if it is not modern;
 * an old one that now refuses `initialize` as modern-only is probed again).
 */
export const openSession = (self: SessionOpener, params: Record<string, unknown>): Effect.Effect<Session, TransportError> =>
  Effect.gen(function*() {
    const remembered = self.era?.get()
    let opened: Session | undefined
    let why: string | undefined
    if (remembered !== "legacy") {
      const probed = yield* probeModern(self, params)
      if ("era" in probed) opened = probed
      else why = probed.why
    }
    if (opened === undefined) {
      const unusable = (reason: string) =>
        failed(self, "protocol", `the server refuses initialize as modern-only, but its answer to server/discover is not usable: ${reason}`)
      opened = yield* initializeLegacy(self, params).pipe(
        Effect.catchTag("ModernOnly", () =>
          why !== undefined
            ? Effect.fail(unusable(why))
            : Effect.flatMap(probeModern(self, params), (probed) => ("era" in probed ? Effect.succeed(probed) : Effect.fail(unusable(probed.why)))))
      )
    }
    if (remembered !== opened.era) {
      self.era?.set(opened.era)
      if (opened.era === "modern") self.log.info(`${self.instance.endpoint} speaks MCP ${opened.protocolVersion} (no session; server/discover)`)
    }
    return opened
  })
