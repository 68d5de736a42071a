import { Context, Duration, Effect, Either, ExecutionStrategy, Exit, Layer, Schema, Scope, Stream } from "effect"
import { canonicalJson } from "../domain/canonicalJson.js"
import { compileFilter, type ExposureInput, exposesAnything, type NameFilter, type TransformSpec } from "../domain/Exposure.js"
import { formatParseError } from "../domain/formatParseError.js"
import { BackendError, type DispatchError, TransformFailed } from "../domain/GatewayError.js"
import { ErrorCode, isObject } from "../domain/JsonRpc.js"
import { DEFAULT_LOAD_BALANCER } from "../domain/LoadBalancer.js"
import { PluginError } from "../loader/PluginError.js"
import { PluginLoader } from "../loader/PluginLoader.js"
import { GatewayMetrics } from "../observability/GatewayMetrics.js"
import { Registry } from "../registry/Registry.js"
import { type Transform, type TransformContext, TransformPlugin, type TransformRequest } from "../transform/TransformPlugin.js"
import type { ServerNotice } from "../domain/JsonRpc.js"
import { Timer } from "../clock/Timer.js"
import { ToolPins } from "../integrity/ToolPins.js"
import { blockedCall, makeIntegrityGuard } from "./integrityGuard.js"

/** Results a cache may keep: lists and reads. Never `tools/call`. */
const CACHEABLE: ReadonlySet<string> = new Set(["tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"])
/** At most this many cached results in all; the oldest go first. */
const MAX_ENTRIES = 10_000
/** A server's own ttlMs is honoured up to this (a typo of a year must not pin a list for a year). */
const MAX_TTL_MS = 24 * 60 * 60 * 1000

/** Who asks, as far as a cached answer may depend on it. */
export interface Caller {
  /** The credential's id (or `ip:{address}`): private cache entries are per caller. */
  readonly id: string
  /**
   * What the client declared to the server (capabilities, name), canonical: an old server may
   * answer a list differently by it (server-everything lists a sampling tool only to clients
   * that sample), so even a public entry is per declaration.
   */
  readonly declaration: string
  /**
   * The client's session, when it has one: an old server may keep state per session (resources
   * of its own), so what it said without caching hints is cached for that session only.
   */
  readonly session?: string | undefined
}

/** The caching hints of a 2026-07-28 result, as the transport saw them before shaping the answer for an old caller. */
export interface CacheHints {
  readonly ttlMs: number
  readonly cacheScope: "public" | "private"
}

/** One request's way to the server: the params to send, and where to report the answer's caching hints. */
export type Dispatch = (params: Record<string, unknown> | undefined, onCacheHints: (hints: CacheHints) => void) => Effect.Effect<unknown, DispatchError>

/** What a template (or a virtual server) shows: its filters and transforms, compiled, and its cache settings. */
export interface View {
  readonly name: string
  readonly tools: NameFilter | undefined
  readonly prompts: NameFilter | undefined
  readonly resources: NameFilter | undefined
  readonly transforms: ReadonlyArray<{ readonly name: string; readonly transform: Transform }>
  /** For servers without hints of their own; undefined: not cached. */
  readonly cache: { readonly ttlMs: number; readonly scope: "public" | "private" } | undefined
}

interface Entry {
  readonly result: unknown
  readonly expiresAt: number
  readonly method: string
  readonly uri: string | undefined
}

export interface ExposureShape {
  /**
   * One request of a template through what it shows: request transforms, then its filters
   * (a hidden tool is an unknown tool), then its cache, `dispatch`, the filters of the result,
   * result transforms. A template that configures nothing goes straight to `dispatch` for
   * everything but lists and reads (whose server's own caching hints are honoured).
   */
  readonly run: (template: string, method: string, params: Record<string, unknown> | undefined, caller: Caller, dispatch: Dispatch) => Effect.Effect<unknown, DispatchError>
  /**
   * Whether `run` would do anything for this request (the hot path asks first): filters,
   * transforms, the cache, or a call of an item tool integrity blocks (given `params`).
   */
  readonly involved: (template: string, method: string, params?: Record<string, unknown> | undefined) => boolean
  /** A server said something changed: cached lists or reads it concerns are dropped at once. */
  readonly noticed: (template: string, notice: ServerNotice) => void
  /**
   * Builds a view (for a virtual server); a bad transform is a PluginError naming `location`
   * (where the config sets it: `templates.fs`, `virtual_servers.dev`).
   */
  readonly compile: (name: string, input: ExposureInput | undefined, scope: Scope.Scope, location: string) => Effect.Effect<View, PluginError>
  /** Loads and checks the transforms an exposure names, keeping nothing (a reload, before it applies). */
  readonly validate: (location: string, input: ExposureInput | undefined) => Effect.Effect<void, PluginError>
  /** Filters and transforms of a view applied around `dispatch` (no cache): what aggregates use for virtual servers. */
  readonly through: <E>(
    view: View,
    method: string,
    params: Record<string, unknown> | undefined,
    caller: Caller,
    dispatch: (params: Record<string, unknown> | undefined, onCacheHints: (hints: CacheHints) => void) => Effect.Effect<unknown, E>
  ) => Effect.Effect<unknown, E | DispatchError>
  /** Cache hits and misses by template, for `/gateway/stats`. */
  readonly stats: () => Record<string, { readonly hits: number; readonly misses: number; readonly entries: number }>
}

