import { Effect, Schema } from "effect"
import { globMatcher, TransformPlugin } from "mcp-gateway/plugin"

/**
 * Removes fields from results before the client sees them (or replaces their values, with
 * `replacement`). A field is a dotted path into the result: `structuredContent.password`,
 * `_meta.internal`, `content.*.annotations` (`*` is every element of an array, or every key of an
 * object). For `tools/call` results of the matching tools by default; `methods` widens it.
 * When the result also carries its structured content as JSON text (`content[].text`, as many
 * servers send both), the same paths under `structuredContent` are redacted in that text.
 */
export default TransformPlugin.make({
  name: "redact",
  description: "Removes (or masks) fields of results",
  options: Schema.Struct({
    fields: Schema.Array(Schema.String).pipe(Schema.minItems(1)),
    tools: Schema.optional(Schema.Array(Schema.String)),
    methods: Schema.optionalWith(Schema.Array(Schema.String), { default: () => ["tools/call"] }),
    replacement: Schema.optional(Schema.String)
  }),
  make: (options) =>
    Effect.sync(() => {
      const applies = globMatcher(options.tools)
      const paths = options.fields.map((f) => f.split("."))

      const redactAt = (value: unknown, path: ReadonlyArray<string>): unknown => {
        if (path.length === 0 || typeof value !== "object" || value === null) return value
        const [head, ...rest] = path as [string, ...Array<string>]
        if (Array.isArray(value)) {
          if (head !== "*" && !/^\d+$/.test(head)) return value
          return value.map((item, i) => (head === "*" || Number(head) === i ? replaceOrDescend(item, rest) : item))
        }
        const object = value as Record<string, unknown>
        const keys = head === "*" ? Object.keys(object) : head in object ? [head] : []
        if (keys.length === 0) return value
        const out: Record<string, unknown> = { ...object }
        for (const key of keys) {
          if (rest.length === 0) {
            if (options.replacement === undefined) delete out[key]
            else out[key] = options.replacement
          } else out[key] = redactAt(object[key], rest)
        }
        return out
      }
      /** An array element at the end of a path is masked (elements are not removed: indexes would shift). */
      const replaceOrDescend = (item: unknown, rest: ReadonlyArray<string>): unknown =>
        rest.length === 0 ? (options.replacement ?? null) : redactAt(item, rest)

      /** The structured content repeated as JSON text in `content`: redacted the same way. */
      const redactText = (result: Record<string, unknown>): Record<string, unknown> => {
        const structured = paths.filter((p) => p[0] === "structuredContent").map((p) => p.slice(1))
        if (structured.length === 0 || !Array.isArray(result.content)) return result
        return {
          ...result,
          content: result.content.map((block: any) => {
            if (block?.type !== "text" || typeof block.text !== "string") return block
            try {
              const parsed = JSON.parse(block.text)
              const redacted = structured.reduce((v, p) => redactAt(v, p), parsed)
              return { ...block, text: JSON.stringify(redacted) }
            } catch {
              return block
            }
          })
        }
      }

      return {
        result: ({ method, params }, result) => {
          if (!options.methods.includes(method)) return Effect.succeed(result)
          if (method === "tools/call" && (typeof params?.name !== "string" || !applies(params.name))) return Effect.succeed(result)
          if (typeof result !== "object" || result === null) return Effect.succeed(result)
          const redacted = paths.reduce<unknown>((v, p) => redactAt(v, p), result)
          return Effect.succeed(redactText(redacted as Record<string, unknown>))
        }
      }
    })
})
