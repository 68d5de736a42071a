import { isObject } from "./JsonRpc.js"

/**
 * Facts of the MCP 2026-07-28 revision ("modern": no session, `server/discover`, a per-request
 * `_meta` envelope, routing headers mirroring the body) that both faces of the gateway need:
 * the endpoint reads them from modern clients, the HTTP transport writes them to modern backends.
 */
export const META = {
  protocolVersion: "io.modelcontextprotocol/protocolVersion",
  clientInfo: "io.modelcontextprotocol/clientInfo",
  clientCapabilities: "io.modelcontextprotocol/clientCapabilities",
  logLevel: "io.modelcontextprotocol/logLevel",
  serverInfo: "io.modelcontextprotocol/serverInfo",
  subscriptionId: "io.modelcontextprotocol/subscriptionId"
} as const

/** The revision's own error codes. */
export const ModernErrorCode = {
  HeaderMismatch: -32020,
  MissingRequiredClientCapability: -32021,
  UnsupportedProtocolVersion: -32022
} as const

/** Whether a version string names the modern generation (the SDKs compare them as strings). */
export const isModernVersion = (version: unknown): version is string => typeof version === "string" && version >= "2026-07-28"

/** What `Mcp-Name` mirrors for a method, if it mirrors anything. */
export const mirroredName = (method: string, params: Record<string, unknown>): unknown =>
  method === "tools/call" || method === "prompts/get"
    ? params.name
    : method === "resources/read"
    ? params.uri
    : method === "tasks/get" || method === "tasks/update" || method === "tasks/cancel"
    ? params.taskId
    : undefined

const BASE64_WRAPPED = /^=\?base64\?([A-Za-z0-9+/=]*)\?=$/
/** Printable ASCII without leading or trailing whitespace: what a header carries as it is. */
const PLAIN = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/

/** A mirrored header's value as the client meant it (`=?base64?...?=` wraps what plain ASCII cannot carry). */
export const decodeHeaderValue = (value: string): string => {
  const trimmed = value.trim()
  const wrapped = BASE64_WRAPPED.exec(trimmed)
  return wrapped === null ? trimmed : Buffer.from(wrapped[1]!, "base64").toString("utf8")
}

/** A value for a mirrored header: as it is if plain ASCII, else wrapped in `=?base64?...?=`. */
export const encodeHeaderValue = (value: string): string =>
  PLAIN.test(value) && !BASE64_WRAPPED.test(value) ? value : `=?base64?${Buffer.from(value, "utf8").toString("base64")}?=`

/** Whether a result asks the client for input (the revision's multi-round-trip requests). */
export const isInputRequired = (result: unknown): result is Record<string, unknown> & { readonly resultType: "input_required" } =>
  isObject(result) && result.resultType === "input_required"

/** An HTTP header name (RFC 9110 token). */
const HEADER_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/** Tool arguments the server mirrors in `Mcp-Param-{Name}` headers, by tool name (from `x-mcp-header` in the input schemas). */
export type ToolHeaders = ReadonlyMap<string, ReadonlyArray<{ readonly path: ReadonlyArray<string>; readonly header: string }>>

/** Collects the `x-mcp-header` declarations of a `tools/list` page's tools (through plain `properties` chains, as the revision allows). */
export const collectToolHeaders = (tools: unknown, into: Map<string, Array<{ readonly path: ReadonlyArray<string>; readonly header: string }>>) => {
  if (!Array.isArray(tools)) return
  for (const tool of tools) {
    if (!isObject(tool) || typeof tool.name !== "string") continue
    const found: Array<{ path: ReadonlyArray<string>; header: string }> = []
    const walk = (schema: unknown, path: ReadonlyArray<string>) => {
      if (!isObject(schema) || !isObject(schema.properties)) return
      for (const [key, property] of Object.entries(schema.properties)) {
        if (!isObject(property)) continue
        const header = property["x-mcp-header"]
        // A name that cannot be an HTTP header is not mirrored (the SDK's clients drop such a tool).
        if (typeof header === "string" && HEADER_TOKEN.test(header)) found.push({ path: [...path, key], header })
        walk(property, [...path, key])
      }
    }
    walk(tool.inputSchema, [])
    if (found.length > 0) into.set(tool.name, found)
    else into.delete(tool.name)
  }
}

/** The value a declared tool argument mirrors in its header, if the arguments carry one (strings as they are, numbers and booleans as text). */
export const mirroredArgument = (args: unknown, path: ReadonlyArray<string>): string | undefined => {
  let value: unknown = args
  for (const key of path) value = isObject(value) ? value[key] : undefined
  return typeof value === "string" ? value : typeof value === "number" || typeof value === "boolean" ? String(value) : undefined
}

/**
 * Checks a modern client's `Mcp-Param-*` headers against its tool call, as the revision's
 * servers do: each declared argument present in the body needs its header, decoding to the
 * same value; a header for an absent argument, or one that is not valid, disagrees too.
 * Returns what disagrees, or undefined.
 */
export const paramHeaderMismatch = (
  toolHeaders: ToolHeaders,
  params: Record<string, unknown>,
  header: (name: string) => string | undefined
): { readonly header: string; readonly problem: string } | undefined => {
  if (typeof params.name !== "string") return undefined
  for (const { header: name, path } of toolHeaders.get(params.name) ?? []) {
    const headerName = `Mcp-Param-${name}`
    const sent = header(`mcp-param-${name.toLowerCase()}`)
    const value = mirroredArgument(params.arguments, path)
    if (sent === undefined) {
      if (value !== undefined) return { header: headerName, problem: `the body carries ${path.join(".")}=${JSON.stringify(value)} but the ${headerName} header is absent` }
      continue
    }
    const trimmed = sent.trim()
    if (/[^\x20-\x7e]/.test(trimmed) || (trimmed.startsWith("=?base64?") && !/^=\?base64\?[A-Za-z0-9+/]*={0,2}\?=$/.test(trimmed))) {
      return { header: headerName, problem: `the ${headerName} header is not a valid value (plain printable ASCII, or =?base64?...?=)` }
    }
    if (value === undefined) return { header: headerName, problem: `the ${headerName} header is present but the body carries no ${path.join(".")}` }
    if (decodeHeaderValue(trimmed) !== value) {
      return { header: headerName, problem: `the ${headerName} header decodes to ${JSON.stringify(decodeHeaderValue(trimmed))} but the body carries ${path.join(".")}=${JSON.stringify(value)}` }
    }
  }
  return undefined
}
