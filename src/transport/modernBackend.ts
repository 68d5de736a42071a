import { isObject, type JsonRpcResponse } from "../domain/JsonRpc.js"
import { encodeHeaderValue, META, mirroredArgument, mirroredName, type ToolHeaders } from "../domain/ModernProtocol.js"
import { MODERN_PROTOCOL_VERSIONS } from "../domain/Protocol.js"

/**
 * What the HTTP transport needs to speak the 2026-07-28 revision to a backend ("modern"):
 * classify the answer to a `server/discover` probe, build the per-request envelope and the
 * routing headers, and show the server's discover answer in the shape of an `initialize`
 * result, which is what the rest of the gateway reads (capabilities, serverInfo, instructions).
 * Pure functions; the connection that uses them is http.ts.
 */

/** How a backend answered the gateway's `server/discover` probe. */
export type ProbeOutcome =
  | { readonly _tag: "Modern"; readonly version: string; readonly discover: Record<string, unknown> }
  | { readonly _tag: "Legacy"; readonly why: string }

/**
 * A DiscoverResult naming a version the gateway speaks makes the backend modern; anything
 * else (-32601, a session error, an "unsupported version" from an old server) makes it old,
 * as the SDK's own clients decide.
 */
export const classifyProbe = (response: JsonRpcResponse): ProbeOutcome => {
  if ("error" in response) return { _tag: "Legacy", why: `server/discover answered ${response.error.code} ${response.error.message}` }
  const result = response.result
  if (!isObject(result) || !Array.isArray(result.supportedVersions)) return { _tag: "Legacy", why: "server/discover answered no supportedVersions" }
  if (result.capabilities !== undefined && !isObject(result.capabilities)) {
    return { _tag: "Legacy", why: "server/discover answered capabilities that are not an object" }
  }
  const version = MODERN_PROTOCOL_VERSIONS.find((v) => (result.supportedVersions as Array<unknown>).includes(v))
  if (version === undefined) return { _tag: "Legacy", why: `server/discover offers only ${JSON.stringify(result.supportedVersions)}` }
  return { _tag: "Modern", version, discover: result }
}

/** An `initialize` refused by a modern-only server (400 / -32022 naming a modern version): probe it instead. */
export const refusedAsModernOnly = (response: JsonRpcResponse): boolean =>
  "error" in response && response.error.code === -32022 && isObject(response.error.data) &&
  Array.isArray(response.error.data.supported) && MODERN_PROTOCOL_VERSIONS.some((v) => (response.error.data as { supported: Array<unknown> }).supported.includes(v))

/** The discover answer as the gateway's other parts read a server's `initialize` result. */
export const initializeResultOf = (version: string, discover: Record<string, unknown>, fallbackName: string): Record<string, unknown> => {
  const meta = isObject(discover._meta) ? discover._meta : {}
  const serverInfo = isObject(meta[META.serverInfo]) ? meta[META.serverInfo] : { name: fallbackName, version: "unknown" }
  return {
    protocolVersion: version,
    capabilities: isObject(discover.capabilities) ? discover.capabilities : {},
    serverInfo,
    ...(typeof discover.instructions === "string" ? { instructions: discover.instructions } : {})
  }
}

/** The `_meta` envelope every modern request carries: the version and the client the gateway speaks for. */
export const envelopeOf = (version: string, initializeParams: Record<string, unknown>): Record<string, unknown> => ({
  [META.protocolVersion]: version,
  [META.clientInfo]: isObject(initializeParams.clientInfo) ? initializeParams.clientInfo : { name: "mcp-gateway", version: "0" },
  [META.clientCapabilities]: isObject(initializeParams.capabilities) ? initializeParams.capabilities : {}
})

/** A request's params with the envelope in `_meta` (its other `_meta` keys, a progress token or a trace, kept). */
export const withEnvelope = (
  params: Record<string, unknown> | undefined,
  envelope: Record<string, unknown>,
  logLevel: string | undefined
): Record<string, unknown> => {
  const meta: Record<string, unknown> = {}
  const own = params?._meta
  if (isObject(own)) for (const key in own) meta[key] = own[key]
  for (const key in envelope) meta[key] = envelope[key]
  if (logLevel !== undefined) meta[META.logLevel] = logLevel
  const out: Record<string, unknown> = {}
  if (params !== undefined) for (const key in params) if (key !== "_meta") out[key] = params[key]
  out._meta = meta
  return out
}

/**
 * The headers a modern request mirrors from its body: `Mcp-Method`, `Mcp-Name`, and for a tool
 * call the `Mcp-Param-*` of its declared arguments (strings as they are or base64-wrapped,
 * numbers in decimal, booleans as true/false; an absent argument sends no header).
 */
export const routingHeaders = (
  method: string,
  params: Record<string, unknown> | undefined,
  toolHeaders: ToolHeaders
): Record<string, string> => {
  const headers: Record<string, string> = { "mcp-method": method }
  if (params === undefined) return headers
  const name = mirroredName(method, params)
  if (name !== undefined) headers["mcp-name"] = encodeHeaderValue(String(name))
  if (method === "tools/call" && typeof params.name === "string") {
    for (const { header, path } of toolHeaders.get(params.name) ?? []) {
      const value = mirroredArgument(params.arguments, path)
      if (value !== undefined) headers[`mcp-param-${header.toLowerCase()}`] = encodeHeaderValue(value)
    }
  }
  return headers
}

/** What a modern backend is asked to listen for: every list it says changes, and the resources subscribed through it. */
export const listenFilterOf = (capabilities: unknown, resources: ReadonlySet<string>): Record<string, unknown> => {
  const offers = (name: string) => isObject(capabilities) && isObject(capabilities[name]) && (capabilities[name] as Record<string, unknown>).listChanged === true
  return {
    ...(offers("tools") ? { toolsListChanged: true } : {}),
    ...(offers("prompts") ? { promptsListChanged: true } : {}),
    ...(offers("resources") ? { resourcesListChanged: true } : {}),
    ...(resources.size > 0 ? { resourceSubscriptions: Array.from(resources) } : {})
  }
}

/** A listen stream's message without the subscription tag the backend put on it (the gateway's client never asked for that stream). */
export const untagged = (params: unknown): Record<string, unknown> | undefined => {
  if (!isObject(params)) return undefined
  if (!isObject(params._meta) || !(META.subscriptionId in params._meta)) return params
  const { [META.subscriptionId]: _id, ...meta } = params._meta
  const { _meta: _old, ...rest } = params
  return Object.keys(meta).length > 0 ? { ...rest, _meta: meta } : rest
}

/**
 * A modern server's answer as an old-generation caller expects it (an old client, the REST
 * face): without the revision's own fields (`resultType: "complete"`, the caching hints, the
 * server's info in `_meta`), which an old server never sends. An `input_required` result keeps
 * its shape: a caller that cannot answer it sees what it is.
 */
export const asLegacyResponse = (response: JsonRpcResponse): JsonRpcResponse => {
  if (!("result" in response) || !isObject(response.result)) return response
  const result = response.result
  if (result.resultType !== undefined && result.resultType !== "complete") return response
  const out: Record<string, unknown> = {}
  for (const key in result) {
    if (key === "resultType" || key === "ttlMs" || key === "cacheScope") continue
    if (key === "_meta" && isObject(result._meta)) {
      const meta: Record<string, unknown> = {}
      for (const k in result._meta) if (k !== META.serverInfo) meta[k] = result._meta[k]
      if (Object.keys(meta).length > 0) out._meta = meta
      continue
    }
    out[key] = result[key]
  }
  return { ...response, result: out }
}
