import { Clock, Context, Duration, Effect, Layer, Schedule, Schema, Either, Stream } from "effect"
import { type DiscoveryProviderSettings, type DiscoverySettings, GatewayConfig } from "../config/GatewayConfig.js"
import { formatParseError } from "../domain/formatParseError.js"
import { HealthProbes } from "../health/HealthProbes.js"
import { PluginError } from "../loader/PluginError.js"
import { PluginLoader, type PluginLoaderShape } from "../loader/PluginLoader.js"
import { type DiscoveredTemplate, Registry } from "../registry/Registry.js"
import { describeDiff, diffChangedSomething, type RegistryDiff } from "../registry/RegistryDiff.js"
import { Strategies } from "../strategy/Strategies.js"
import { isoTime } from "../clock/Timer.js"
import { discoveredTemplates } from "./discoveredTemplates.js"
import { decodeDiscoveredDocument, type DiscoveryContext, DiscoveryError, DiscoveryPlugin, type DiscoveryProvider } from "./DiscoveryPlugin.js"

/** How often a provider runs when neither the config nor the plugin says. */
const DEFAULT_INTERVAL_SECONDS = 30

/** One provider's last run, as `/gateway/registry` and `mcp-gateway sync` show it. */
export interface ProviderRun {
  readonly provider: string
  readonly plugin: string
  readonly ok: boolean
  readonly error?: string | undefined
  readonly diff?: RegistryDiff | undefined
  readonly at: string
}

export interface DiscoveryShape {
  /** Runs every provider now, all at once, and applies what each found. */
  readonly sync: Effect.Effect<ReadonlyArray<ProviderRun>>
  /** Each provider's name, plugin, interval and last run. */
  readonly status: () => ReadonlyArray<{
    readonly name: string
    readonly plugin: string
    readonly interval_seconds: number
    readonly automatic: boolean
    readonly last_run: ProviderRun | null
  }>
}

interface Running {
  readonly settings: DiscoveryProviderSettings
  readonly plugin: string
  readonly provider: DiscoveryProvider
  readonly interval: Duration.Duration
  readonly lock: Effect.Semaphore
  last: ProviderRun | undefined
  /** What the last run skipped, so that the same skip is not logged at every run. */
  skipped: string
}

/**
 * Loads one provider's plugin, checks its options and makes it (in the caller's scope): a
 * PluginError naming where the config sets it otherwise. A plugin that throws is such an error too.
 */
export const loadProvider = (loader: PluginLoaderShape, p: DiscoveryProviderSettings, context: DiscoveryContext) =>
  Effect.gen(function*() {
    const at = `discovery.providers.${p.name}`
    const fail = (where: string, reason: string) => new PluginError({ noun: "discovery provider", setting: "provider", plugin: p.provider, at: where, reason })
    const plugin = yield* loader.load(DiscoveryPlugin.kind, p.provider).pipe(
      Effect.mapError((e) => new PluginError({ ...e, at: `${at}.provider` }))
    )
    const options = Schema.decodeUnknownEither(plugin.options, { onExcessProperty: "error", errors: "all" })(p.options)
    if (Either.isLeft(options)) return yield* fail(`${at}.options`, formatParseError(options.left, "options").join("; "))
    const provider = yield* Effect.suspend(() => plugin.make(options.right, context)).pipe(
      Effect.catchAllDefect((defect) => Effect.fail(new DiscoveryError({ message: `it threw: ${defect instanceof Error ? defect.message : String(defect)}` }))),
      Effect.mapError((e) => fail(at, e.message))
    )
    return { plugin, provider }
  })

/** Checks every provider of a config as start would, keeping nothing (a reload, before it applies). */
export const validateProviders = (loader: PluginLoaderShape, settings: DiscoverySettings, baseDir: string, configFile: string | undefined) =>
  Effect.scoped(Effect.forEach(settings.providers, (p) => loadProvider(loader, p, { provider: p.name, baseDir, configFile }), { discard: true }))

/**
 * The discovery providers of the config (`discovery.providers`): each loaded like a strategy
 * plugin (a bad one stops start-up), run at start and then every `interval` and whenever it
 * signals a change, unless `discovery.sync` is false (then only on `sync`). What a provider
 * finds replaces what it found before, for its own instances only (`discovery:{name}`): the
 * config's and the API's are never touched. A failed run changes nothing and is logged.
 */
