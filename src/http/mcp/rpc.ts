import type * as http from "node:http"
import type { DispatchError, SessionLimitReached } from "../../domain/GatewayError.js"
import { ErrorCode, type JsonRpcId } from "../../domain/JsonRpc.js"

/** A JSON-RPC error body, the form every error of the MCP endpoint takes (clients parse JSON-RPC there). */
export const rpcError = (id: JsonRpcId | null, code: number, message: string) => ({ jsonrpc: "2.0", id, error: { code, message } })

/** The `accept` header lists every one of these (or a wildcard that covers them). */
export const accepts = (header: string | undefined, ...types: ReadonlyArray<string>) => {
  if (header === undefined) return false
  const listed = header.split(",").map((part) => part.split(";")[0]!.trim().toLowerCase())
  return types.every((type) => listed.includes(type) || listed.includes("*/*") || listed.includes(`${type.split("/")[0]}/*`))
}

/**
 * `accepts(header, "application/json", "text/event-stream")`, what every POST to the endpoint
 * must send, with the last header's answer remembered: a client sends the same one on every
 * request, and parsing it each time was work on the hot path.
 */
export const acceptsJsonAndEventStream = (header: string | undefined) => {
  if (header === undefined) return false
  if (header !== lastAccept.header) {
    lastAccept.ok = accepts(header, "application/json", "text/event-stream")
    lastAccept.header = header
  }
  return lastAccept.ok
}

const lastAccept = { header: "", ok: false }

/**
 * How a failure to reach a backend session is answered: 404 for an unknown template, 503 with
 * Retry-After when nothing is available (every process slot busy too), 429 over a client's session
 * cap, 502 otherwise.
 */
export const sessionFailureAnswer = (id: JsonRpcId | null, error: DispatchError | SessionLimitReached) => {
  // (Not the REST face's status of each error: a session that cannot be opened is the gateway's 502, unless it is
  // an unknown template, nothing available, or a cap.)
  const status = error._tag === "TemplateNotFound" || error._tag === "NoHealthyInstance" || error._tag === "SessionLimitReached"
    ? error.httpStatus
    : 502
  const retryAfter = error._tag === "NoHealthyInstance" || error._tag === "SessionLimitReached" ? error.retryAfterSeconds : undefined
  const headers: http.OutgoingHttpHeaders | undefined = retryAfter === undefined ? undefined : { "retry-after": String(retryAfter) }
  return { status, body: rpcError(id, ErrorCode.InternalError, error.message), headers }
}
