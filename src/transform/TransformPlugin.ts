import { Data, type Effect, type Schema, type Scope } from "effect"
import { pluginContract } from "../loader/pluginContract.js"
import type { PluginKind } from "../loader/PluginKind.js"

/**
 * A transform that cannot do its work for this request: the request fails with a 502 naming the
 * transform. With a JSON-RPC `code`, it is the client's mistake instead (a tool the transform
 * hides, an argument it forbids): the client gets that error, as if from the server.
 */
export class TransformError extends Data.TaggedError("TransformError")<{
  readonly message: string
  readonly code?: number | undefined
}> {}

/** A request as transforms see it: the MCP method and its params. */
export interface TransformRequest {
  readonly method: string
  readonly params: Record<string, unknown> | undefined
}

/** Where a transform runs: a template's name, or a virtual server's (`/mcp`: `*`). */
export interface TransformContext {
  readonly template: string
  /** Who calls (a credential's id, or `ip:{address}` without auth). */
  readonly caller: string
}

/**
 * One configured transform. Either hook may be left out. Request hooks run in the order the
 * config lists the transforms, result hooks in the reverse order (so a transform sees results
 * as its own request hook left them), and neither runs for a request the gateway refuses.
 */
export interface Transform {
  /** Before dispatch: the params to send instead (return them unchanged to leave the request alone). */
  readonly request?: ((request: TransformRequest, context: TransformContext) => Effect.Effect<Record<string, unknown> | undefined, TransformError>) | undefined
  /**
   * After: the result the client gets instead. `request` is the request as this transform's
   * request hook saw it. Not called for errors.
   */
  readonly result?: ((request: TransformRequest, result: unknown, context: TransformContext) => Effect.Effect<unknown, TransformError>) | undefined
}

export const TransformPluginTypeId: unique symbol = Symbol.for("mcp-gateway/TransformPlugin") as any
export type TransformPluginTypeId = typeof TransformPluginTypeId

export interface TransformPlugin<Options = any> {
  readonly [TransformPluginTypeId]: TransformPluginTypeId
  readonly name: string
  readonly description?: string | undefined
  /** Validates the transform's `options`. */
  readonly options: Schema.Schema<Options, any>
  /** Builds the transform for one template or virtual server (once; may keep state in the scope). */
  readonly make: (options: Options) => Effect.Effect<Transform, never, Scope.Scope>
}

const contract = pluginContract<TransformPlugin, TransformPluginTypeId, { folder: "transforms"; noun: "transform"; setting: "transform" }>(
  TransformPluginTypeId,
  "TransformPlugin",
  { folder: "transforms", noun: "transform", setting: "transform" }
)
const kind: PluginKind<Transform, TransformPlugin> = contract.kind

export const TransformPlugin = {
  make: <Options>(definition: {
    readonly name: string
    readonly description?: string | undefined
    readonly options: Schema.Schema<Options, any>
    readonly make: (options: Options) => Effect.Effect<Transform, never, Scope.Scope>
  }): TransformPlugin<Options> => contract.brand(definition),

  is: contract.is,

  /** How the loader finds and checks transform plugins. */
  kind: kind
}
