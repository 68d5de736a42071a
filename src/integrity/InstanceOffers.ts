import { Context, Duration, Effect, FiberMap, Layer, PubSub, Runtime, type Scope, Stream } from "effect"
import { GatewayConfig, DEFAULT_LIMITS } from "../config/GatewayConfig.js"
import { ErrorCode, isObject } from "../domain/JsonRpc.js"
import { type Definition, type DefinitionKind, definitionKey, definitionsOfList, LIST_OF, offerDigest } from "../domain/ToolDefinitions.js"
import { isoTime, Timer } from "../clock/Timer.js"
import type { InstanceState } from "../instance/InstanceState.js"
import { Registry, type TemplateState } from "../registry/Registry.js"
import { Transport } from "../transport/Transport.js"
import { integrityPolicyOf, watchesOffers } from "./integrityPolicy.js"
import { differencesOf, type InstanceOffer, matches, type Reference, referenceOf } from "./offerDrift.js"
import { type IntegrityPolicy, ToolPins } from "./ToolPins.js"

/** Instances whose lists are read at once (start-up probes thousands: their reads queue). */
const READ_CONCURRENCY = 16

const KINDS: ReadonlyArray<DefinitionKind> = ["tool", "prompt", "resource_template"]
/** The server capability that declares each kind (a server that declares none of them is asked for all three). */
const CAPABILITY_OF: Readonly<Record<DefinitionKind, string>> = { tool: "tools", prompt: "prompts", resource_template: "resources" }

/** What `/gateway/registry` shows of a template's instances' offers. */
export interface TemplateDriftView {
  /** What the offers are compared with: the pins, or (nothing pinned) the offer most instances make. */
  readonly reference: "pins" | "majority"
  readonly digest: string | null
  /** Some instance's offer differs from the reference. */
  readonly detected: boolean
  readonly policy: IntegrityPolicy["drift"]
  readonly instances: ReadonlyArray<{
    readonly id: string
    /** null: not read yet (the instance is used meanwhile). */
    readonly digest: string | null
    readonly matches_pins: boolean
    readonly read_at: string | null
    /** One readable diff per definition that differs from the reference (`-` reference, `+` this instance). */
    readonly differences: ReadonlyArray<string>
  }>
}

export interface InstanceOffersShape {
  /** A health probe of the instance ended: its lists are read when due (first passed probe, a restart, or drift_check_interval since the last read). */
  readonly probed: (instance: InstanceState, passed: boolean) => void
  /** The instance told a client session a list changed (`notifications/*\/list_changed`): read again now. */
  readonly noticed: (instance: InstanceState, method: string) => void
  /** Reads the instance's lists now and waits for it (tests; views never wait for a backend). */
  readonly refresh: (instance: InstanceState) => Effect.Effect<void>
  /** The template's drift as of now (undefined: its offers are not watched). */
  readonly drift: (template: string) => TemplateDriftView | undefined
  /**
   * Templates where an instance started or stopped differing, from the moment of the call (the
   * subscription lives in the caller's scope): what a cache filled from it held may be another list.
   */
  readonly verdictChanges: Effect.Effect<Stream.Stream<string>, never, Scope.Scope>
}

/** What is known of one watched instance. */
interface Entry {
  offer: InstanceOffer | undefined
  /** Its process (pid, restarts) when last read: another one is read again. */
  generation: string | undefined
  /** Healthy at its last probe (a probe that finds it healthy again reads it again). */
  healthy: boolean
  /** A notice came while a read was running: read once more after it. */
  again: boolean
  /** Whether the instance was held back at the last verdict (a change is logged once). */
  drifted: boolean
}

const generationOf = (instance: InstanceState) => instance.channel === undefined ? undefined : `${instance.channel.pid ?? ""}:${instance.channel.restarts}`

/**
 * Drift between instances (issue 23, docs/security.md): each instance's own tools/list,
 * prompts/list and resources/templates/list, read from the instance itself the way a health
 * probe reaches it, kept as a digest and definitions, and compared with the template's pins
 * (or, nothing pinned, with what most instances offer). An instance that differs is marked
 * (`InstanceState.offerDrifted`) and, under `route_to_pinned`, takes no new requests or sessions
 * while another instance matches (dispatch/RequestAttempts.ts `candidatesOf`).
 *
 * Reads happen at a passed health probe when due (the first, after a restart or a recovery, or
 * `gateway.drift_check_interval` after the last read) and at once when the instance says a list
 * changed; no timer of their own. Only templates of two instances or more are read (one has
 * nothing to differ from). State lives as long as the instance: removed with it.
 */
