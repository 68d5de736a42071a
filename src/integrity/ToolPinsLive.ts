import { Effect, Layer, PubSub, Queue, Stream } from "effect"
import { Timer } from "../clock/Timer.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { TemplateNotFound } from "../domain/GatewayError.js"
import type { IntegrityPolicy } from "../domain/IntegrityPolicy.js"
import { type Definition, definitionFromText, definitionKey, type DefinitionKind, describeChange } from "../domain/ToolDefinitions.js"
import { GatewayMetrics } from "../observability/GatewayMetrics.js"
import { type PersistedPins, type PinStoreShape, type StoredPin } from "../registry/PinStore.js"
import { Registry } from "../registry/Registry.js"
import { integrityPolicyOf } from "./integrityPolicy.js"
import { type Change, type Pin, type TemplateIntegrity, ToolPins, type ToolPinsShape } from "./ToolPins.js"

const NOTHING: ReadonlySet<string> = new Set()
const WHOLE = { complete: true, lastPage: true, audience: "" }
/** Audiences (capability sets) a template's first sights are remembered for; past this, nothing more is pinned on first sight. */
const MAX_AUDIENCES = 64
/** Changes remembered as announced per template; past this, the memory starts again (a change may then be logged once more). */
const MAX_ANNOUNCED = 10_000

/** A first sight's source names its audience, so that a restart or another replica knows it was seen. */
const firstSightSource = (audience: string) => audience === "" ? "first sight" : `first sight (${audience})`
const audienceOfSource = (source: string): string | undefined =>
  source === "first sight" ? "" : source.startsWith("first sight (") && source.endsWith(")") ? source.slice(13, -1) : undefined
const seenKey = (kind: DefinitionKind, audience: string) => `${kind}\u0000${audience}`
/** Work (stores, logs) waiting for the service's fiber; past this, the oldest new pins are only kept in memory. */
const MAX_PENDING = 10_000

/** One template's pins and what its instances offer against them. */
interface TemplatePins {
  /** By definitionKey. */
  readonly pins: Map<string, Pin>
  /** The latest definition offered of each item (from any instance), by definitionKey: what an approval pins. */
  readonly offered: Map<string, { readonly definition: Definition; readonly instances: Set<string> }>
  /** Open changes (blocked, warned, or the last allowed one), by definitionKey. */
  readonly changes: Map<string, Change>
  /** What clients may not see or call, per kind, by name (the blocked changes): read on the request path. */
  readonly blocked: Record<DefinitionKind, Map<string, Change>>
  /**
   * The changes logged and counted (kind:name, what, both digests, action): a change is
   * announced once, even when instances that differ make it come and go (drift).
   */
  readonly announced: Set<string>
  /** Pinned items whose removal an operator approved: not shown as removed again while they stay away (their pin stays, for if they come back). */
  readonly gone: Set<string>
  /**
   * `{kind}\u0000{audience}` of the offers seen to their last page: trust on first use pins the
   * first offer of a kind to each audience whole (a server may offer more to clients that
   * declare more, as server-everything offers its sampling tool to clients that sample).
   */
  readonly seen: Set<string>
}

const newTemplatePins = (): TemplatePins => ({
  pins: new Map(),
  offered: new Map(),
  changes: new Map(),
  blocked: { tool: new Map(), prompt: new Map(), resource_template: new Map() },
  seen: new Set(),
  announced: new Set(),
  gone: new Set()
})

const pinOf = (stored: StoredPin): Pin => ({
  definition: definitionFromText(stored.kind, stored.name, stored.definition),
  pinnedAt: stored.pinned_at,
  source: stored.source
})
const digestOfStored = (stored: StoredPin) => definitionFromText(stored.kind, stored.name, stored.definition).digest
const storedOf = (pin: Pin): StoredPin => ({
  kind: pin.definition.kind,
  name: pin.definition.name,
  definition: pin.definition.text,
  pinned_at: pin.pinnedAt,
  source: pin.source
})

const ACTION_OF: Readonly<Record<IntegrityPolicy["on_change"], Change["action"]>> = { block: "blocked", warn: "warned", allow: "allowed" }

/** What a refused call says: what changed, and how an operator lets it through. */
export const describeRefusal = (template: string, change: Change): string => {
  const noun = change.kind.replace("_", " ")
  const what = change.change === "new"
    ? `${noun} '${change.name}' is new since the definitions of template ${template} were approved (digest ${change.offered?.digest.slice(0, 12)})`
    : `${noun} '${change.name}' changed since it was approved (pinned digest ${change.pinned?.digest.slice(0, 12)}, offered ${change.offered?.digest.slice(0, 12)})`
  return `${what}; an operator must approve it: mcp-gateway tools approve ${template} ${change.name}`
}

