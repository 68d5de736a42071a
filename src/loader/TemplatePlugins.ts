import { Effect, Either, ExecutionStrategy, Exit, Schema, Scope } from "effect"
import { formatParseError } from "../domain/formatParseError.js"
import type { LoadBalancerSettings } from "../domain/LoadBalancer.js"
import { PluginError } from "./PluginError.js"
import type { Plugin, TemplatePluginKind } from "./PluginKind.js"
import { PluginLoader } from "./PluginLoader.js"

export interface TemplatePlugin<V> {
  /** The plugin's own name (shown in logs and stats). */
  readonly name: string
  readonly value: V
}

export interface TemplatePluginsShape<V> {
  /**
   * The plugin value of a template, built once per template and settings (plugins keep
   * per-template state such as round-robin counters), released when replaced or at shutdown.
   */
  readonly forTemplate: (template: string, settings: LoadBalancerSettings) => Effect.Effect<TemplatePlugin<V>, PluginError>
  /** The plugin value already built for a template and these settings, if there is one (the request path reads it without an Effect step). */
  readonly current: (template: string, settings: LoadBalancerSettings) => TemplatePlugin<V> | undefined
  /** Loads the plugin and checks its options without keeping anything: for registrations that create a template. */
  readonly validate: (settings: LoadBalancerSettings) => Effect.Effect<void, PluginError>
}

interface Entry<V> {
  readonly settings: LoadBalancerSettings
  readonly value: TemplatePlugin<V>
  readonly scope: Scope.CloseableScope
}

/** One plugin value per template for a kind of plugin (strategies, health probes). */
export const makeTemplatePlugins = <V, P extends Plugin<V>>(
  kind: TemplatePluginKind<V, P>
): Effect.Effect<TemplatePluginsShape<V>, never, PluginLoader | Scope.Scope> =>
  Effect.gen(function*() {
    const loader = yield* PluginLoader
    const layerScope = yield* Effect.scope
    const entries = new Map<string, Entry<V>>()

    const build = (template: string | undefined, settings: LoadBalancerSettings, scope: Scope.Scope) =>
      Effect.gen(function*() {
        const { options: given, spec } = kind.chosen(settings)
        const plugin = yield* loader.load(kind, spec).pipe(Effect.mapError((e) => new PluginError({ ...e, template })))
        const options = Schema.decodeUnknownEither(plugin.options, { onExcessProperty: "error", errors: "all" })(given)
        if (Either.isLeft(options)) {
          return yield* new PluginError({
            noun: kind.noun,
            setting: kind.setting,
            plugin: spec,
            template,
            reason: `invalid ${kind.optionsSetting}: ${formatParseError(options.left, kind.optionsSetting).join("; ")}`
          })
        }
        const value = yield* plugin.make(options.right).pipe(Scope.extend(scope))
        return { name: plugin.name, value }
      })

    const forTemplate = (template: string, settings: LoadBalancerSettings) => {
      const entry = entries.get(template)
      if (entry !== undefined && entry.settings === settings) return Effect.succeed(entry.value)
      return Effect.gen(function*() {
        const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
        const value = yield* build(template, settings, scope).pipe(Effect.tapError(() => Scope.close(scope, Exit.void)))
        const previous = entries.get(template)
        entries.set(template, { settings, value, scope })
        if (previous !== undefined) yield* Scope.close(previous.scope, Exit.void)
        return value
      })
    }

    const validate = (settings: LoadBalancerSettings) =>
      Effect.scoped(Effect.asVoid(Effect.flatMap(Effect.scope, (scope) => build(undefined, settings, scope))))

    const current = (template: string, settings: LoadBalancerSettings) => {
      const entry = entries.get(template)
      return entry !== undefined && entry.settings === settings ? entry.value : undefined
    }

    return { forTemplate, current, validate }
  })