export class InstanceOffers extends Context.Tag("mcp-gateway/InstanceOffers")<InstanceOffers, InstanceOffersShape>() {
  static readonly layer: Layer.Layer<InstanceOffers, never, Registry | Transport | Timer | GatewayConfig | ToolPins> = Layer.scoped(
    InstanceOffers,
    Effect.gen(function*() {
      const registry = yield* Registry
      const transport = yield* Transport
      const timer = yield* Timer
      const config = yield* GatewayConfig
      const pins = yield* ToolPins
      const intervalMs = Duration.toMillis(config.gateway.driftCheckInterval ?? Duration.seconds(DEFAULT_LIMITS.driftCheckIntervalSeconds))
      const maxPages = config.gateway.maxListPages
      const policyOf = (template: TemplateState) => integrityPolicyOf(template, config.gateway.toolIntegrity)
      const runtime = yield* Effect.runtime<never>()
      const reads = yield* FiberMap.make<InstanceState>()
      const readSlots = yield* Effect.makeSemaphore(READ_CONCURRENCY)
      const entries = new Map<InstanceState, Entry>()
      /** Each template's reference digest so far (a tie of the majority keeps it). */
      const references = new Map<string, string>()
      // (Sliding: a subscriber that lags loses old names, and a dropped cache is only a miss.)
      const verdicts = yield* PubSub.sliding<string>(1024)

      const current = (instance: InstanceState): TemplateState | undefined => {
        const template = registry.template(instance.template)
        return template?.instances.get(instance.id) === instance ? template : undefined
      }

      /** Every page of one list by definitionKey (none when the server has no such method), or why it could not be read. */
      const readList = (instance: InstanceState, kind: DefinitionKind, timeout: Duration.Duration) =>
        Effect.gen(function*() {
          const found = new Map<string, Definition>()
          let cursor: unknown = undefined
          for (let page = 0; page < maxPages; page++) {
            const response = yield* transport.request(instance.definition, LIST_OF[kind].method, cursor === undefined ? undefined : { cursor }).pipe(
              Effect.timeoutFail({ duration: timeout, onTimeout: () => `no answer to ${LIST_OF[kind].method} within ${Duration.format(timeout)}` }),
              Effect.mapError((e) => typeof e === "string" ? e : e.message)
            )
            if ("error" in response) {
              if (response.error.code === ErrorCode.MethodNotFound && page === 0) return found
              return yield* Effect.fail(`${LIST_OF[kind].method} answered with an error: ${response.error.message}`)
            }
            for (const [name, definition] of definitionsOfList(kind, response.result)) found.set(definitionKey(kind, name), definition)
            cursor = isObject(response.result) ? response.result.nextCursor : undefined
            if (typeof cursor !== "string" || cursor === "") return found
          }
          return yield* Effect.fail(`${LIST_OF[kind].method} kept answering with another nextCursor past ${maxPages} pages (max_list_pages)`)
        })

      /** Writes each instance's verdict (the boolean the dispatcher reads) and logs the ones that changed. */
      const judge = (template: TemplateState) =>
        Effect.gen(function*() {
          const policy = policyOf(template)
          const known: Array<InstanceOffer> = []
          for (const i of template.instances.values()) {
            const offer = entries.get(i)?.offer
            if (offer !== undefined) known.push(offer)
          }
          const reference = referenceOf(known, pins.pinned(template.name), references.get(template.name))
          if (reference.kind === "majority" && reference.digest !== undefined) references.set(template.name, reference.digest)
          for (const i of template.instances.values()) {
            const entry = entries.get(i)
            const differs = !matches(entry?.offer, reference)
            i.offerDiffers = differs
            i.offerDrifted = differs && policy.drift === "route_to_pinned"
            if (entry === undefined || entry.drifted === differs) continue
            entry.drifted = differs
            yield* PubSub.publish(verdicts, template.name)
            const log = differs
              ? Effect.logWarning(
                `drift: this instance offers other definitions than the ${reference.kind === "pins" ? "pins" : "other instances"} of template ` +
                  `${template.name} (${differencesOf(entry.offer!, reference).join("; ")}); ` +
                  (policy.drift === "route_to_pinned" ? "no new requests or sessions go to it while another instance matches" : "it is used anyway (drift: off)")
              )
              : Effect.logInfo(`drift: this instance offers what the ${reference.kind === "pins" ? "pins hold" : "other instances offer"} again`)
            yield* log.pipe(Effect.annotateLogs({ instance: `${template.name}/${i.id}` }))
          }
        })

      /**
       * Reads the instance's three lists, tells the pins, and judges its template again. Healthy
       * instances registered before it and not read yet are read first: first sight pins what
       * the longest-serving instance offers, not a newcomer's (a template that just got its
       * second instance).
       */
      const read = (instance: InstanceState): Effect.Effect<void> =>
        Effect.gen(function*() {
          const template = current(instance)
          if (template === undefined || !watchesOffers(policyOf(template))) return
          for (const earlier of template.instances.values()) {
            if (earlier === instance) break
            if (earlier.status === "healthy" && entries.get(earlier)?.offer === undefined && watch(earlier) !== undefined) yield* readOwn(earlier)
          }
          yield* readOwn(instance)
        })

      /** Reads one instance's three lists, tells the pins, and judges its template again. */
      const readOwn = (instance: InstanceState): Effect.Effect<void> =>
        Effect.gen(function*() {
          const template = current(instance)
          if (template === undefined) return
          const entry = entries.get(instance)
          if (entry === undefined) return
          entry.again = false
          const timeout = template.settings.timeout
          const generation = generationOf(instance)
          const outcome = yield* Effect.gen(function*() {
            const initialized = yield* transport.initializeResult(instance.definition).pipe(Effect.mapError((e) => e.message))
            const capabilities = isObject(initialized.capabilities) ? initialized.capabilities : undefined
            const declaresAny = capabilities !== undefined && KINDS.some((k) => capabilities[CAPABILITY_OF[k]] !== undefined)
            const byKind = new Map<DefinitionKind, Map<string, Definition>>()
            for (const kind of KINDS) {
              const declared = !declaresAny || capabilities![CAPABILITY_OF[kind]] !== undefined
              byKind.set(kind, declared ? yield* readList(instance, kind, timeout) : new Map())
            }
            return byKind
          }).pipe(Effect.either)
          if (outcome._tag === "Left") {
            // The offer known stays what it was (or unknown): a failed read says nothing of drift.
            return yield* Effect.logDebug(`drift: could not read the instance's lists: ${outcome.left}`)
          }
          // Removed (or replaced) while it was read: nothing of it is kept.
          if (current(instance) !== template || entries.get(instance) !== entry) return
          const definitions = new Map<string, Definition>()
          const pinnedKinds = new Set<DefinitionKind>()
          for (const pin of pins.pinned(template.name)?.values() ?? []) pinnedKinds.add(pin.definition.kind)
          for (const [kind, found] of outcome.right) {
            for (const [key, definition] of found) definitions.set(key, definition)
            // First sight pins what the first healthy instance offers. Once a kind is pinned, an
            // instance's own read is not shown to the pins: a held-back instance's difference
            // would otherwise block the item for the whole template, the matching instances'
            // clients too; it shows as drift instead, and what clients are served (through
            // the faces, from whichever instances serve) goes by the pins' policy.
            if (!pinnedKinds.has(kind)) {
              const byName = new Map<string, Definition>()
              for (const definition of found.values()) byName.set(definition.name, definition)
              pins.observe(template.name, kind, byName, instance.id)
            }
          }
          const now = timer.now()
          const digest = offerDigest(definitions.values())
          if (entry.offer?.digest !== digest) {
            yield* Effect.logDebug(`drift: the instance offers ${definitions.size} definitions (digest ${digest.slice(0, 12)})`)
          }
          entry.offer = { definitions, digest, readAt: now, since: instance.registeredAt }
          entry.generation = generation
          // Its siblings not read yet (a template that just got its second instance) are read now, not at their next probe.
          for (const sibling of template.instances.values()) {
            if (sibling !== instance && sibling.status === "healthy" && entries.get(sibling)?.offer === undefined) start(sibling)
          }
          yield* judge(template)
        }).pipe(Effect.annotateLogs({ instance: `${instance.template}/${instance.id}` }))

      /** A read of the instance in a fiber of its own (one at a time per instance; a request while one runs reads once more after it). */
      const start = (instance: InstanceState): void => {
        const entry = watch(instance)
        if (entry === undefined) return
        if (FiberMap.unsafeHas(reads, instance)) {
          entry.again = true
          return
        }
        const once: Effect.Effect<void> = readSlots.withPermits(1)(read(instance)).pipe(
          Effect.zipRight(Effect.suspend(() => entries.get(instance)?.again === true ? once : Effect.void))
        )
        Runtime.runFork(runtime)(FiberMap.run(reads, instance, once, { onlyIfMissing: true }))
      }

      /** The instance's entry, made if need be; undefined when its template's offers are not watched (policy, or a single instance: nothing to differ from). */
      const watch = (instance: InstanceState): Entry | undefined => {
        const template = current(instance)
        if (template === undefined || template.instances.size < 2 || !watchesOffers(policyOf(template))) return undefined
        let entry = entries.get(instance)
        if (entry === undefined) {
          entry = { offer: undefined, generation: undefined, healthy: false, again: false, drifted: false }
          entries.set(instance, entry)
        }
        return entry
      }

      const forget = (instance: InstanceState) =>
        Effect.suspend(() => {
          entries.delete(instance)
          instance.offerDrifted = instance.offerDiffers = false
          return FiberMap.remove(reads, instance)
        })

      const probed: InstanceOffersShape["probed"] = (instance, passed) => {
        const entry = watch(instance)
        if (entry === undefined) return
        const wasHealthy = entry.healthy
        entry.healthy = passed && instance.status === "healthy"
        if (!entry.healthy) return
        const offer = entry.offer
        const due = offer === undefined || !wasHealthy || generationOf(instance) !== entry.generation || timer.now() - offer.readAt >= intervalMs
        if (due) start(instance)
        // Pins may have changed since (an approval): the verdicts follow at every probe.
        else Runtime.runFork(runtime)(judge(current(instance)!))
      }

      const noticed: InstanceOffersShape["noticed"] = (instance, method) => {
        if (method !== "notifications/tools/list_changed" && method !== "notifications/prompts/list_changed" && method !== "notifications/resources/list_changed") return
        if (watch(instance) !== undefined) start(instance)
      }

      const refresh: InstanceOffersShape["refresh"] = (instance) => Effect.suspend(() => watch(instance) === undefined ? Effect.void : read(instance))

      /** Judges the template again, or forgets its instances when its offers are no longer watched (policy off, one instance left). */
      const rejudge = (name: string) =>
        Effect.suspend(() => {
          const template = registry.template(name)
          if (template !== undefined && template.instances.size >= 2 && watchesOffers(policyOf(template))) return judge(template)
          references.delete(name)
          return template === undefined ? Effect.void : Effect.forEach(template.instances.values(), forget, { discard: true })
        })

      const drift: InstanceOffersShape["drift"] = (name) => {
        const template = registry.template(name)
        if (template === undefined || template.instances.size < 2) return undefined
        const policy = policyOf(template)
        if (!watchesOffers(policy)) return undefined
        const known: Array<InstanceOffer> = []
        for (const i of template.instances.values()) {
          const offer = entries.get(i)?.offer
          if (offer !== undefined) known.push(offer)
        }
        const reference: Reference = referenceOf(known, pins.pinned(name), references.get(name))
        const instances = Array.from(template.instances.values(), (i) => {
          const offer = entries.get(i)?.offer
          return {
            id: i.id,
            digest: offer?.digest ?? null,
            matches_pins: matches(offer, reference),
            read_at: offer === undefined ? null : isoTime(offer.readAt),
            differences: offer === undefined ? [] : differencesOf(offer, reference)
          }
        })
        return {
          reference: reference.kind,
          digest: reference.digest ?? null,
          detected: instances.some((i) => !i.matches_pins),
          policy: policy.drift,
          instances
        }
      }

      const changes = yield* registry.changes
      yield* changes.pipe(
        Stream.runForEach((change) => {
          switch (change._tag) {
            case "InstanceAdded":
              return Effect.void
            case "InstanceRemoved":
              // The others' verdicts may change with it gone (a majority).
              return forget(change.instance).pipe(Effect.zipRight(rejudge(change.instance.template)))
            case "TemplateChanged":
              return rejudge(change.template.name)
          }
        }),
        Effect.forkScoped
      )

      return { probed, noticed, refresh, drift, verdictChanges: Stream.fromPubSub(verdicts, { scoped: true }) }
    })
  )

  /** Nothing read, nothing held back (what `config validate` builds: no transport, no instance). */
  static readonly layerNoop: Layer.Layer<InstanceOffers> = Layer.succeed(InstanceOffers, {
    probed: () => {},
    noticed: () => {},
    refresh: () => Effect.void,
    drift: () => undefined,
    verdictChanges: Effect.succeed(Stream.never)
  })
}
