import { Context, Effect, Layer, PubSub, type Scope, Stream } from "effect"
import { DEFAULT_REGISTRATION, GatewayConfig, type RateLimit, type TemplateConfig } from "../config/GatewayConfig.js"
import {
  InstanceNotFound,
  RegistrationConflict,
  RegistryStorageError,
  type RegistryUnavailable,
  TemplateNotFound
} from "../domain/GatewayError.js"
import {
  defineInstance,
  derivedInstanceId,
  discoverySource,
  type InstanceDefinition,
  type InstanceSource,
  type InstanceSpec,
  sameDefinition,
  specOf
} from "../domain/Instance.js"
import {
  type LoadBalancerInput,
  loadBalancerJson,
  type LoadBalancerSettings,
  resolveLoadBalancer
} from "../domain/LoadBalancer.js"
import { InstanceState } from "../instance/InstanceState.js"
import { describeDiff, DiffBuilder, diffChangedSomething, type RegistryDiff } from "./RegistryDiff.js"
import { emptyRegistry, type PersistedRegistry } from "./RegistryFile.js"
import { fileStore, memoryStore, type RegistryStoreShape, type StoredChange } from "./RegistryStore.js"
import { FleetRedis } from "../fleet/FleetRedis.js"
import { redisRegistryStore } from "./RedisRegistryStore.js"
import type { IntegrityPolicy } from "../domain/IntegrityPolicy.js"
import type { PinStoreShape } from "./PinStore.js"
import type { ExposureInput } from "../domain/Exposure.js"
import type { SandboxInput } from "../domain/Sandbox.js"

/**
 * A template as the request path reads it. Its settings may change while the gateway runs (a
 * config reload, a discovery provider's template): readers take them from here per request,
 * and only the Registry writes them.
 */
export interface TemplateState {
  readonly name: string
  readonly settings: LoadBalancerSettings
  /** The load_balancer as given, for templates created at run time (persisted with them). */
  readonly loadBalancerInput: LoadBalancerInput | undefined
  /** Who owns the template's settings: the config file, the API, or a discovery provider. */
  readonly source: InstanceSource
  /** Client headers passed on to the template's HTTP backends (config templates only). */
  readonly forwardHeaders: ReadonlyArray<string>
  /** The template's own rate limit, if the config gives one. */
  readonly rateLimit: RateLimit | undefined
  /** What it shows its clients (filters, transforms, cache, prefix; config templates only). */
  readonly exposure: ExposureInput | undefined
  /** What its stdio servers may see of the gateway's environment (config templates only; undefined: the gateway's inherit_env). */
  readonly inheritEnv?: ReadonlyArray<string> | undefined
  /** Where its stdio servers run (config templates only; undefined: the gateway's sandbox). */
  readonly sandbox?: SandboxInput | undefined
  /** Its tool integrity (config templates only; undefined: the gateway's tool_integrity). */
  readonly toolIntegrity?: IntegrityPolicy | undefined
  readonly instances: Map<string, InstanceState>
}

type MutableTemplate = { -readonly [K in keyof TemplateState]: TemplateState[K] }

export type RegistryChange =
  | { readonly _tag: "InstanceAdded"; readonly instance: InstanceState }
  | { readonly _tag: "InstanceRemoved"; readonly instance: InstanceState; readonly settings: LoadBalancerSettings }
  /** The template's load-balancer settings changed (a reload): health checks take the new interval. */
  | { readonly _tag: "TemplateChanged"; readonly template: TemplateState }

/** What a discovery provider found for one template. */
export interface DiscoveredTemplate {
  readonly name: string
  /** Settings for a template the provider creates (ignored for a template another source owns). */
  readonly loadBalancer?: LoadBalancerInput | undefined
  /** Definitions with the provider's source (`discovery:{provider}`). */
  readonly instances: ReadonlyArray<InstanceDefinition>
}

export interface Registration {
  readonly template: string
  readonly spec: InstanceSpec
  /** Only for a template that does not exist yet. */
  readonly loadBalancer?: LoadBalancerInput | undefined
}

