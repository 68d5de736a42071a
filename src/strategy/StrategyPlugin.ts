import { Effect, Schema, type Scope } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import type { InstanceView } from "../domain/InstanceView.js"
import { pluginContract } from "../loader/pluginContract.js"
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

/** A choice made at once, from the strategy's own state (no services, no waiting). */
export type SelectNow = (candidates: NonEmptyReadonlyArray<InstanceView>, context: SelectionContext) => InstanceView
/** A choice as an Effect (services, waiting). */
export type Select = (candidates: NonEmptyReadonlyArray<InstanceView>, context: SelectionContext) => Effect.Effect<InstanceView>

/** One template's strategy: picks an instance among the healthy candidates. */
export interface Strategy {
  readonly select: Select
  /**
   * The same choice made at once, for a strategy that needs nothing but its own state. The
   * gateway's request path then chooses without an Effect step; without it, `select` runs.
   */
  readonly selectNow?: SelectNow | undefined
}

/**
 * What a strategy plugin's `make` builds: one of the two ways to choose. `selectNow` when the
 * choice needs nothing but the strategy's own state (then `StrategyPlugin.make` derives
 * `select` from it, so both choose alike), `select` when it needs services or waits. (Both
 * may still be given, as before: they must choose alike.)
 */
export type StrategyDefinition =
  | { readonly selectNow: SelectNow; readonly select?: Select | undefined }
  | { readonly select: Select; readonly selectNow?: SelectNow | undefined }

/** A strategy with both ways to choose that its definition allows: `select` derived from `selectNow` when not given. */
export const completeStrategy = (definition: StrategyDefinition): Strategy =>
  definition.select !== undefined
    ? definition as Strategy
    : { selectNow: definition.selectNow, select: (candidates, context) => Effect.sync(() => definition.selectNow!(candidates, context)) }

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

const contract = pluginContract<StrategyPlugin, StrategyPluginTypeId, Omit<TemplatePluginKind<Strategy>, "is" | "exportHint">>(
  StrategyPluginTypeId,
  "StrategyPlugin",
  {
    folder: "strategies",
    noun: "strategy",
    setting: "strategy",
    optionsSetting: "strategy_options",
    chosen: (settings) => ({ spec: settings.strategy, options: settings.strategy_options })
  }
)
const kind: TemplatePluginKind<Strategy, StrategyPlugin> = contract.kind

export const StrategyPlugin = {
  noOptions,

  make: <Options>(definition: {
    readonly name: string
    readonly description?: string | undefined
    readonly options: Schema.Schema<Options, any>
    /** Builds one template's strategy: `selectNow` or `select` (see StrategyDefinition). */
    readonly make: (options: Options) => Effect.Effect<StrategyDefinition, never, Scope.Scope>
  }): StrategyPlugin<Options> =>
    contract.brand({ ...definition, make: (options: Options) => Effect.map(definition.make(options), completeStrategy) }),

  is: contract.is,

  /** How the loader finds and checks strategy plugins. */
  kind
}