export class Discovery extends Context.Tag("mcp-gateway/Discovery")<Discovery, DiscoveryShape>() {
  static readonly layer: Layer.Layer<Discovery, PluginError, GatewayConfig | Registry | PluginLoader | Strategies | HealthProbes> =
    Layer.scoped(
      Discovery,
      Effect.gen(function*() {
        const config = yield* GatewayConfig
        const registry = yield* Registry
        const loader = yield* PluginLoader
        const strategies = yield* Strategies
        const probes = yield* HealthProbes
        const settings = config.discovery ?? { sync: true, providers: [] }
        const baseDir = config.gateway.baseDir

        const running: Array<Running> = []
        for (const p of settings.providers) {
          const { plugin, provider } = yield* loadProvider(loader, p, { provider: p.name, baseDir, configFile: config.loadedFrom?.configFile })
          running.push({
            settings: p,
            plugin: plugin.name,
            provider,
            interval: p.interval ?? Duration.seconds(plugin.defaultIntervalSeconds ?? DEFAULT_INTERVAL_SECONDS),
            lock: yield* Effect.makeSemaphore(1),
            last: undefined,
            skipped: ""
          })
        }

        /** Templates the sync would create or re-set must name plugins that load, with valid options. */
        const checkSettings = (templates: ReadonlyArray<DiscoveredTemplate>) =>
          Effect.forEach(templates, (t) => {
            const existing = registry.template(t.name)
            if (t.loadBalancer === undefined && existing !== undefined) return Effect.void
            const s = registry.settingsFor(t.loadBalancer)
            return Effect.zipRight(strategies.validate(s), probes.validate(s)).pipe(
              Effect.mapError((e) => new DiscoveryError({ message: `templates.${t.name}.load_balancer: ${e.message}` }))
            )
          }, { discard: true })

        const runOnce = (r: Running): Effect.Effect<ProviderRun> =>
          r.lock.withPermits(1)(
            Effect.gen(function*() {
              const document = yield* Effect.suspend(() => r.provider.discover).pipe(
                // A plugin that throws is a failed run like any other; its loop goes on.
                Effect.catchAllDefect((defect) => Effect.fail(new DiscoveryError({ message: `the provider threw: ${defect instanceof Error ? defect.message : String(defect)}` }))),
                Effect.timeoutFail({
                  duration: r.settings.timeout,
                  onTimeout: () => new DiscoveryError({ message: `no answer within ${Duration.format(r.settings.timeout)}` })
                }),
                // A user plugin's document is checked like a file's.
                Effect.flatMap((doc) => decodeDiscoveredDocument(doc, "result"))
              )
              const converted = discoveredTemplates(r.settings.name, document, baseDir)
              if ("problems" in converted) return yield* new DiscoveryError({ message: converted.problems.join("; ") })
              yield* checkSettings(converted.templates)
              return yield* registry.applyDiscovered(r.settings.name, converted.templates)
            }).pipe(
              Effect.matchEffect({
                onFailure: (e) =>
                  Effect.zipWith(
                    Effect.logWarning(`discovery ${r.settings.name}: ${e.message}; its instances stay as they were`),
                    Clock.currentTimeMillis,
                    (_, at) => ({ provider: r.settings.name, plugin: r.plugin, ok: false, error: e.message, at: isoTime(at) })
                  ),
                onSuccess: (diff) => {
                  const skipped = diff.skipped.join("\n")
                  const sayIt = diffChangedSomething(diff) || (skipped !== "" && skipped !== r.skipped)
                  r.skipped = skipped
                  return Effect.zipWith(
                    sayIt ? Effect.logInfo(`discovery ${r.settings.name}: ${describeDiff(diff)}`) : Effect.void,
                    Clock.currentTimeMillis,
                    (_, at) => ({ provider: r.settings.name, plugin: r.plugin, ok: true, diff, at: isoTime(at) })
                  )
                }
              }),
              Effect.tap((run) => Effect.sync(() => void (r.last = run)))
            )
          )

        const sync = Effect.forEach(running, runOnce, { concurrency: "unbounded" })

        if (settings.sync && running.length > 0) {
          // At start, so that what the providers know is served (and probed) from the first request.
          yield* sync
          for (const r of running) {
            const ticks = Stream.fromSchedule(Schedule.spaced(r.interval)).pipe(Stream.as(undefined as void))
            yield* Stream.merge(ticks, r.provider.changes ?? Stream.empty).pipe(
              // (runOnce answers every failure itself; anything else is logged, and the loop goes on.)
              Stream.runForEach(() => Effect.catchAllCause(runOnce(r), (cause) => Effect.logError(`discovery ${r.settings.name}: run failed`, cause))),
              Effect.forkScoped
            )
          }
        }

        return {
          sync,
          status: () =>
            running.map((r) => ({
              name: r.settings.name,
              plugin: r.plugin,
              interval_seconds: Duration.toSeconds(r.interval),
              automatic: settings.sync,
              last_run: r.last ?? null
            }))
        }
      })
    )
}
