import { Context, Effect, Layer } from "effect"
import type { PluginError } from "../loader/PluginError.js"
import type { PluginLoader } from "../loader/PluginLoader.js"
import { makeTemplatePlugins, type TemplatePluginsShape } from "../loader/TemplatePlugins.js"
import { Registry } from "../registry/Registry.js"
import { type Strategy, StrategyPlugin } from "./StrategyPlugin.js"

/** Every template's strategy, built once per template (strategies keep per-template state). */
export class Strategies extends Context.Tag("mcp-gateway/Strategies")<Strategies, TemplatePluginsShape<Strategy>>() {
  /** Builds the strategy of every template in the registry up front, so that a bad plugin stops start-up. */
  static readonly layer: Layer.Layer<Strategies, PluginError, PluginLoader | Registry> = Layer.scoped(
    Strategies,
    Effect.gen(function*() {
      const strategies = yield* makeTemplatePlugins(StrategyPlugin.kind)
      const registry = yield* Registry
      for (const template of registry.templates()) yield* strategies.forTemplate(template.name, template.settings)
      return strategies
    })
  )
}