export interface RegistryShape {
  /** Synchronous lookups: they sit on the request path. */
  readonly template: (name: string) => TemplateState | undefined
  readonly templates: () => ReadonlyArray<TemplateState>
  readonly instances: () => ReadonlyArray<InstanceState>
  readonly get: (name: string) => Effect.Effect<TemplateState, TemplateNotFound>
  /** Settings a new template would get from this load_balancer input (for validating before registering). */
  readonly settingsFor: (input: LoadBalancerInput | undefined) => LoadBalancerSettings
  readonly register: (registration: Registration) => Effect.Effect<InstanceState, RegistrationConflict | RegistryStorageError | RegistryUnavailable>
  readonly deregister: (template: string, instanceId: string) => Effect.Effect<InstanceState, InstanceNotFound | RegistryStorageError | RegistryUnavailable>
  /**
   * Makes the config's templates and instances what `templates` says (a reload): new ones start,
   * removed ones drain, changed settings apply to the next request. Instances registered through
   * the API or found by discovery are left alone; a template removed from the config stays while
   * such instances remain in it.
   */
  readonly applyConfig: (templates: ReadonlyArray<TemplateConfig>) => Effect.Effect<RegistryDiff>
  /**
   * Makes a discovery provider's instances what it found: only instances of that provider are
   * added, replaced or removed; an id another source holds is skipped, never displaced.
   */
  readonly applyDiscovered: (provider: string, templates: ReadonlyArray<DiscoveredTemplate>) => Effect.Effect<RegistryDiff>
  /** A stream of changes from the moment of the call (the subscription lives in the caller's scope). */
  readonly changes: Effect.Effect<Stream.Stream<RegistryChange>, never, Scope.Scope>
  /** Where pinned tool definitions live beside the registrations (the same file or Redis; none: memory only). */
  readonly pinStore?: PinStoreShape | undefined
}

export class Registry extends Context.Tag("mcp-gateway/Registry")<Registry, RegistryShape>() {
  /**
   * Templates from the config, plus the run-time registrations of its store: the registry file
   * when `registry_file` is set, Redis when `registry.store` is (shared by replicas), else none.
   */
  static readonly layer: Layer.Layer<Registry, RegistryStorageError, GatewayConfig | FleetRedis> = Layer.scoped(
    Registry,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const fleet = yield* FleetRedis
      return yield* makeRegistry({
        templates: config.templates,
        defaults: config.gateway.defaults,
        store: fleet.status() !== "off"
          ? redisRegistryStore(fleet)
          : config.gateway.registryFile === undefined
          ? memoryStore
          : fileStore(config.gateway.registryFile),
        allowStdio: config.gateway.allowStdioRegistration,
        limits: {
          perTemplate: (config.gateway.registration ?? DEFAULT_REGISTRATION).maxPerTemplate,
          total: (config.gateway.registration ?? DEFAULT_REGISTRATION).maxTotal
        }
      })
    })
  )

  /**
   * The config's templates, with registrations kept in memory only (no registry file, no Redis,
   * whatever the config says): what a test composes when it registers and deregisters at will
   * and must leave nothing on disk. The registry's other rules (limits, stdio) are the config's.
   */
  static readonly layerMemory: Layer.Layer<Registry, never, GatewayConfig> = Layer.scoped(
    Registry,
    Effect.flatMap(GatewayConfig, (config) =>
      makeRegistry({
        templates: config.templates,
        defaults: config.gateway.defaults,
        store: memoryStore,
        allowStdio: config.gateway.allowStdioRegistration,
        limits: {
          perTemplate: (config.gateway.registration ?? DEFAULT_REGISTRATION).maxPerTemplate,
          total: (config.gateway.registration ?? DEFAULT_REGISTRATION).maxTotal
        }
      }).pipe(
        // (The memory store is never read, so nothing can fail to load.)
        Effect.orDie
      ))
  )
}

