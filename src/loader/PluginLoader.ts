import { Context, Effect, Layer } from "effect"
import { existsSync, readdirSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { PluginError } from "./PluginError.js"
import type { Plugin, PluginKind } from "./PluginKind.js"

const here = path.dirname(fileURLToPath(import.meta.url))

/**
 * Where the built-in plugins of a kind are: dist/plugins/{folder}/*.js when this code runs from
 * the bundle (it is then in dist/chunks/, so `../plugins`), or plugins/{folder}/*.ts when the
 * gateway runs from source (src/loader/, the test runner).
 */
const builtinDir = (folder: string): { readonly dir: string; readonly ext: string } | undefined =>
  [
    { dir: path.resolve(here, "../plugins", folder), ext: ".js" },
    { dir: path.resolve(here, "../../plugins", folder), ext: ".ts" }
  ].find((l) => existsSync(l.dir))

export const builtinNames = (folder: string): ReadonlyArray<string> => {
  const builtin = builtinDir(folder)
  return builtin === undefined
    ? []
    : readdirSync(builtin.dir)
      .filter((f) => f.endsWith(builtin.ext) && !f.endsWith(".d.ts"))
      .map((f) => f.slice(0, -builtin.ext.length))
      .sort()
}

/** A module path (relative or absolute, or a file URL) rather than a built-in name. */
export const isModulePath = (spec: string): boolean =>
  spec.startsWith(".") || spec.startsWith("/") || spec.startsWith("file:") || /\.(m?js|ts)$/.test(spec)

export interface PluginLoaderShape {
  /** Loads and validates a plugin of a kind by built-in name or module path; each module is imported once. */
  readonly load: <V, P extends Plugin<V>>(kind: PluginKind<V, P>, spec: string) => Effect.Effect<P, PluginError>
}

/**
 * Loads plugins, built-in and the user's alike: a built-in is a file of `plugins/{kind}/`
 * loaded the same way as a user's file by path, so the built-ins prove the plugin API.
 */
export class PluginLoader extends Context.Tag("mcp-gateway/PluginLoader")<PluginLoader, PluginLoaderShape>() {
  /** Paths resolve against the config file's directory. */
  static readonly layer: Layer.Layer<PluginLoader, never, GatewayConfig> = Layer.effect(
    PluginLoader,
    Effect.map(GatewayConfig, (config) => makePluginLoader(config.gateway.baseDir))
  )
}

export const makePluginLoader = (baseDir: string): PluginLoaderShape => {
  const cache = new Map<string, Promise<unknown>>()

  const load = <V, P extends Plugin<V>>(kind: PluginKind<V, P>, spec: string) =>
    Effect.gen(function*() {
      const error = (reason: string) => new PluginError({ noun: kind.noun, setting: kind.setting, plugin: spec, reason })
      let url: string
      if (isModulePath(spec)) {
        url = spec.startsWith("file:") ? spec : pathToFileURL(path.resolve(baseDir, spec)).href
      } else {
        const builtin = builtinDir(kind.folder)
        const file = builtin === undefined || !/^[a-z0-9_-]+$/i.test(spec) ? undefined : path.join(builtin.dir, spec + builtin.ext)
        if (file === undefined || !existsSync(file)) {
          return yield* error(
            `no built-in ${kind.noun} of that name (built-ins: ${builtinNames(kind.folder).join(", ")}); ` +
              `a plugin file is named by a path such as "./my-plugin.js"`
          )
        }
        url = pathToFileURL(file).href
      }
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
          // A module that exists but imports what cannot be found (effect, mcp-gateway/plugin) says so itself.
          const missing = err.code === "ERR_MODULE_NOT_FOUND" && !existsSync(fileURLToPath(url))
          return error(missing ? `cannot find module ${fileURLToPath(url)}` : `cannot import module: ${err.message}`)
        }
      })
      const plugin = (module as { default?: unknown }).default
      if (!kind.is(plugin)) return yield* error(`the module's default export is not a ${kind.noun} plugin (${kind.exportHint})`)
      return plugin
    })

  return { load }
}
