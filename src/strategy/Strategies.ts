import { Context, Effect, Either, ExecutionStrategy, Exit, Layer, Schema, Scope } from "effect"
import { formatParseError } from "../domain/formatParseError.js"
import type { LoadBalancerSettings } from "../domain/LoadBalancer.js"
import { Registry } from "../registry/Registry.js"
import { PluginError } from "./PluginError.js"
import { StrategyLoader } from "./StrategyLoader.js"
import type { Strategy } from "./StrategyPlugin.js"

export interface TemplateStrategy {
  readonly name: string
  readonly strategy: Strategy
}

export interface StrategiesShape {
  /**
   * The strategy of a template, built once per template and settings (strategies keep
   * per-template state such as round-robin counters).
   */
  readonly forTemplate: (template: string, settings: LoadBalancerSettings) => Effect.Effect<TemplateStrategy, PluginError>
  /** Loads the plugin and checks its options without keeping anything: for registrations that create a template. */
  readonly validate: (settings: LoadBalancerSettings) => Effect.Effect<void, PluginError>
}

export class Strategies extends Context.Tag("mcp-gateway/Strategies")<Strategies, StrategiesShape>() {
  /** Builds the strategy of every template in the registry up front, so that a bad plugin stops start-up. */
  static readonly layer: Layer.Layer<Strategies, PluginError, StrategyLoader | Registry> = Layer.scoped(
    Strategies,
    Effect.gen(function*() {
      const strategies = yield* makeStrategies
      const registry = yield* Registry
      for (const template of registry.templates()) {
        yield* strategies.forTemplate(template.name, template.settings)
      }
      return strategies
    })
  )
}

interface Entry {
  readonly settings: LoadBalancerSettings
  readonly value: TemplateStrategy
  readonly scope: Scope.CloseableScope
}

export const makeStrategies: Effect.Effect<StrategiesShape, never, StrategyLoader | Scope.Scope> = Effect.gen(function*() {
  const loader = yield* StrategyLoader
  const layerScope = yield* Effect.scope
  const entries = new Map<string, Entry>()

  const build = (template: string | undefined, settings: LoadBalancerSettings, scope: Scope.Scope) =>
    Effect.gen(function*() {
      const plugin = yield* loader.load(settings.strategy).pipe(
        Effect.mapError((e) => new PluginError({ ...e, template }))
      )
      const options = Schema.decodeUnknownEither(plugin.options, { onExcessProperty: "error", errors: "all" })(
        settings.strategy_options
      )
      if (Either.isLeft(options)) {
        return yield* new PluginError({
          plugin: settings.strategy,
          template,
          reason: `invalid strategy_options: ${formatParseError(options.left, "strategy_options").join("; ")}`
        })
      }
      const strategy = yield* plugin.make(options.right).pipe(Scope.extend(scope))
      return { name: plugin.name, strategy }
    })

  const forTemplate = (template: string, settings: LoadBalancerSettings) => {
    const entry = entries.get(template)
    if (entry !== undefined && entry.settings === settings) return Effect.succeed(entry.value)
    return Effect.gen(function*() {
      const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
      const value = yield* build(template, settings, scope).pipe(
        Effect.tapError(() => Scope.close(scope, Exit.void))
      )
      const previous = entries.get(template)
      entries.set(template, { settings, value, scope })
      if (previous !== undefined) yield* Scope.close(previous.scope, Exit.void)
      return value
    })
  }

  const validate = (settings: LoadBalancerSettings) =>
    Effect.scoped(Effect.asVoid(Effect.flatMap(Effect.scope, (scope) => build(undefined, settings, scope))))

  return { forTemplate, validate }
})
