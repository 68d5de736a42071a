import { Context, Effect, Layer } from "effect"
import type { PluginError } from "../loader/PluginError.js"
import type { PluginLoader } from "../loader/PluginLoader.js"
import { makeTemplatePlugins, type TemplatePluginsShape } from "../loader/TemplatePlugins.js"
import { Registry } from "../registry/Registry.js"
import { type HealthProbe, HealthProbePlugin } from "./HealthProbePlugin.js"

/** Every template's health probe (`load_balancer.health_probe`), built once per template. */
export class HealthProbes extends Context.Tag("mcp-gateway/HealthProbes")<HealthProbes, TemplatePluginsShape<HealthProbe>>() {
  /** Builds the probe of every template up front, so that a bad plugin stops start-up. */
  static readonly layer: Layer.Layer<HealthProbes, PluginError, PluginLoader | Registry> = Layer.scoped(
    HealthProbes,
    Effect.gen(function*() {
      const probes = yield* makeTemplatePlugins(HealthProbePlugin.kind)
      const registry = yield* Registry
      for (const template of registry.templates()) yield* probes.forTemplate(template.name, template.settings)
      return probes
    })
  )
}