export const makeRegistry = (options: {
  readonly templates: ReadonlyArray<TemplateConfig>
  readonly defaults: LoadBalancerSettings
  /** The registry file (or give `store`). */
  readonly file?: string | undefined
  /** Where registrations live (default: the file, or nowhere). */
  readonly store?: RegistryStoreShape | undefined
  /** Whether stdio instances may come from the registry file (they run a command on this host). */
  readonly allowStdio?: boolean | undefined
  /**
   * How many instances registrations may add, per template and in all (gateway.max_registrations*):
   * every registration makes the registry file (or Redis entry) larger, and it is rewritten whole.
   * Only instances of the API count; the config's and discovery's are the operator's.
   */
  readonly limits?: { readonly perTemplate: number; readonly total: number } | undefined
}): Effect.Effect<RegistryShape, RegistryStorageError, Scope.Scope> =>
  Effect.gen(function*() {
    // When each instance was taken in (registered_at), on the Clock of the fiber that builds the registry.
    const clock = yield* Effect.clock
    const newInstance = (definition: InstanceDefinition) => new InstanceState(definition, clock.unsafeCurrentTimeMillis())
    const templates = new Map<string, MutableTemplate>()
    for (const t of options.templates) {
      templates.set(t.name, {
        name: t.name,
        settings: t.loadBalancer,
        loadBalancerInput: t.loadBalancerInput,
        source: "config",
        forwardHeaders: t.forwardHeaders,
        rateLimit: t.rateLimit,
        exposure: t.exposure,
        inheritEnv: t.inheritEnv,
        sandbox: t.sandbox,
        toolIntegrity: t.toolIntegrity,
        instances: new Map(t.instances.map((i) => [i.id, newInstance(i)]))
      })
    }
    const settingsFor = (input: LoadBalancerInput | undefined) => resolveLoadBalancer(options.defaults, input)

    /**
     * stdio entries of the registry file that this gateway refuses to run (stdio registration is
     * off): not started, but kept, and written back with every later change, so that nothing in
     * the file is lost by an operator turning the setting off.
     */
    const refused = new Map<string, PersistedRegistry["templates"][string]>()
    const store = options.store ?? (options.file === undefined ? memoryStore : fileStore(options.file))

    if (store !== memoryStore) {
      // A shared store that cannot be reached now: start from the config; its registrations
      // arrive when it is back (store.external).
      const persisted = yield* store.load.pipe(
        Effect.catchTag("RegistryUnavailable", (e) => Effect.as(Effect.logError(`registry: ${e.message}; starting without its registrations`), emptyRegistry))
      )
      for (const [name, persistedEntry] of Object.entries(persisted.templates)) {
        let entry = persistedEntry
        if (options.allowStdio !== true && entry.instances.some((spec) => spec.transport === "stdio")) {
          const stdio = entry.instances.filter((spec) => spec.transport === "stdio")
          refused.set(name, { ...entry, instances: stdio })
          yield* Effect.logError(
            `${store.name}: not starting ${stdio.length} stdio instance(s) of template "${name}" ` +
              `(${stdio.map((spec) => spec.id ?? "(no id)").join(", ")}): stdio registration is off ` +
              `(gateway.allow_stdio_registration); they stay in the file`
          )
          entry = { ...entry, instances: entry.instances.filter((spec) => spec.transport !== "stdio") }
          if (entry.instances.length === 0 && !templates.has(name)) continue
        }
        let template = templates.get(name)
        if (template === undefined) {
          template = <MutableTemplate> {
            name,
            settings: settingsFor(entry.load_balancer),
            loadBalancerInput: entry.load_balancer,
            source: "api",
            forwardHeaders: [],
            rateLimit: undefined,
            exposure: undefined,
            instances: new Map()
          }
          templates.set(name, template)
        }
        for (const spec of entry.instances) {
          const id = spec.id ?? nextId(template)
          if (template.instances.has(id)) {
            yield* Effect.logWarning(
              `${store.name}: instance "${id}" of template "${name}" is also in the config; the config's definition wins`
            )
            continue
          }
          template.instances.set(id, newInstance(defineInstance(name, id, spec, "api")))
        }
      }
      let count = 0
      for (const t of templates.values()) for (const i of t.instances.values()) if (i.definition.source === "api") count++
      yield* Effect.logInfo(`registry: ${count} run-time registrations from ${store.name}`)
    }

    const pubsub = yield* Effect.acquireRelease(PubSub.unbounded<RegistryChange>(), PubSub.shutdown)
    // One change at a time: mutate, persist, and roll back if the file cannot be written.
    const lock = yield* Effect.makeSemaphore(1)

    const persist = (change: StoredChange) => Effect.suspend(() => store.save(snapshot(templates, refused), change))

    const register = (registration: Registration) =>
      lock.withPermits(1)(Effect.gen(function*() {
        const existing = templates.get(registration.template)
        if (existing !== undefined && registration.loadBalancer !== undefined) {
          return yield* new RegistrationConflict({
            message: `template "${registration.template}" already exists; load_balancer can only be given ` +
              `when a registration creates a template`
          })
        }
        const template: MutableTemplate = existing ?? {
          name: registration.template,
          settings: settingsFor(registration.loadBalancer),
          loadBalancerInput: registration.loadBalancer,
          source: "api",
          forwardHeaders: [],
          rateLimit: undefined,
          exposure: undefined,
          instances: new Map()
        }
        if (options.limits !== undefined) {
          const registered = (t: MutableTemplate) => {
            let n = 0
            for (const i of t.instances.values()) if (i.definition.source === "api") n++
            return n
          }
          if (registered(template) >= options.limits.perTemplate) {
            return yield* new RegistrationConflict({
              message: `template "${template.name}" has ${options.limits.perTemplate} instances registered through the API, ` +
                `its limit (gateway.max_registrations_per_template); deregister one first`
            })
          }
          let total = 0
          for (const t of templates.values()) total += registered(t)
          if (total >= options.limits.total) {
            return yield* new RegistrationConflict({
              message: `the gateway has ${options.limits.total} instances registered through the API, ` +
                `its limit (gateway.max_registrations); deregister one first`
            })
          }
        }
        const id = registration.spec.id ?? nextId(template)
        if (template.instances.has(id)) {
          return yield* new RegistrationConflict({
            message: `template "${template.name}" already has an instance "${id}"; deregister it first`
          })
        }
        const instance = newInstance(defineInstance(template.name, id, { ...registration.spec, id }, "api"))
        template.instances.set(id, instance)
        if (existing === undefined) templates.set(template.name, template)
        yield* persist({ _tag: "Registered", template: template.name, id, spec: specOf(instance.definition), loadBalancer: existing === undefined ? registration.loadBalancer : undefined }).pipe(
          Effect.tapError(() =>
            Effect.sync(() => {
              template.instances.delete(id)
              if (existing === undefined) templates.delete(template.name)
            })
          )
        )
        yield* PubSub.publish(pubsub, { _tag: "InstanceAdded", instance } as RegistryChange)
        yield* Effect.logInfo(`registry: registered ${template.name}/${id} (${instance.definition.transport})`)
        return instance
      }))

    const deregister = (templateName: string, instanceId: string) =>
      lock.withPermits(1)(Effect.gen(function*() {
        const template = templates.get(templateName)
        const instance = template?.instances.get(instanceId)
        if (template === undefined || instance === undefined) {
          return yield* new InstanceNotFound({ template: templateName, instanceId })
        }
        template.instances.delete(instanceId)
        instance.draining = true
        // A template that only the API created goes away with its last instance.
        const dropTemplate = template.source === "api" && template.instances.size === 0
        if (dropTemplate) templates.delete(templateName)
        yield* persist({ _tag: "Deregistered", template: templateName, id: instanceId, templateDropped: dropTemplate }).pipe(
          // (A deregistration conflicts with nothing.)
          Effect.catchTag("RegistrationConflict", (e) => Effect.die(e)),
          Effect.tapError(() =>
          Effect.sync(() => {
            instance.draining = false
            template.instances.set(instanceId, instance)
            if (dropTemplate) templates.set(templateName, template)
          })
        )
        )
        yield* PubSub.publish(pubsub, { _tag: "InstanceRemoved", instance, settings: template.settings } as RegistryChange)
        yield* Effect.logInfo(`registry: deregistered ${templateName}/${instanceId}`)
        return instance
      }))

    /** A reconciliation does not change what the API registered, so a failed write is logged, not undone. */
    const persistQuietly = persist({ _tag: "Other" }).pipe(
      Effect.catchAll((e) => Effect.logError(`registry: ${e.message} (the change applies; ${store.name} keeps its old content)`))
    )

    const addInstance = (template: MutableTemplate, definition: InstanceDefinition, events: Array<RegistryChange>) => {
      const instance = newInstance(definition)
      template.instances.set(definition.id, instance)
      events.push({ _tag: "InstanceAdded", instance })
    }

    const removeInstance = (template: MutableTemplate, instance: InstanceState, events: Array<RegistryChange>) => {
      template.instances.delete(instance.id)
      instance.draining = true
      events.push({ _tag: "InstanceRemoved", instance, settings: template.settings })
    }

    /** Another definition under the same id: the old one drains (removed first, so its health fiber goes before the new one's starts). */
    const replaceInstance = (template: MutableTemplate, old: InstanceState, definition: InstanceDefinition, events: Array<RegistryChange>) => {
      removeInstance(template, old, events)
      addInstance(template, definition, events)
    }

    /** New settings for a template; the old object is kept when nothing changed, so its strategy keeps its state. */
    const updateTemplate = (
      template: MutableTemplate,
      next: Pick<TemplateState, "settings" | "loadBalancerInput" | "forwardHeaders" | "rateLimit" | "exposure" | "inheritEnv" | "sandbox" | "toolIntegrity">
    ): boolean => {
      const settingsChanged = JSON.stringify(loadBalancerJson(template.settings)) !== JSON.stringify(loadBalancerJson(next.settings))
      // (Kept as the same object when equal: its compiled filters and transforms are reused.)
      const exposureChanged = JSON.stringify(template.exposure ?? null) !== JSON.stringify(next.exposure ?? null)
      if (exposureChanged) template.exposure = next.exposure
      const changed = settingsChanged || exposureChanged ||
        JSON.stringify(template.rateLimit ?? null) !== JSON.stringify(next.rateLimit ?? null) ||
        template.forwardHeaders.join(",") !== next.forwardHeaders.join(",") ||
        (template.inheritEnv ?? []).join(",") !== (next.inheritEnv ?? []).join(",") ||
        JSON.stringify(template.sandbox ?? null) !== JSON.stringify(next.sandbox ?? null) ||
        JSON.stringify(template.toolIntegrity ?? null) !== JSON.stringify(next.toolIntegrity ?? null)
      template.toolIntegrity = next.toolIntegrity
      // (Read when a process starts: one running now keeps the environment and sandbox it started with.)
      template.inheritEnv = next.inheritEnv
      template.sandbox = next.sandbox
      if (settingsChanged) template.settings = next.settings
      template.loadBalancerInput = next.loadBalancerInput
      if (JSON.stringify(template.rateLimit ?? null) !== JSON.stringify(next.rateLimit ?? null)) template.rateLimit = next.rateLimit
      template.forwardHeaders = next.forwardHeaders
      return changed
    }

    /**
     * A template its owner no longer declares: gone once empty; while instances of other
     * sources remain, it stays for them, owned by the API if any came through it (so it is
     * persisted), else by the source of what remains.
     */
    const releaseTemplate = (template: MutableTemplate, diff: DiffBuilder) => {
      if (template.instances.size === 0) {
        templates.delete(template.name)
        diff.templatesRemoved.push(template.name)
        return
      }
      const remaining = Array.from(template.instances.values(), (i) => i.definition.source)
      template.source = remaining.includes("api") ? "api" : remaining[0]!
    }

    /**
     * Makes one source's instances of a template what `wanted` says: its instances no longer
     * wanted are removed, new ones added, changed ones replaced. An id another source holds is
     * skipped when `taken` says why (else taken over).
     */
    const reconcileInstances = (
      template: MutableTemplate,
      source: InstanceSource,
      wanted: ReadonlyArray<InstanceDefinition>,
      diff: DiffBuilder,
      events: Array<RegistryChange>,
      taken: (heldBy: InstanceSource) => string | undefined
    ) => {
      const ids = new Set(wanted.map((i) => i.id))
      for (const current of Array.from(template.instances.values())) {
        if (current.definition.source === source && !ids.has(current.id)) {
          removeInstance(template, current, events)
          diff.removed.push(`${template.name}/${current.id}`)
        }
      }
      for (const definition of wanted) {
        const current = template.instances.get(definition.id)
        const refusal = current === undefined || current.definition.source === source ? undefined : taken(current.definition.source)
        if (current === undefined) {
          addInstance(template, definition, events)
          diff.added.push(`${template.name}/${definition.id}`)
        } else if (refusal !== undefined) {
          diff.skipped.push(`${template.name}/${definition.id}: ${refusal}`)
        } else if (!sameDefinition(current.definition, definition)) {
          replaceInstance(template, current, definition, events)
          diff.replaced.push(`${template.name}/${definition.id}`)
        }
      }
    }

    const publishAll = (events: ReadonlyArray<RegistryChange>) =>
      Effect.forEach(events, (event) => PubSub.publish(pubsub, event), { discard: true })

    const applyConfig = (desired: ReadonlyArray<TemplateConfig>) =>
      lock.withPermits(1)(Effect.gen(function*() {
        const diff = new DiffBuilder()
        const events: Array<RegistryChange> = []
        for (const t of desired) {
          const next = { settings: t.loadBalancer, loadBalancerInput: t.loadBalancerInput, forwardHeaders: t.forwardHeaders, rateLimit: t.rateLimit, exposure: t.exposure, inheritEnv: t.inheritEnv, sandbox: t.sandbox, toolIntegrity: t.toolIntegrity }
          let template = templates.get(t.name)
          if (template === undefined) {
            template = { name: t.name, ...next, source: "config", instances: new Map() }
            templates.set(t.name, template)
            diff.templatesAdded.push(t.name)
          } else {
            const adopted = template.source !== "config"
            template.source = "config"
            if (updateTemplate(template, next) || adopted) {
              diff.templatesChanged.push(t.name)
              events.push({ _tag: "TemplateChanged", template })
            }
          }
          // A registration by hand is never replaced while the gateway runs (it would be lost from
          // the registry file): the config's instance waits until it is deregistered. The config's
          // definition wins over a discovered one with its id, as at start.
          reconcileInstances(template, "config", t.instances, diff, events, (held) =>
            held === "api"
              ? "the id is taken by an instance registered through the API; deregister it to let the config's in"
              : undefined)
        }
        const declared = new Set(desired.map((t) => t.name))
        for (const template of Array.from(templates.values())) {
          if (template.source !== "config" || declared.has(template.name)) continue
          for (const current of Array.from(template.instances.values())) {
            if (current.definition.source !== "config") continue
            removeInstance(template, current, events)
            diff.removed.push(`${template.name}/${current.id}`)
          }
          releaseTemplate(template, diff)
        }
        const result = diff.build()
        if (diffChangedSomething(result)) yield* persistQuietly
        yield* publishAll(events)
        return result
      }))

    const applyDiscovered = (provider: string, desired: ReadonlyArray<DiscoveredTemplate>) =>
      lock.withPermits(1)(Effect.gen(function*() {
        const source = discoverySource(provider)
        const diff = new DiffBuilder()
        const events: Array<RegistryChange> = []
        for (const t of desired) {
          const settings = settingsFor(t.loadBalancer)
          let template = templates.get(t.name)
          if (template === undefined) {
            template = {
              name: t.name,
              settings,
              loadBalancerInput: t.loadBalancer,
              source,
              forwardHeaders: [],
              rateLimit: undefined,
              exposure: undefined,
              instances: new Map()
            }
            templates.set(t.name, template)
            diff.templatesAdded.push(t.name)
          } else if (template.source === source) {
            const next = { settings, loadBalancerInput: t.loadBalancer, forwardHeaders: template.forwardHeaders, rateLimit: template.rateLimit, exposure: template.exposure }
            if (updateTemplate(template, next)) {
              diff.templatesChanged.push(t.name)
              events.push({ _tag: "TemplateChanged", template })
            }
          } else if (
            t.loadBalancer !== undefined &&
            JSON.stringify(loadBalancerJson(settings)) !== JSON.stringify(loadBalancerJson(template.settings))
          ) {
            diff.skipped.push(`${t.name}: load_balancer not applied (the template's settings belong to ${template.source})`)
          }
          // Never displace what was configured or registered by hand.
          reconcileInstances(template, source, t.instances, diff, events, (held) => `the id is taken by an instance from ${held}`)
        }
        const found = new Set(desired.map((t) => t.name))
        for (const template of Array.from(templates.values())) {
          if (found.has(template.name)) continue
          for (const current of Array.from(template.instances.values())) {
            if (current.definition.source !== source) continue
            removeInstance(template, current, events)
            diff.removed.push(`${template.name}/${current.id}`)
          }
          if (template.source === source) releaseTemplate(template, diff)
        }
        const result = diff.build()
        if (diffChangedSomething(result)) yield* persistQuietly
        yield* publishAll(events)
        return result
      }))

    /**
     * What a shared store says the run-time registrations are now (another replica registered or
     * deregistered, or the store came back): the API's instances become that, as if registered
     * here; config and discovered instances keep their ids. Nothing is written back.
     */
    const applyStored = (stored: PersistedRegistry) =>
      lock.withPermits(1)(Effect.gen(function*() {
        const diff = new DiffBuilder()
        const events: Array<RegistryChange> = []
        for (const [name, entry] of Object.entries(stored.templates)) {
          const specs = entry.instances.filter((spec) => options.allowStdio === true || spec.transport !== "stdio")
          let template = templates.get(name)
          if (template === undefined) {
            if (specs.length === 0 && entry.load_balancer === undefined) continue
            template = { name, settings: settingsFor(entry.load_balancer), loadBalancerInput: entry.load_balancer, source: "api", forwardHeaders: [], rateLimit: undefined, exposure: undefined, instances: new Map() }
            templates.set(name, template)
            diff.templatesAdded.push(name)
          }
          const wanted = specs.filter((spec) => spec.id !== undefined).map((spec) => defineInstance(name, spec.id!, spec, "api"))
          reconcileInstances(template, "api", wanted, diff, events, (held) => held === "config" ? "the config has an instance of that id" : undefined)
        }
        for (const template of Array.from(templates.values())) {
          if (template.name in stored.templates) continue
          for (const current of Array.from(template.instances.values())) {
            if (current.definition.source !== "api") continue
            removeInstance(template, current, events)
            diff.removed.push(`${template.name}/${current.id}`)
          }
          if (template.source === "api") releaseTemplate(template, diff)
        }
        yield* publishAll(events)
        const result = diff.build()
        if (diffChangedSomething(result)) yield* Effect.logInfo(`registry: ${store.name} changed (another replica): ${describeDiff(result)}`)
        return result
      }))
    yield* store.external.pipe(Stream.runForEach(applyStored), Effect.forkScoped)

    const registry: RegistryShape = {
      template: (name) => templates.get(name),
      templates: () => Array.from(templates.values()),
      instances: () => Array.from(templates.values()).flatMap((t) => Array.from(t.instances.values())),
      get: (name) => {
        const t = templates.get(name)
        return t === undefined ? Effect.fail(new TemplateNotFound({ template: name })) : Effect.succeed(t)
      },
      settingsFor,
      register,
      deregister,
      applyConfig,
      applyDiscovered,
      changes: Stream.fromPubSub(pubsub, { scoped: true }),
      pinStore: store.pins
    }
    return registry
  })

/** `${template}-${n}` with the first n not taken. */
const nextId = (template: TemplateState): string => {
  let n = template.instances.size + 1
  while (template.instances.has(derivedInstanceId(template.name, n))) n++
  return derivedInstanceId(template.name, n)
}

/** What goes to the registry file: instances registered at run time, the templates they created, and refused entries as they were. */
const snapshot = (
  templates: ReadonlyMap<string, TemplateState>,
  refused: ReadonlyMap<string, PersistedRegistry["templates"][string]>
): PersistedRegistry => {
  const out: Record<string, PersistedRegistry["templates"][string]> = {}
  for (const t of templates.values()) {
    const instances = Array.from(t.instances.values())
      .map((i) => i.definition)
      .filter((d: InstanceDefinition) => d.source === "api")
      .map(specOf)
    if (t.source === "api" || instances.length > 0) {
      out[t.name] = t.source === "api" && t.loadBalancerInput !== undefined
        ? { load_balancer: t.loadBalancerInput, instances }
        : { instances }
    }
  }
  for (const [name, entry] of refused) {
    const kept = out[name]
    out[name] = kept === undefined ? entry : { ...kept, instances: [...kept.instances, ...entry.instances] }
  }
  return { version: 1, templates: out }
}