/**
 * The pins of every template (tool integrity, docs/security.md): what the first offer of a
 * template showed (trust on first use), approvals and `allow` re-pins; kept in the registry's
 * store (the registry file, or Redis shared by replicas: first sight is first-writer-wins there).
 * `observe` and `blocked` are synchronous (the request path reads them); what must wait (a
 * store's write, the log, the audit line) goes to one fiber of the layer, through a queue.
 */
export const ToolPinsLive: Layer.Layer<ToolPins, never, Registry | GatewayConfig | GatewayMetrics | Timer> = Layer.scoped(
  ToolPins,
  Effect.gen(function*() {
    const registry = yield* Registry
    const config = yield* GatewayConfig
    const metrics = yield* GatewayMetrics
    const timer = yield* Timer
    const store: PinStoreShape | undefined = registry.pinStore
    const templates = new Map<string, TemplatePins>()
    const listChanges = yield* PubSub.unbounded<{ readonly template: string; readonly kind: DefinitionKind }>()
    const work = yield* Queue.dropping<Effect.Effect<void>>(MAX_PENDING)

    // `start --locked`: every template serves only what the lock file holds, the rest refused as `block` does.
    const lockedEverywhere = config.gateway.toolsLock?.locked === true
    const lockedPolicies = new WeakMap<IntegrityPolicy, IntegrityPolicy>()
    const policyOf = (template: string): IntegrityPolicy => {
      const policy = integrityPolicyOf(registry.template(template), config.gateway.toolIntegrity)
      if (!lockedEverywhere) return policy
      // (One object per configured policy, not one per list seen.)
      let locked = lockedPolicies.get(policy)
      if (locked === undefined) lockedPolicies.set(policy, locked = { ...policy, pin: "locked", on_change: "block" })
      return locked
    }
    /** The lock file's definitions by template, then by definitionKey (gateway.tools_lock_file, read at start). */
    const lockFile = new Map(
      Array.from(config.gateway.toolsLock?.lock?.templates ?? [], ([template, definitions]) =>
        [template, new Map(definitions.map((d) => [definitionKey(d.kind, d.name), d]))] as const)
    )
    /** Start-up is over: from now on a `locked` template takes approvals made on other replicas. */
    let started = false
    const stateOf = (template: string) => {
      let state = templates.get(template)
      if (state === undefined) templates.set(template, state = newTemplatePins())
      return state
    }
    // from the clock: the Timer's time, as ISO text for views and the store.
    const nowIso = () => new Date(timer.now()).toISOString()
    const later = (effect: Effect.Effect<void>) => void Queue.unsafeOffer(work, effect)
    const listChanged = (template: string, kind: DefinitionKind) => later(Effect.asVoid(PubSub.publish(listChanges, { template, kind })))

    /** New pins to the store (first sight: whoever wrote first, here or on another replica, holds). */
    const persist = (template: string, pins: ReadonlyArray<Pin>, mode: "first" | "replace") => {
      if (store === undefined || pins.length === 0) return Effect.void
      return store.save(template, pins.map(storedOf), mode).pipe(
        Effect.flatMap((holding) => Effect.sync(() => adopt(template, holding))),
        Effect.catchAll((e) => Effect.logError(`tool integrity: template ${template}: the pins could not be stored (${e.message}); they hold here until the next restart`))
      )
    }

    /** A change found: logged once with its diff, audited, counted. */
    const announce = (template: string, state: TemplatePins, change: Change) => {
      const said = `${definitionKey(change.kind, change.name)}\u0000${change.change}\u0000${change.pinned?.digest}\u0000${change.offered?.digest}\u0000${change.action}`
      if (state.announced.has(said)) return
      if (state.announced.size >= MAX_ANNOUNCED) state.announced.clear()
      state.announced.add(said)
      metrics.toolChanges({ template, kind: change.kind, action: change.action }).update(1)
      const advice = change.action === "blocked" ? `; left out and refused until approved: mcp-gateway tools approve ${template} ${change.name}` : ""
      later(
        Effect.logWarning(`tool integrity: template ${template}: ${change.diff}\n(${change.action}${advice})`).pipe(
          Effect.zipRight(Effect.logInfo(`audit: tool_${change.change} ${template}/${definitionKey(change.kind, change.name)} ${change.action}`)),
          Effect.annotateLogs({ audit: `tool_${change.change}`, template, kind: change.kind, name: change.name, action: change.action })
        )
      )
    }

    /**
     * Where one item stands against its pin, by the template's policy: matching (the change
     * closes), changed or new (a change by on_change), or pinned afresh (`allow`). Returns
     * whether what clients may use changed (a block began or ended).
     */
    const evaluate = (template: string, state: TemplatePins, policy: IntegrityPolicy, key: string, kind: DefinitionKind, name: string, instanceId: string | undefined): boolean => {
      const pin = state.pins.get(key)
      const offered = state.offered.get(key)?.definition
      const open = state.changes.get(key)
      const wasBlocked = state.blocked[kind].has(name)
      const close = () => {
        if (open !== undefined && open.action !== "allowed") state.changes.delete(key)
        state.blocked[kind].delete(name)
        return wasBlocked
      }
      if (policy.pin === "off" || offered === undefined) return close()
      if (pin !== undefined && pin.definition.digest === offered.digest) return close()
      const what: Change["change"] = pin === undefined ? "new" : "changed"
      if (open !== undefined && open.change === what && open.offered?.digest === offered.digest && open.pinned?.digest === pin?.definition.digest && open.action === ACTION_OF[policy.on_change]) {
        if (instanceId !== undefined && !open.instances.includes(instanceId)) state.changes.set(key, { ...open, instances: [...open.instances, instanceId] })
        return false
      }
      const change: Change = {
        kind,
        name,
        change: what,
        pinned: pin?.definition,
        offered,
        diff: describeChange(pin?.definition, offered),
        action: ACTION_OF[policy.on_change],
        firstSeenAt: nowIso(),
        instances: Array.from(state.offered.get(key)?.instances ?? [])
      }
      state.changes.set(key, change)
      announce(template, state, change)
      if (policy.on_change === "allow") {
        const repinned: Pin = { definition: offered, pinnedAt: change.firstSeenAt, source: "allow" }
        state.pins.set(key, repinned)
        state.blocked[kind].delete(name)
        later(persist(template, [repinned], "replace"))
        return wasBlocked
      }
      if (policy.on_change === "block") {
        state.blocked[kind].set(name, change)
        return !wasBlocked || open?.offered?.digest !== offered.digest
      }
      state.blocked[kind].delete(name)
      return wasBlocked
    }

    /** Pins that hold in the store (another replica's first sight or approval): taken, and their items evaluated again. */
    const adopt = (template: string, holding: ReadonlyArray<StoredPin>) => {
      const state = stateOf(template)
      const policy = policyOf(template)
      const kinds = new Set<DefinitionKind>()
      for (const stored of holding) {
        const key = definitionKey(stored.kind, stored.name)
        // A `locked` template holds only the lock file's pins, and what is approved while it runs.
        if (policy.pin === "locked" && !lockFile.get(template)?.has(key) && !(started && stored.source.startsWith("approved by"))) continue
        // (Pins of a kind mean its first offer to plain clients was seen, here or elsewhere.)
        state.seen.add(seenKey(stored.kind, ""))
        const audience = audienceOfSource(stored.source)
        if (audience !== undefined) state.seen.add(seenKey(stored.kind, audience))
        const known = state.pins.get(key)
        if (known !== undefined && known.definition.digest === digestOfStored(stored)) continue
        // A stored first sight wins over this replica's (the first writer's); otherwise the later
        // pin wins (a read of the store that started before this replica's approval reached it
        // must not undo the approval).
        if (known !== undefined && !(audienceOfSource(known.source) !== undefined && audience !== undefined) && known.pinnedAt > stored.pinned_at) continue
        const pin = pinOf(stored)
        state.pins.set(key, pin)
        if (evaluate(template, state, policy, key, stored.kind, stored.name, undefined)) kinds.add(stored.kind)
      }
      for (const kind of kinds) listChanged(template, kind)
    }
    const adoptAll = (persisted: PersistedPins) => {
      for (const [template, pins] of Object.entries(persisted)) adopt(template, pins)
    }

    const observe: ToolPinsShape["observe"] = (template, kind, offered, instanceId) =>
      observeOffer(template, kind, offered, instanceId, WHOLE)

    const observeOffer: ToolPinsShape["observeOffer"] = (template, kind, offered, instanceId, { audience = "", complete, lastPage }) => {
      const policy = policyOf(template)
      if (policy.pin === "off") return NOTHING
      const state = stateOf(template)
      const seen = seenKey(kind, audience)
      // (A template the lock file holds is pinned: whatever the audience, nothing more on first sight.)
      const firstSight = policy.pin === "trust_on_first_use" && !state.seen.has(seen) && state.seen.size < MAX_AUDIENCES && !lockFile.has(template)
      // (The first listing is pinned up to its last page.)
      if (lastPage && state.seen.size < MAX_AUDIENCES) state.seen.add(seen)
      const fresh: Array<Pin> = []
      let changed = false
      for (const definition of offered.values()) {
        const key = definitionKey(kind, definition.name)
        if (state.gone.size > 0) state.gone.delete(key)
        const known = state.offered.get(key)
        if (known === undefined || known.definition.digest !== definition.digest) {
          state.offered.set(key, { definition, instances: new Set(instanceId === undefined ? [] : [instanceId]) })
        } else if (instanceId !== undefined) known.instances.add(instanceId)
        if (firstSight && !state.pins.has(key)) {
          const pin: Pin = { definition, pinnedAt: nowIso(), source: firstSightSource(audience) }
          state.pins.set(key, pin)
          fresh.push(pin)
          continue
        }
        // (The common case, an unchanged item with nothing open, costs one comparison.)
        const pin = state.pins.get(key)
        if (pin !== undefined && pin.definition.digest === definition.digest && !state.changes.has(key)) continue
        if (evaluate(template, state, policy, key, kind, definition.name, instanceId)) changed = true
      }
      if (complete && !firstSight) {
        for (const [key, pin] of state.pins) {
          if (pin.definition.kind !== kind || offered.has(pin.definition.name)) continue
          const open = state.changes.get(key)
          if (open?.change === "removed" || state.gone.has(key)) continue
          const change: Change = {
            kind,
            name: pin.definition.name,
            change: "removed",
            pinned: pin.definition,
            offered: undefined,
            diff: describeChange(pin.definition, undefined),
            action: "warned",
            firstSeenAt: nowIso(),
            instances: instanceId === undefined ? [] : [instanceId]
          }
          state.changes.set(key, change)
          announce(template, state, change)
        }
      }
      if (fresh.length > 0) later(persist(template, fresh, "first"))
      if (changed) listChanged(template, kind)
      const blocked = state.blocked[kind]
      if (blocked.size === 0) return NOTHING
      const names = new Set<string>()
      for (const name of offered.keys()) if (blocked.has(name)) names.add(name)
      return names
    }

    const blocked = (template: string, kind: DefinitionKind, name: string): Change | undefined => {
      const state = templates.get(template)
      if (state === undefined) return undefined
      const change = state.blocked[kind].get(name)
      if (change === undefined) return undefined
      // (A reload may have relaxed the policy since: blocks are evaluated again on TemplateChanged, this is the guard meanwhile.)
      const policy = policyOf(template)
      return policy.pin === "off" || policy.on_change !== "block" ? undefined : change
    }

    const pinned: ToolPinsShape["pinned"] = (template) => {
      if (policyOf(template).pin === "off") return undefined
      const state = templates.get(template)
      return state === undefined || state.pins.size === 0 ? undefined : state.pins
    }

    const matches = (change: Change, names: ReadonlyArray<string> | undefined) =>
      names === undefined || names.some((n) => n === change.name || n === definitionKey(change.kind, change.name))

    const approve: ToolPinsShape["approve"] = (template, names, by) =>
      Effect.gen(function*() {
        if (registry.template(template) === undefined && !templates.has(template)) return yield* new TemplateNotFound({ template })
        const state = stateOf(template)
        const now = nowIso()
        const repinned: Array<Pin> = []
        const kinds = new Set<DefinitionKind>()
        for (const [key, change] of Array.from(state.changes)) {
          if (!matches(change, names)) continue
          if (change.change === "removed") {
            state.changes.delete(key)
            state.gone.add(key)
            continue
          }
          const offered = state.offered.get(key)?.definition ?? change.offered
          if (offered === undefined) continue
          const pin: Pin = { definition: offered, pinnedAt: now, source: `approved by ${by}` }
          state.pins.set(key, pin)
          state.changes.delete(key)
          if (state.blocked[change.kind].delete(change.name)) kinds.add(change.kind)
          repinned.push(pin)
        }
        if (repinned.length > 0 && store !== undefined) {
          yield* store.save(template, repinned.map(storedOf), "replace").pipe(
            Effect.catchAll((e) => Effect.logError(`tool integrity: template ${template}: the approval could not be stored (${e.message}); it holds here until the next restart`))
          )
        }
        for (const kind of kinds) listChanged(template, kind)
        yield* Effect.logInfo(`audit: tools_approved ${template} ${repinned.map((p) => definitionKey(p.definition.kind, p.definition.name)).join(", ") || "(nothing pending)"}`).pipe(
          Effect.annotateLogs({ audit: "tools_approved", template, who: by, what: repinned.map((p) => p.definition.name).join(",") })
        )
        return repinned
      })

    const integrityOf = (template: string): TemplateIntegrity => {
      const state = templates.get(template)
      return {
        template,
        policy: policyOf(template),
        pins: Array.from(state?.pins.values() ?? [], (p) => ({
          kind: p.definition.kind,
          name: p.definition.name,
          digest: p.definition.digest,
          pinnedAt: p.pinnedAt,
          source: p.source
        })).sort((a, b) => definitionKey(a.kind, a.name).localeCompare(definitionKey(b.kind, b.name))),
        changes: Array.from(state?.changes.values() ?? []).sort((a, b) => definitionKey(a.kind, a.name).localeCompare(definitionKey(b.kind, b.name)))
      }
    }
    const report: ToolPinsShape["report"] = (template) =>
      Effect.sync(() => {
        if (template !== undefined) return [integrityOf(template)]
        const names = new Set([...registry.templates().map((t) => t.name), ...templates.keys()])
        return Array.from(names).sort().map(integrityOf)
      })

    /** A template's policy changed (a reload): every item it has stands again by the new one. */
    const reevaluate = (template: string) => {
      const state = templates.get(template)
      if (state === undefined) return
      const policy = policyOf(template)
      const kinds = new Set<DefinitionKind>()
      for (const [key, offered] of state.offered) {
        if (evaluate(template, state, policy, key, offered.definition.kind, offered.definition.name, undefined)) kinds.add(offered.definition.kind)
      }
      for (const kind of kinds) listChanged(template, kind)
    }

    // What the store holds: the pins of earlier runs and of other replicas. A shared store that
    // cannot be reached now: its pins arrive with `external` when it is back.
    if (store !== undefined) {
      const loaded = yield* store.load.pipe(
        Effect.catchAll((e) => Effect.as(Effect.logError(`tool integrity: ${e.message}; starting without the stored pins`), {} as PersistedPins))
      )
      adoptAll(loaded)
    }
    // The lock file's pins, over the store's for the same items (stored too: the committed file
    // is what a start pins); a template it holds is pinned, so nothing more is pinned on first sight.
    for (const [template, definitions] of lockFile) {
      const state = stateOf(template)
      const pinnedAt = nowIso()
      const pins = Array.from(definitions.values(), (definition): Pin => ({ definition, pinnedAt, source: "lock file" }))
      for (const pin of pins) state.pins.set(definitionKey(pin.definition.kind, pin.definition.name), pin)
      later(persist(template, pins, "replace"))
    }
    started = true
    if (store !== undefined) {
      // The shared store as it is now: taken; and what this replica holds that it lacks (a Redis
      // that lost its data, emptied or failed over) written back, first writer wins as ever.
      const writeBack = (stored: PersistedPins) => {
        for (const [template, state] of templates) {
          const there = new Set((stored[template] ?? []).map((p) => definitionKey(p.kind, p.name)))
          const missing = Array.from(state.pins).filter(([key]) => !there.has(key)).map(([, pin]) => pin)
          if (missing.length > 0) later(persist(template, missing, "first"))
        }
      }
      yield* store.external.pipe(
        Stream.runForEach((stored) =>
          Effect.sync(() => {
            adoptAll(stored)
            writeBack(stored)
          })
        ),
        Effect.forkScoped
      )
    }
    const changes = yield* registry.changes
    yield* changes.pipe(
      Stream.runForEach((change) => Effect.sync(() => change._tag === "TemplateChanged" ? reevaluate(change.template.name) : undefined)),
      Effect.forkScoped
    )
    yield* Queue.take(work).pipe(Effect.flatten, Effect.forever, Effect.forkScoped)

    const replacePins: ToolPinsShape["replacePins"] = (template, definitions, source) =>
      Effect.gen(function*() {
        const state = stateOf(template)
        const now = nowIso()
        const pins = definitions.map((definition): Pin => ({ definition, pinnedAt: now, source }))
        for (const pin of pins) state.pins.set(definitionKey(pin.definition.kind, pin.definition.name), pin)
        if (store !== undefined && pins.length > 0) {
          yield* store.save(template, pins.map(storedOf), "replace").pipe(
            Effect.catchAll((e) => Effect.logError(`tool integrity: template ${template}: the pins could not be stored (${e.message}); they hold here until the next restart`))
          )
        }
        // What is offered now stands again against the new pins.
        reevaluate(template)
        return pins
      })

    return ToolPins.of({
      replacePins,
      pinned,
      observe,
      observeOffer,
      report,
      blocked,
      approve,
      listChanges: Stream.fromPubSub(listChanges),
      describeRefusal
    })
  })
)
