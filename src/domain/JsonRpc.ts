/**
 * JSON-RPC 2.0 as MCP uses it. These are plain types, not Schemas: the gateway forwards
 * messages it does not own, so on the hot path it only looks at the envelope.
 */
export type JsonRpcId = string | number

export interface JsonRpcRequest {
  readonly jsonrpc: "2.0"
  readonly id: JsonRpcId
  readonly method: string
  readonly params?: Record<string, unknown> | undefined
}

export interface JsonRpcNotification {
  readonly jsonrpc: "2.0"
  readonly method: string
  readonly params?: Record<string, unknown> | undefined
}

export interface JsonRpcErrorObject {
  readonly code: number
  readonly message: string
  readonly data?: unknown
}

export interface JsonRpcSuccess {
  readonly jsonrpc: "2.0"
  readonly id: JsonRpcId
  readonly result: unknown
}

export interface JsonRpcFailure {
  readonly jsonrpc: "2.0"
  readonly id: JsonRpcId | null
  readonly error: JsonRpcErrorObject
}

export type JsonRpcResponse = JsonRpcSuccess | JsonRpcFailure

export const ErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  ResourceNotFound: -32002
} as const

export const isObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** A message with a method and an id is a request; with a method and no id, a notification. */
export const isRequest = (m: unknown): m is JsonRpcRequest =>
  isObject(m) && typeof m.method === "string" && (typeof m.id === "string" || typeof m.id === "number")

export const isNotification = (m: unknown): m is JsonRpcNotification =>
  isObject(m) && typeof m.method === "string" && !("id" in m)

export const isResponse = (m: unknown): m is JsonRpcResponse =>
  isObject(m) && typeof m.method !== "string" && ("result" in m || "error" in m) && "id" in m

/** A message a server sends outside any request (a list change, a resource update, a log message). */
export interface ServerNotice {
  readonly method: string
  readonly params?: unknown
}
