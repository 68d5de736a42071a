import { Data, Effect, Either, Schema, type Scope, type Stream } from "effect"
import { formatParseError } from "../domain/formatParseError.js"
import { InstanceSpec, TemplateName } from "../domain/Instance.js"
import { LoadBalancerInput } from "../domain/LoadBalancer.js"
import { pluginContract } from "../loader/pluginContract.js"
import type { PluginKind } from "../loader/PluginKind.js"

/** A discovery that failed (a resolver that did not answer, a file that is not valid): nothing changes, the message is logged. */
export class DiscoveryError extends Data.TaggedError("DiscoveryError")<{ readonly message: string }> {}

/**
 * What a provider finds: the same shape as a registry file's or a config's `templates`, every
 * instance of every template it knows of. Ids are optional: a missing one is derived from the
 * endpoint (`host-port`) or the command, so the same instance keeps its id from sync to sync.
 */
export const DiscoveredDocument = Schema.Struct({
  templates: Schema.Record({
    key: TemplateName,
    value: Schema.Struct({
      /** Settings for a template the provider creates; a template of the config keeps its own. */
      load_balancer: Schema.optional(LoadBalancerInput),
      instances: Schema.Array(InstanceSpec)
    })
  })
})
export type DiscoveredDocument = typeof DiscoveredDocument.Type

const decode = Schema.decodeUnknownEither(DiscoveredDocument, { onExcessProperty: "error", errors: "all" })

/** Validates a document, every problem on one line prefixed with where it came from (a file, a command). */
export const decodeDiscoveredDocument = (value: unknown, origin: string): Effect.Effect<DiscoveredDocument, DiscoveryError> => {
  const result = decode(value)
  return Either.isRight(result)
    ? Effect.succeed(result.right)
    : Effect.fail(new DiscoveryError({ message: formatParseError(result.left).map((p) => `${origin}: ${p}`).join("; ") }))
}

/** What a provider's `make` gets besides its options. */
export interface DiscoveryContext {
  /** The provider's name in the config (`discovery.providers.{name}`). */
  readonly provider: string
  /** The config file's directory: relative paths in the options are relative to it. */
  readonly baseDir: string
  /** Where the gateway's own config file is, if it has one. */
  readonly configFile: string | undefined
}

/** One configured provider. */
export interface DiscoveryProvider {
  /**
   * Everything the provider sees now. The gateway runs it at start, every `interval` and on
   * `mcp-gateway sync`; what it returns replaces what the provider found before (instances it
   * no longer lists drain and stop). A failure changes nothing.
   */
  readonly discover: Effect.Effect<DiscoveredDocument, DiscoveryError>
  /** Optional: a signal that `discover` should run now (a watched file changed). */
  readonly changes?: Stream.Stream<void> | undefined
}

export const DiscoveryPluginTypeId: unique symbol = Symbol.for("mcp-gateway/DiscoveryPlugin") as any
export type DiscoveryPluginTypeId = typeof DiscoveryPluginTypeId

export interface DiscoveryPlugin<Options = any> {
  readonly [DiscoveryPluginTypeId]: DiscoveryPluginTypeId
  readonly name: string
  readonly description?: string | undefined
  /** Validates the provider's `options`. */
  readonly options: Schema.Schema<Options, any>
  /** How often `discover` runs when the config gives no `interval`, in seconds. */
  readonly defaultIntervalSeconds?: number | undefined
  /** Builds the provider (once, at start); may keep state and acquire resources (watchers) in the scope. */
  readonly make: (options: Options, context: DiscoveryContext) => Effect.Effect<DiscoveryProvider, DiscoveryError, Scope.Scope>
}

const contract = pluginContract<DiscoveryPlugin, DiscoveryPluginTypeId, { folder: "discovery"; noun: "discovery provider"; setting: "provider" }>(
  DiscoveryPluginTypeId,
  "DiscoveryPlugin",
  { folder: "discovery", noun: "discovery provider", setting: "provider" }
)
const kind: PluginKind<DiscoveryProvider, DiscoveryPlugin> = contract.kind

export const DiscoveryPlugin = {
  make: <Options>(definition: {
    readonly name: string
    readonly description?: string | undefined
    readonly options: Schema.Schema<Options, any>
    readonly defaultIntervalSeconds?: number | undefined
    readonly make: (options: Options, context: DiscoveryContext) => Effect.Effect<DiscoveryProvider, DiscoveryError, Scope.Scope>
  }): DiscoveryPlugin<Options> => contract.brand(definition),

  is: contract.is,

  /** Validates a document a provider read (a file, a command's output). */
  decodeDocument: decodeDiscoveredDocument,

  /** How the loader finds and checks discovery plugins. */
  kind: kind
}
