import { Effect, Either, Schema } from "effect"
import { formatParseError } from "../domain/formatParseError.js"
import { type DispatchError, ListTooLong } from "../domain/GatewayError.js"
import { isObject } from "../domain/JsonRpc.js"
import type { DispatcherShape } from "../dispatch/Dispatcher.js"
import type { CacheHints, ExposureShape } from "../exposure/Exposure.js"
import type { InstanceState } from "../instance/InstanceState.js"

const Meta = Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown }))

export const ToolCallBody = Schema.Struct({
  name: Schema.String.pipe(Schema.minLength(1, { message: () => "expected a non-empty tool name" })),
  arguments: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  _meta: Meta
})
export const ResourceReadBody = Schema.Struct({
  uri: Schema.String.pipe(Schema.minLength(1, { message: () => "expected a non-empty resource URI" })),
  _meta: Meta
})
export const PromptGetBody = Schema.Struct({
  name: Schema.String.pipe(Schema.minLength(1, { message: () => "expected a non-empty prompt name" })),
  arguments: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String })),
  _meta: Meta
})

/** A REST operation of `/mcp/{template}/{operation}`: which MCP method it is and how it is called. */
export interface RestOperation {
  readonly httpMethod: "GET" | "POST"
  readonly mcpMethod: string
  /** For lists: the result's array key; every page is fetched and the items counted. */
  readonly listKey?: string
  /** For POSTs: validates the body, which becomes the MCP request's params. */
  readonly decodeBody?: (body: unknown) => Either.Either<Record<string, unknown>, ReadonlyArray<string>>
}

/** A JSON object that a `Record({ key: String, value: Unknown })` takes as it is. */
const isPlainRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value) && !Object.hasOwn(value, "__proto__")

/**
 * `ToolCallBody` for the bodies it accepts, without the Schema machinery: `tools/call` is the REST
 * face's hot path, and decoding its body with Schema cost more than the rest of the validation.
 * Anything it does not accept (including every invalid body) goes to the Schema, whose messages
 * the client gets; what it accepts, the Schema accepts too, with the same value.
 */
const toolCallFastPath = (body: Record<string, unknown>): Record<string, unknown> | undefined => {
  for (const key in body) if (key !== "name" && key !== "arguments" && key !== "_meta") return undefined
  const { _meta, arguments: args, name } = body
  if (typeof name !== "string" || name.length === 0) return undefined
  if (args !== undefined && !isPlainRecord(args)) return undefined
  if (_meta !== undefined && !isPlainRecord(_meta)) return undefined
  const params: Record<string, unknown> = { name }
  if (args !== undefined) params.arguments = args
  if (_meta !== undefined) params._meta = _meta
  return params
}

const bodyDecoder = <A extends Record<string, unknown>, I>(
  schema: Schema.Schema<A, I>,
  fastPath?: (body: Record<string, unknown>) => Record<string, unknown> | undefined
) => {
  const decode = Schema.decodeUnknownEither(schema, { errors: "all", onExcessProperty: "error" })
  return (body: unknown): Either.Either<Record<string, unknown>, ReadonlyArray<string>> => {
    if (!isObject(body)) {
      return Either.left([`body: expected a JSON object, got ${body === null ? "null" : Array.isArray(body) ? "an array" : typeof body}`])
    }
    const fast = fastPath?.(body)
    return fast !== undefined ? Either.right(fast) : Either.mapLeft(decode(body), (e) => formatParseError(e, "body"))
  }
}

export const restOperations: Readonly<Record<string, RestOperation>> = {
  "tools/list": { httpMethod: "GET", mcpMethod: "tools/list", listKey: "tools" },
  "tools/call": { httpMethod: "POST", mcpMethod: "tools/call", decodeBody: bodyDecoder(ToolCallBody, toolCallFastPath) },
  "resources/list": { httpMethod: "GET", mcpMethod: "resources/list", listKey: "resources" },
  "resources/templates/list": { httpMethod: "GET", mcpMethod: "resources/templates/list", listKey: "resourceTemplates" },
  "resources/read": { httpMethod: "POST", mcpMethod: "resources/read", decodeBody: bodyDecoder(ResourceReadBody) },
  "prompts/list": { httpMethod: "GET", mcpMethod: "prompts/list", listKey: "prompts" },
  "prompts/get": { httpMethod: "POST", mcpMethod: "prompts/get", decodeBody: bodyDecoder(PromptGetBody) }
}