/**
 * The spellings of a URI a server may take for one (`DEMO://x/./a` is `demo://x/a`, `%61` may be
 * `a`): a URI passes a filter only if every spelling does, so that a hidden resource cannot be
 * reached by writing its URI another way.
 */
const spellings = (uri: string): ReadonlyArray<string> => {
  const forms = new Set([uri])
  try {
    const normal = new URL(uri).href
    forms.add(normal)
    forms.add(decodeURI(normal))
  } catch {
    // Not a URL by WHATWG's rules: the server will have to take it as it is written.
  }
  return Array.from(forms)
}
const uriAllowed = (filter: NameFilter, uri: string) => spellings(uri).every((form) => filter.allows(form))

/** The name, URI or URI template a request or a list item is filtered by. */
const refusal = (view: View, method: string, params: Record<string, unknown> | undefined) => {
  const name = typeof params?.name === "string" ? params.name : undefined
  const uri = typeof params?.uri === "string" ? params.uri : undefined
  switch (method) {
    case "tools/call":
      return view.tools !== undefined && name !== undefined && !view.tools.allows(name) ? { code: ErrorCode.InvalidParams, message: `Unknown tool: ${name}` } : undefined
    case "prompts/get":
      return view.prompts !== undefined && name !== undefined && !view.prompts.allows(name) ? { code: ErrorCode.InvalidParams, message: `Unknown prompt: ${name}` } : undefined
    case "resources/read":
    case "resources/subscribe":
    case "resources/unsubscribe":
      return view.resources !== undefined && uri !== undefined && !uriAllowed(view.resources, uri) ? { code: ErrorCode.ResourceNotFound, message: `Resource not found: ${uri}` } : undefined
    case "completion/complete": {
      const ref = isObject(params?.ref) ? params.ref : {}
      if (ref.type === "ref/prompt" && typeof ref.name === "string" && view.prompts !== undefined && !view.prompts.allows(ref.name)) {
        return { code: ErrorCode.InvalidParams, message: `Unknown prompt: ${ref.name}` }
      }
      if (ref.type === "ref/resource" && typeof ref.uri === "string" && view.resources !== undefined && !uriAllowed(view.resources, ref.uri)) {
        return { code: ErrorCode.ResourceNotFound, message: `Resource not found: ${ref.uri}` }
      }
      return undefined
    }
    default:
      return undefined
  }
}

/** The answer a read gets when what the server returned is hidden (see filterResult). */
const HIDDEN_READ = Symbol("hidden read")

const LIST_FILTERS: Record<string, { readonly key: string; readonly field: string; readonly filter: keyof Pick<View, "tools" | "prompts" | "resources"> }> = {
  "tools/list": { key: "tools", field: "name", filter: "tools" },
  "prompts/list": { key: "prompts", field: "name", filter: "prompts" },
  "resources/list": { key: "resources", field: "uri", filter: "resources" },
  "resources/templates/list": { key: "resourceTemplates", field: "uriTemplate", filter: "resources" }
}

