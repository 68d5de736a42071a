import type * as http from "node:http"
import { isObject, type JsonRpcId } from "../../domain/JsonRpc.js"
import { decodeHeaderValue, META, mirroredName, ModernErrorCode } from "../../domain/ModernProtocol.js"
import { MODERN_PROTOCOL_VERSIONS } from "../../domain/Protocol.js"

/**
 * The MCP 2026-07-28 revision on the wire ("modern"): no session, every request carries the
 * protocol version, the client's info and capabilities in `params._meta`, and mirrors its
 * method (and name) in headers that must agree with the body. This file reads and checks that
 * envelope; nothing here touches a backend.
 */
/** Methods a modern client may call through the gateway; anything else is 404 / -32601. */
export const MODERN_METHODS: ReadonlySet<string> = new Set([
  "server/discover",
  "tools/list",
  "tools/call",
  "resources/list",
  "resources/templates/list",
  "resources/read",
  "prompts/list",
  "prompts/get",
  "completion/complete",
  "subscriptions/listen",
  // The tasks extension's methods: for a modern server that offers it (routed to the task's instance).
  "tasks/get",
  "tasks/update",
  "tasks/cancel"
])

/** The version a message's envelope claims, if any: what tells a modern request from an old one. */
export const envelopeVersion = (message: Record<string, unknown>): unknown => {
  const params = message.params
  if (!isObject(params) || !isObject(params._meta)) return undefined
  return params._meta[META.protocolVersion]
}

export interface ModernRequest {
  readonly id: JsonRpcId
  readonly method: string
  readonly version: string
  readonly clientInfo: Record<string, unknown> | undefined
  readonly capabilities: Record<string, unknown>
  /** The params without the envelope's keys (what an old backend is sent). */
  readonly params: Record<string, unknown>
}

export interface EnvelopeRefusal {
  readonly status: 400 | 404
  readonly body: { readonly jsonrpc: "2.0"; readonly id: JsonRpcId | null; readonly error: { code: number; message: string; data?: unknown } }
}

const refuse = (status: 400 | 404, id: JsonRpcId | null, code: number, message: string, data?: unknown): EnvelopeRefusal => ({
  status,
  body: { jsonrpc: "2.0", id, error: data === undefined ? { code, message } : { code, message, data } }
})

const header = (req: http.IncomingMessage, name: string) => {
  const value = req.headers[name]
  return typeof value === "string" ? value.trim() : undefined
}

const mismatch = (id: JsonRpcId, headerValue: string | undefined, what: string) =>
  refuse(400, id, ModernErrorCode.HeaderMismatch, `Bad Request: the request headers and body disagree: ${what}`, {
    mismatch: { header: headerValue ?? "(missing)", body: what }
  })

/**
 * Checks a modern request's envelope and headers, in the order the revision's servers do:
 * the headers against the body (400 / -32020), the version (400 / -32022), the envelope
 * (400 / -32602), then the method (404 / -32601). Mirrored `Mcp-Param-*` headers are not
 * checked here (that needs the tool's schema): they are the backend's to check.
 */
export const readModernRequest = (
  req: http.IncomingMessage,
  message: { readonly id: JsonRpcId; readonly method: string; readonly params?: unknown }
): ModernRequest | EnvelopeRefusal => {
  const { id, method } = message
  const params = isObject(message.params) ? message.params : {}
  const meta = isObject(params._meta) ? params._meta : {}
  const version = meta[META.protocolVersion]

  const versionHeader = header(req, "mcp-protocol-version")
  if (version === undefined) {
    // A modern header over a body without the envelope's version: a malformed envelope (as the
    // revision's servers say), not a disagreement between two versions.
    const missing = isObject(params._meta) ? [META.protocolVersion] : ["_meta"]
    return refuse(
      400,
      id,
      -32602,
      `Invalid params: the MCP-Protocol-Version header names protocol revision ${versionHeader}, but the request is missing the required per-request envelope key(s): ${missing.join(", ")}`,
      { envelope: { missing } }
    )
  }
  if (versionHeader !== version) {
    return mismatch(
      id,
      versionHeader,
      `the body envelope names protocol version ${String(version)} but the MCP-Protocol-Version header names ${versionHeader ?? "nothing"}`
    )
  }
  const methodHeader = header(req, "mcp-method")
  if (methodHeader !== method) {
    return mismatch(id, methodHeader, `the body names method ${method} but the Mcp-Method header names ${methodHeader ?? "nothing"}`)
  }
  const name = mirroredName(method, params)
  if (name !== undefined) {
    const nameHeader = header(req, "mcp-name")
    if (nameHeader === undefined || decodeHeaderValue(nameHeader) !== String(name)) {
      return mismatch(id, nameHeader, `the body names ${JSON.stringify(name)} but the Mcp-Name header names ${nameHeader === undefined ? "nothing" : JSON.stringify(decodeHeaderValue(nameHeader))}`)
    }
  }
  if (typeof version !== "string" || !MODERN_PROTOCOL_VERSIONS.includes(version)) {
    return refuse(400, id, ModernErrorCode.UnsupportedProtocolVersion, `Unsupported protocol version: ${String(version)}`, {
      supported: MODERN_PROTOCOL_VERSIONS,
      requested: version
    })
  }
  const capabilities = meta[META.clientCapabilities]
  if (!isObject(capabilities)) {
    return refuse(400, id, -32602, `Invalid _meta envelope for protocol revision ${version}: ${META.clientCapabilities}: missing`, {
      envelope: { key: META.clientCapabilities, problem: "missing" }
    })
  }
  if (!MODERN_METHODS.has(method)) return refuse(404, id, -32601, "Method not found")

  const rest: Record<string, unknown> = {}
  for (const key in meta) if (!key.startsWith("io.modelcontextprotocol/")) rest[key] = meta[key]
  const forwarded: Record<string, unknown> = {}
  // `task` is the old revision's way to ask for a task; a modern client negotiates tasks as an
  // extension the gateway does not carry yet, so the call runs as an ordinary one.
  for (const key in params) if (key !== "_meta" && key !== "task") forwarded[key] = params[key]
  if (Object.keys(rest).length > 0) forwarded._meta = rest
  const clientInfo = meta[META.clientInfo]
  return { id, method, version, clientInfo: isObject(clientInfo) ? clientInfo : undefined, capabilities, params: forwarded }
}
