/** MCP protocol revisions the gateway speaks, newest first. */
export const LATEST_PROTOCOL_VERSION = "2025-11-25"
export const SUPPORTED_PROTOCOL_VERSIONS: ReadonlyArray<string> = [
  "2025-11-25",
  "2025-06-18",
  "2025-03-26",
  "2024-11-05"
]

export const GATEWAY_NAME = "mcp-gateway"
export const GATEWAY_VERSION = "0.1.0"

/** What the gateway says of itself when it initializes a session with a backend. */
export const initializeParams = () => ({
  protocolVersion: LATEST_PROTOCOL_VERSION,
  // The REST face cannot relay sampling, roots or elicitation, so it offers none of them.
  capabilities: {},
  clientInfo: { name: GATEWAY_NAME, version: GATEWAY_VERSION }
})

/**
 * The modern generation (MCP 2026-07-28: no sessions, `server/discover`, the per-request
 * `_meta` envelope) the gateway serves to clients on the same endpoint.
 */
export const MODERN_PROTOCOL_VERSIONS: ReadonlyArray<string> = ["2026-07-28"]
