import { type Effect, Schema, type Scope } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import type { InstanceView } from "../domain/InstanceView.js"
import type { TemplatePluginKind } from "../loader/PluginKind.js"

/** Marks a plugin's default export; a global symbol so that a plugin compiled against another copy of the package still matches. */
export const StrategyPluginTypeId: unique symbol = Symbol.for("mcp-gateway/StrategyPlugin") as any
export type StrategyPluginTypeId = typeof StrategyPluginTypeId

export interface SelectionContext {
  readonly template: string
  /** The MCP method being dispatched, e.g. `tools/call`. */
  readonly method: string
  /** 1 for the first attempt; failover attempts count up and never see instances already tried. */
  readonly attempt: number
}

/** One template's strategy: picks an instance among the healthy candidates. */
export interface Strategy {
  readonly select: (
    candidates: NonEmptyReadonlyArray<InstanceView>,
    context: SelectionContext
  ) => Effect.Effect<InstanceView>
  /**
   * Optional: the same choice made at once, for a strategy that needs nothing but its own state
   * (no services, no waiting). The gateway's request path then chooses without an Effect step;
   * without it, `select` runs. When both are given they must choose alike: write `selectNow`
   * and let `select` be `(c, ctx) => Effect.sync(() => selectNow(c, ctx))`.
   */
  readonly selectNow?: ((candidates: NonEmptyReadonlyArray<InstanceView>, context: SelectionContext) => InstanceView) | undefined
}

export interface StrategyPlugin<Options = any> {
  readonly [StrategyPluginTypeId]: StrategyPluginTypeId
  /** Shown in logs and in `/gateway/stats`. */
  readonly name: string
  readonly description?: string | undefined
  /** Validates the template's `load_balancer.strategy_options`. */
  readonly options: Schema.Schema<Options, any>
  /**
   * Builds the strategy for one template; called once per template, so keep per-template state
   * (counters, weights) in closures or Refs created here. May acquire resources in the scope.
   */
  readonly make: (options: Options) => Effect.Effect<Strategy, never, Scope.Scope>
}

/**
 * For plugins without options. (`Schema.Struct({})` would accept any object, since `{}` is
 * every object's type; this one rejects every key, so a typo in the options is caught.)
 */
export const noOptions = Schema.Struct({}).pipe(
  Schema.filter((o) => {
    const keys = Object.keys(o)
    return keys.length === 0 || `this plugin takes no options, got ${keys.map((k) => JSON.stringify(k)).join(", ")}`
  })
)

const isStrategyPlugin = (u: unknown): u is StrategyPlugin =>
  typeof u === "object" && u !== null && (u as any)[StrategyPluginTypeId] === StrategyPluginTypeId &&
  typeof (u as any).name === "string" && typeof (u as any).make === "function" && Schema.isSchema((u as any).options)

export const StrategyPlugin = {
  noOptions,

  make: <Options>(definition: {
    readonly name: string
    readonly description?: string | undefined
    readonly options: Schema.Schema<Options, any>
    readonly make: (options: Options) => Effect.Effect<Strategy, never, Scope.Scope>
  }): StrategyPlugin<Options> => ({ [StrategyPluginTypeId]: StrategyPluginTypeId, ...definition }),

  is: isStrategyPlugin,

  /** How the loader finds and checks strategy plugins. */
  kind: <TemplatePluginKind<Strategy, StrategyPlugin>> {
    folder: "strategies",
    noun: "strategy",
    setting: "strategy",
    optionsSetting: "strategy_options",
    chosen: (settings) => ({ spec: settings.strategy, options: settings.strategy_options }),
    is: isStrategyPlugin,
    exportHint: "export default StrategyPlugin.make({...}) from \"mcp-gateway/plugin\""
  }
}