/**
 * A `tools/call` result as the REST face answers it: with `isError` always present, `false` when
 * the server left it out (MCP makes it optional; the REST answers of the seed document show it).
 */
export const withIsError = (result: unknown): unknown =>
  isObject(result) && result.isError === undefined ? { ...result, isError: false } : result

/** A REST operation's answer: the result, and the instance that served it (none when it came from the cache). */
export interface RestResult {
  readonly result: unknown
  readonly instanceId: string | undefined
}

/**
 * Runs one REST operation through the Dispatcher. Lists follow `nextCursor` to the end, every
 * page from the instance that served the first (cursors are opaque and per instance), for at
 * most `maxPages` requests: a server that keeps answering with a cursor gets a clear 502, never
 * a truncated list passed off as complete. Each request goes through what the template shows
 * (its filters, transforms and cache: exposure/Exposure.ts), as on the MCP endpoint.
 */
export const runRestOperation = (
  dispatcher: DispatcherShape,
  template: string,
  operation: RestOperation,
  params: Record<string, unknown> | undefined,
  options: {
    readonly maxPages: number
    readonly headers?: Readonly<Record<string, string>> | undefined
    readonly exposure?: ExposureShape | undefined
    /** Who calls (for private cache entries and transforms). */
    readonly caller?: string | undefined
    /** Auth is on: the requests go to the caller's own process of each instance (CallOptions.caller). */
    readonly processPerCaller?: boolean | undefined
  }
): Effect.Effect<RestResult, DispatchError> => {
  const { exposure } = options
  const caller = { id: options.caller ?? "", declaration: REST_DECLARATION }
  /** One MCP request: through the template's exposure when it has anything to do. */
  const request = (p: Record<string, unknown> | undefined, instance: InstanceState | undefined) => {
    const direct = (sent: Record<string, unknown> | undefined, onCacheHints?: (hints: CacheHints) => void) =>
      dispatcher.call(template, operation.mcpMethod, sent, {
        instance,
        headers: options.headers,
        relay: onCacheHints === undefined ? undefined : { onCacheHints },
        caller: options.processPerCaller === true ? options.caller : undefined
      })
    if (exposure === undefined || !exposure.involved(template, operation.mcpMethod, p)) {
      return Effect.map(direct(p), (r) => ({ result: r.result, instance: r.instance as InstanceState | undefined }))
    }
    let served: InstanceState | undefined
    return exposure.run(template, operation.mcpMethod, p, caller, (sent, onCacheHints) =>
      Effect.map(direct(sent, onCacheHints), (r) => {
        served = r.instance
        return r.result
      })).pipe(Effect.map((result) => ({ result, instance: served })))
  }
  const key = operation.listKey
  if (key === undefined) return Effect.map(request(params, undefined), (r) => ({ result: r.result, instanceId: r.instance?.id }))
  return Effect.gen(function*() {
    const first = yield* request(undefined, undefined)
    const items: Array<unknown> = []
    let page = first.result
    for (let pages = 1;; pages++) {
      const list = isObject(page) ? page[key] : undefined
      if (Array.isArray(list)) items.push(...list)
      const cursor = isObject(page) ? page.nextCursor : undefined
      if (typeof cursor !== "string" || cursor === "") break
      if (pages >= options.maxPages) return yield* new ListTooLong({ template, instanceId: first.instance?.id ?? "", pages })
      page = (yield* request({ cursor }, first.instance)).result
    }
    return { result: { [key]: items, count: items.length }, instanceId: first.instance?.id }
  })
}

/** What the REST face declares to servers: nothing (it cannot answer a server's questions). */
const REST_DECLARATION = "rest"
