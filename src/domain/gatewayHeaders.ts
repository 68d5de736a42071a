/**
 * Request headers the gateway writes itself on its way to a backend: the framing (Host,
 * Content-Length, Transfer-Encoding), the hop-by-hop ones (Connection, Keep-Alive, TE, Trailer,
 * Upgrade, Proxy-Authorization), and the MCP transport's own (Content-Type, Accept, the session
 * and version headers, the 2026-07-28 routing headers). Given by anyone else, an instance's
 * `headers` or a client's forwarded ones, they would go out twice or contradict the gateway's
 * (a request with both framings is a request smuggling vector): refused in both places.
 */
const GATEWAY_HEADERS: ReadonlySet<string> = new Set([
  "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization",
  "content-type", "accept", "mcp-session-id", "mcp-protocol-version", "last-event-id", "mcp-method", "mcp-name"
])

/** Whether the gateway writes this header itself (any case); `Mcp-Param-*` mirror tool arguments, derived from the body. */
export const isGatewayHeader = (name: string): boolean => {
  const lower = name.toLowerCase()
  return GATEWAY_HEADERS.has(lower) || lower.startsWith("mcp-param-")
}

/** The names, for messages. */
export const gatewayHeaderNames = (): ReadonlyArray<string> => [...GATEWAY_HEADERS, "mcp-param-*"]
