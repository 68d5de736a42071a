import { Effect, Schema } from "effect"
import { globMatcher, TransformPlugin } from "mcp-gateway/plugin"

/**
 * Default arguments for tool calls: each of `arguments` is added to a `tools/call` of the
 * matching tools when the client did not give it (with `override: true`, always, replacing
 * the client's: a value the client must not choose, such as a tenant or a read-only flag).
 */
export default TransformPlugin.make({
  name: "inject_arguments",
  description: "Adds default arguments to tool calls",
  options: Schema.Struct({
    /** Tool names or globs (default: every tool). */
    tools: Schema.optional(Schema.Array(Schema.String)),
    arguments: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
    override: Schema.optionalWith(Schema.Boolean, { default: () => false })
  }),
  make: (options) =>
    Effect.sync(() => {
      const applies = globMatcher(options.tools)
      return {
        request: ({ method, params }) => {
          if (method !== "tools/call" || typeof params?.name !== "string" || !applies(params.name)) return Effect.succeed(params)
          const given = typeof params.arguments === "object" && params.arguments !== null ? params.arguments as Record<string, unknown> : {}
          const merged = options.override ? { ...given, ...options.arguments } : { ...options.arguments, ...given }
          return Effect.succeed({ ...params, arguments: merged })
        }
      }
    })
})
