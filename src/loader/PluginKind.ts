import type { Effect, Schema, Scope } from "effect"
import type { LoadBalancerSettings } from "../domain/LoadBalancer.js"

/** What every plugin's default export has: a name, an options Schema, and `make`. */
export interface Plugin<Value, Options = any> {
  readonly name: string
  readonly description?: string | undefined
  /** Validates the options the template gives the plugin. */
  readonly options: Schema.Schema<Options, any>
  /** Builds the plugin's value (for one template, or one discovery provider); may keep state, and acquire resources in the scope. */
  readonly make: (options: Options, ...context: ReadonlyArray<any>) => Effect.Effect<Value, any, Scope.Scope>
}

/** A kind of plugin: where its built-ins live, what it is called, and how its export is recognised. */
export interface PluginKind<Value, P extends Plugin<Value> = Plugin<Value>> {
  /** The folder under `plugins/` with the built-ins (`strategies`, `health`, `discovery`). */
  readonly folder: string
  /** What users call it in messages: `strategy`, `health probe`. */
  readonly noun: string
  /** The config field naming it (`strategy`, `provider`, `transform`). */
  readonly setting: string
  readonly is: (u: unknown) => u is P
  /** How the export should look, for the error message. */
  readonly exportHint: string
}

/** A kind of plugin each template chooses in its load_balancer (strategies, health probes): built per template by TemplatePlugins. */
export interface TemplatePluginKind<Value, P extends Plugin<Value> = Plugin<Value>> extends PluginKind<Value, P> {
  /** The load_balancer field with its options. */
  readonly optionsSetting: string
  /** Which plugin, with which options, a template's settings ask for. */
  readonly chosen: (settings: LoadBalancerSettings) => { readonly spec: string; readonly options: unknown }
}
