import { Effect, Schema } from "effect"
import { TransformError, TransformPlugin } from "mcp-gateway/plugin"

/**
 * Shows a tool under another name: `tools/list` lists `from` as `to` (and `title` as given), a
 * `tools/call` of `to` calls `from`. The old name is no longer listed; calling it is refused as
 * an unknown tool, so clients see one name only.
 */
export default TransformPlugin.make({
  name: "rename_tool",
  description: "Shows a tool under another name",
  options: Schema.Struct({
    from: Schema.String,
    to: Schema.String,
    title: Schema.optional(Schema.String),
    description: Schema.optional(Schema.String)
  }),
  make: (options) =>
    Effect.sync(() => ({
      request: ({ method, params }) => {
        if (method !== "tools/call" || params === undefined) return Effect.succeed(params)
        if (params.name === options.to) return Effect.succeed({ ...params, name: options.from })
        // The old name is hidden: a call of it names a tool that, to this client, does not exist.
        if (params.name === options.from && options.from !== options.to) {
          return Effect.fail(new TransformError({ message: `Unknown tool: ${options.from}`, code: -32602 }))
        }
        return Effect.succeed(params)
      },
      result: ({ method }, result) => {
        if (method !== "tools/list" || typeof result !== "object" || result === null) return Effect.succeed(result)
        const list = result as { tools?: Array<Record<string, unknown>> }
        if (!Array.isArray(list.tools)) return Effect.succeed(result)
        return Effect.succeed({
          ...list,
          tools: list.tools.map((tool) =>
            tool.name !== options.from ? tool : {
              ...tool,
              name: options.to,
              ...(options.title === undefined ? {} : { title: options.title }),
              ...(options.description === undefined ? {} : { description: options.description })
            })
        })
      }
    }))
})