/** A list result without what the view hides (re-applied to every list, so a renamed tool cannot slip past). */
const filterResult = (view: View, method: string, result: unknown): unknown => {
  // What a read returns names its resources again: one the view hides (however it was asked for) is not shown.
  if (method === "resources/read" && view.resources !== undefined && isObject(result) && Array.isArray(result.contents)) {
    const hidden = result.contents.find((c) => isObject(c) && typeof c.uri === "string" && !uriAllowed(view.resources!, c.uri))
    if (hidden !== undefined) return HIDDEN_READ
    return result
  }
  const list = LIST_FILTERS[method]
  if (list === undefined || !isObject(result)) return result
  const filter = view[list.filter]
  const items = result[list.key]
  if (filter === undefined || !Array.isArray(items)) return result
  const allowed = (value: string) => list.filter === "resources" && list.field === "uri" ? uriAllowed(filter, value) : filter.allows(value)
  const kept = items.filter((item) => !isObject(item) || typeof item[list.field] !== "string" || allowed(item[list.field] as string))
  return { ...result, [list.key]: kept, ...(typeof result.count === "number" ? { count: kept.length } : {}) }
}

/**
 * A hook that fails, throws, or does not finish within `limit` (the template's request timeout)
 * fails the request with a 502; one that refuses with a JSON-RPC code is the client's answer.
 */
const runHook = <A>(
  view: View,
  name: string,
  limit: Duration.Duration,
  hook: () => Effect.Effect<A, { readonly message: string; readonly code?: number | undefined }>
): Effect.Effect<A, DispatchError> =>
  Effect.suspend(hook).pipe(
    Effect.catchAllDefect((defect) => Effect.fail({ message: defect instanceof Error ? defect.message : String(defect), code: undefined })),
    Effect.timeoutFail({ duration: limit, onTimeout: () => ({ message: `it did not finish within ${Duration.format(limit)}`, code: undefined }) }),
    Effect.mapError((e): DispatchError =>
      e.code !== undefined
        ? new BackendError({ template: view.name, instanceId: "", error: { code: e.code, message: e.message } })
        : new TransformFailed({ template: view.name, transform: name, reason: e.message })),
    Effect.tapError((e) => e._tag === "TransformFailed" ? Effect.logWarning(e.message) : Effect.void)
  )

/**
 * What each template shows its clients, on every face (the MCP endpoint of either generation,
 * an aggregate's member sessions, the REST operations): allow and deny lists for tools, prompts
 * and resources, transform plugins (plugins/transforms/, loaded like strategies), and a cache of
 * list results and reads, by the server's own 2026-07-28 hints or the template's `cache`
 * setting, per caller unless public, dropped at once when the server says the list changed.
 */
