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
