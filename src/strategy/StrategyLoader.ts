import { Context, Effect, Layer } from "effect"
import { existsSync, readdirSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { PluginError } from "./PluginError.js"
import { StrategyPlugin } from "./StrategyPlugin.js"

const here = path.dirname(fileURLToPath(import.meta.url))

/**
 * Where the built-in strategies are: dist/plugins/strategies/*.js next to the compiled
 * gateway, or plugins/strategies/*.ts when the gateway runs from source (the test runner).
 */
const builtinLocations: ReadonlyArray<{ readonly dir: string; readonly ext: string }> = [
  { dir: path.resolve(here, "../plugins/strategies"), ext: ".js" },
  { dir: path.resolve(here, "../../plugins/strategies"), ext: ".ts" }
]

const builtinDir = builtinLocations.find((l) => existsSync(l.dir))

export const builtinStrategyNames = (): ReadonlyArray<string> =>
  builtinDir === undefined
    ? []
    : readdirSync(builtinDir.dir)
      .filter((f) => f.endsWith(builtinDir.ext) && !f.endsWith(".d.ts"))
      .map((f) => f.slice(0, -builtinDir.ext.length))
      .sort()

/** A module path (relative or absolute, or a file URL) rather than a built-in name. */
export const isModulePath = (spec: string): boolean =>
  spec.startsWith(".") || spec.startsWith("/") || spec.startsWith("file:") || /\.(m?js|ts)$/.test(spec)

export interface StrategyLoaderShape {
  /** Loads and validates a plugin by built-in name or module path; each module is imported once. */
  readonly load: (spec: string) => Effect.Effect<StrategyPlugin, PluginError>
}

export class StrategyLoader extends Context.Tag("mcp-gateway/StrategyLoader")<StrategyLoader, StrategyLoaderShape>() {
  /** Paths resolve against the config file's directory. */
  static readonly layer: Layer.Layer<StrategyLoader, never, GatewayConfig> = Layer.effect(
    StrategyLoader,
    Effect.map(GatewayConfig, (config) => makeStrategyLoader(config.gateway.baseDir))
  )
}

export const makeStrategyLoader = (baseDir: string): StrategyLoaderShape => {
  const cache = new Map<string, Promise<unknown>>()

  const resolve = (spec: string): string | PluginError => {
    if (isModulePath(spec)) {
      return spec.startsWith("file:") ? spec : pathToFileURL(path.resolve(baseDir, spec)).href
    }
    if (builtinDir !== undefined && /^[a-z0-9_-]+$/i.test(spec)) {
      const file = path.join(builtinDir.dir, spec + builtinDir.ext)
      if (existsSync(file)) return pathToFileURL(file).href
    }
    return new PluginError({
      plugin: spec,
      reason: `no built-in strategy of that name (built-ins: ${builtinStrategyNames().join(", ")}); ` +
        `a plugin file is named by a path such as "./my-strategy.js"`
    })
  }

  const load = (spec: string) =>
    Effect.gen(function*() {
      const url = resolve(spec)
      if (url instanceof PluginError) return yield* url
      let loading = cache.get(url)
      if (loading === undefined) {
        loading = import(url)
        cache.set(url, loading)
      }
      const module = yield* Effect.tryPromise({
        try: () => loading,
        catch: (e) => {
          cache.delete(url)
          const err = e as NodeJS.ErrnoException
          return new PluginError({
            plugin: spec,
            reason: err.code === "ERR_MODULE_NOT_FOUND"
              ? `cannot find module ${fileURLToPath(url)}`
              : `cannot import module: ${err.message}`
          })
        }
      })
      const plugin = (module as { default?: unknown }).default
      if (!StrategyPlugin.is(plugin)) {
        return yield* new PluginError({
          plugin: spec,
          reason: "the module's default export is not a StrategyPlugin (export default StrategyPlugin.make({...}) " +
            "from \"mcp-gateway/plugin\")"
        })
      }
      return plugin
    })

  return { load }
}