export class Exposure extends Context.Tag("mcp-gateway/Exposure")<Exposure, ExposureShape>() {
  static readonly layer: Layer.Layer<Exposure, PluginError, Registry | PluginLoader | GatewayMetrics | Timer | ToolPins> = Layer.scoped(
    Exposure,
    Effect.gen(function*() {
      const registry = yield* Registry
      const loader = yield* PluginLoader
      const metrics = yield* GatewayMetrics
      const timer = yield* Timer
      const pins = yield* ToolPins
      const guarded = makeIntegrityGuard(pins)
      const layerScope = yield* Effect.scope

      const loadTransform = (location: string, spec: TransformSpec, index: number, scope: Scope.Scope) =>
        Effect.gen(function*() {
          const at = `${location}.transforms[${index}]`
          const plugin = yield* loader.load(TransformPlugin.kind, spec.transform).pipe(Effect.mapError((e) => new PluginError({ ...e, at: `${at}.transform` })))
          const options = Schema.decodeUnknownEither(plugin.options, { onExcessProperty: "error", errors: "all" })(spec.options ?? {})
          if (Either.isLeft(options)) {
            return yield* new PluginError({ noun: "transform", setting: "transform", plugin: spec.transform, at: `${at}.options`, reason: formatParseError(options.left, "options").join("; ") })
          }
          const transform = yield* plugin.make(options.right).pipe(Scope.extend(scope))
          return { name: plugin.name, transform }
        })

      const compile: ExposureShape["compile"] = (name, input, scope, location) =>
        Effect.gen(function*() {
          const transforms = yield* Effect.forEach(input?.transforms ?? [], (spec, i) => loadTransform(location, spec, i, scope))
          const ttl = input?.cache?.ttl_seconds ?? 0
          return {
            name,
            tools: compileFilter(input?.tools),
            prompts: compileFilter(input?.prompts),
            resources: compileFilter(input?.resources),
            transforms,
            cache: ttl > 0 ? { ttlMs: ttl * 1000, scope: input?.cache?.scope ?? "private" } : undefined
          }
        })

      const validate: ExposureShape["validate"] = (location, input) =>
        Effect.scoped(Effect.asVoid(Effect.flatMap(Effect.scope, (scope) => compile("", input, scope, location))))

      /** Each template's view, built when its exposure is first needed and again when a reload gives it a new one. */
      const views = new Map<string, { readonly input: ExposureInput | undefined; readonly view: View; readonly scope: Scope.CloseableScope }>()
      const viewOf = (template: string): Effect.Effect<View | undefined> => {
        const input = registry.template(template)?.exposure
        const known = views.get(template)
        if (known !== undefined && known.input === input) return Effect.succeed(known.view)
        if (!exposesAnything(input) && known === undefined) return Effect.succeed(undefined)
        return Effect.gen(function*() {
          const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
          // Validated when the config was loaded or reloaded: failing now is a defect.
          const view = yield* compile(template, input, scope, `templates.${template}`).pipe(Effect.orDie)
          const previous = views.get(template)
          views.set(template, { input, view, scope })
          if (previous !== undefined) yield* Scope.close(previous.scope, Exit.void)
          return view
        })
      }
      // Every template's transforms load at start, so a bad one stops start-up.
      for (const t of registry.templates()) {
        if (!exposesAnything(t.exposure)) continue
        const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
        views.set(t.name, { input: t.exposure, view: yield* compile(t.name, t.exposure, scope, `templates.${t.name}`), scope })
      }

      const cache = new Map<string, Entry>()
      const byTemplate = new Map<string, Set<string>>()
      const counts = new Map<string, { hits: number; misses: number }>()
      const count = (template: string, method: string, hit: boolean) => {
        let c = counts.get(template)
        if (c === undefined) counts.set(template, c = { hits: 0, misses: 0 })
        if (hit) c.hits++
        else c.misses++
        metrics.cacheRequests({ template, method, result: hit ? "hit" : "miss" }).update(1)
      }
      const store = (template: string, key: string, entry: Entry) => {
        if (cache.size >= MAX_ENTRIES) {
          const oldest = cache.keys().next().value
          if (oldest !== undefined) cache.delete(oldest)
        }
        cache.delete(key)
        cache.set(key, entry)
        let keys = byTemplate.get(template)
        if (keys === undefined) byTemplate.set(template, keys = new Set())
        keys.add(key)
      }
      const drop = (template: string, which: (entry: Entry) => boolean) => {
        const keys = byTemplate.get(template)
        if (keys === undefined) return
        for (const key of keys) {
          const entry = cache.get(key)
          if (entry === undefined || which(entry)) {
            cache.delete(key)
            keys.delete(key)
          }
        }
      }

      const noticed: ExposureShape["noticed"] = (template, notice) => {
        switch (notice.method) {
          case "notifications/tools/list_changed":
            return drop(template, (e) => e.method === "tools/list")
          case "notifications/prompts/list_changed":
            return drop(template, (e) => e.method === "prompts/list")
          case "notifications/resources/list_changed":
            return drop(template, (e) => e.method === "resources/list" || e.method === "resources/templates/list")
          case "notifications/resources/updated": {
            const uri = isObject(notice.params) ? notice.params.uri : undefined
            return drop(template, (e) => e.method === "resources/read" && e.uri === uri)
          }
        }
      }
      // Another instance may serve other lists (a rolling upgrade): any change of a template's instances empties its cache.
      const changes = yield* registry.changes
      yield* changes.pipe(
        Stream.runForEach((change) =>
          Effect.sync(() => {
            const template = change._tag === "TemplateChanged" ? change.template.name : change.instance.template
            drop(template, () => true)
          })
        ),
        Effect.forkScoped
      )

      /** Filters and transforms around a dispatch (which may itself be a cache). */
      const through: ExposureShape["through"] = <E>(
        view: View,
        method: string,
        params: Record<string, unknown> | undefined,
        caller: Caller,
        dispatch: (params: Record<string, unknown> | undefined, onCacheHints: (hints: CacheHints) => void) => Effect.Effect<unknown, E>
      ) =>
        Effect.gen(function*() {
          const context: TransformContext = { template: view.name, caller: caller.id }
          const limit = registry.template(view.name)?.settings.timeout ?? DEFAULT_LOAD_BALANCER.timeout
          // What each transform's request hook saw, for its result hook.
          const seen: Array<TransformRequest> = []
          let sent = params
          for (const { name, transform } of view.transforms) {
            const request = { method, params: sent }
            seen.push(request)
            if (transform.request !== undefined) {
              sent = yield* runHook(view, name, limit, () => transform.request!(request, context))
              if (sent !== undefined && !isObject(sent)) {
                return yield* new TransformFailed({ template: view.name, transform: name, reason: "its request hook gave params that are not an object" })
              }
            }
          }
          const refused = refusal(view, method, sent)
          if (refused !== undefined) {
            const unknownName = (method === "tools/call" || method === "prompts/get") && typeof sent?.name === "string" ? sent.name : undefined
            return yield* new BackendError({ template: view.name, instanceId: "", error: refused, unknownName })
          }
          let result = filterResult(view, method, yield* dispatch(sent, () => undefined))
          if (result === HIDDEN_READ) {
            return yield* new BackendError({ template: view.name, instanceId: "", error: { code: ErrorCode.ResourceNotFound, message: `Resource not found: ${String(sent?.uri)}` } })
          }
          for (let i = view.transforms.length - 1; i >= 0; i--) {
            const { name, transform } = view.transforms[i]!
            if (transform.result !== undefined) {
              const current = result
              result = yield* runHook(view, name, limit, () => transform.result!(seen[i]!, current, context))
            }
          }
          // A transform may have renamed something into what the filters hide.
          const shown = filterResult(view, method, result)
          if (shown === HIDDEN_READ) {
            return yield* new BackendError({ template: view.name, instanceId: "", error: { code: ErrorCode.ResourceNotFound, message: `Resource not found: ${String(sent?.uri)}` } })
          }
          return shown
        })

      /** The cache in front of a dispatch: hits are served as they were stored; misses stored by the server's hints or the view's ttl. */
      const cached = (template: string, view: View | undefined, method: string, caller: Caller, dispatch: Dispatch): Dispatch =>
        (params, onHints) => {
          // Only a list's first page (cursors belong to one backend session) and reads.
          if (!CACHEABLE.has(method) || (params !== undefined && params.cursor !== undefined)) return dispatch(params, onHints)
          const base = `${template}\u0000${method}\u0000${canonicalJson(isObject(params) ? { ...params, _meta: undefined } : params)}\u0000${caller.declaration}`
          const publicKey = `${base}\u0000`
          const callerKey = `${base}\u0000${caller.id}`
          const sessionKey = caller.session === undefined ? callerKey : `${base}\u0000${caller.id}\u0000${caller.session}`
          const now = timer.now()
          for (const key of [sessionKey, callerKey, publicKey]) {
            const entry = cache.get(key)
            if (entry === undefined) continue
            if (entry.expiresAt > now) {
              count(template, method, true)
              return Effect.succeed(entry.result)
            }
            cache.delete(key)
          }
          let hints: CacheHints | undefined
          return dispatch(params, (h) => {
            hints = h
            onHints(h)
          }).pipe(
            Effect.tap((result) =>
              Effect.sync(() => {
                const policy = hints !== undefined
                  ? { ttlMs: Math.min(MAX_TTL_MS, hints.ttlMs), scope: hints.cacheScope }
                  : view?.cache
                if (policy === undefined || policy.ttlMs <= 0) return
                count(template, method, false)
                if (isObject(result) && result.resultType !== undefined && result.resultType !== "complete") return
                // Private: per caller by a 2026-07-28 server's word (it has no sessions), else per session.
                store(template, policy.scope === "public" ? publicKey : hints !== undefined ? callerKey : sessionKey, {
                  result,
                  expiresAt: now + policy.ttlMs,
                  method,
                  uri: typeof params?.uri === "string" ? params.uri : undefined
                })
              })
            )
          )
        }

      const involved: ExposureShape["involved"] = (template, method, params) =>
        CACHEABLE.has(method) || exposesAnything(registry.template(template)?.exposure) ||
        (params !== undefined && blockedCall(pins, template, method, params) !== undefined)

      const run: ExposureShape["run"] = (template, method, params, caller, dispatch) =>
        Effect.flatMap(viewOf(template), (view) => {
          const behind = guarded(template, method, caller.declaration, cached(template, view, method, caller, dispatch))
          return view === undefined ? behind(params, () => undefined) : through(view, method, params, caller, behind)
        })

      const stats = () =>
        Object.fromEntries(Array.from(counts, ([template, c]) => [template, { ...c, entries: byTemplate.get(template)?.size ?? 0 }]))

      return { run, involved, noticed, compile, validate, through, stats }
    })
  )
}
