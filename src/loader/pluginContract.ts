import { Schema } from "effect"
import type { Plugin } from "./PluginKind.js"

/**
 * The contract of one kind of plugin, written once for the four kinds (strategy, health probe,
 * discovery provider, transform): the brand its `make` puts on a plugin's default export (a
 * global symbol, so a plugin compiled against another copy of the package still matches), the
 * check the loader runs on an export, and what the loader says about the kind.
 */
export const pluginContract = <P extends Plugin<unknown>, TypeId extends symbol, const Kind extends {
  /** The folder under `plugins/` with the built-ins. */
  readonly folder: string
  /** What users call it in messages. */
  readonly noun: string
  /** The config field naming it. */
  readonly setting: string
}>(
  typeId: TypeId,
  /** The public name of the kind's helper (`StrategyPlugin`), for the error message's hint. */
  helper: string,
  kind: Kind
) => {
  const is = (u: unknown): u is P =>
    typeof u === "object" && u !== null && (u as Record<symbol, unknown>)[typeId] === typeId &&
    typeof (u as { name?: unknown }).name === "string" && typeof (u as { make?: unknown }).make === "function" &&
    Schema.isSchema((u as { options?: unknown }).options)
  return {
    is,
    /** A plugin's definition, branded as its kind (what `XPlugin.make` returns). */
    brand: <D extends object>(definition: D): D & { readonly [K in TypeId]: TypeId } =>
      ({ [typeId]: typeId, ...definition }) as D & { readonly [K in TypeId]: TypeId },
    /** How the loader finds and checks the kind's plugins. */
    kind: { ...kind, is, exportHint: `export default ${helper}.make({...}) from "mcp-gateway/plugin"` }
  }
}
