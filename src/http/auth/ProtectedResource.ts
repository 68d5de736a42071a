import type { AuthSettings } from "../../config/AuthConfig.js"

/**
 * The MCP endpoint as an OAuth 2.1 resource server (the MCP authorization spec, RFC 9728): a
 * 401 names where the protected resource metadata is, and the metadata names the authorization
 * servers that issue tokens for it and the scopes it knows.
 */

/** The gateway's URL as clients reach it: configured, or from the (validated) Host of the request. */
export const baseUrlOf = (settings: AuthSettings, host: string | undefined) =>
  settings.resourceBaseUrl ?? `http://${host ?? "localhost"}`

/** `/.well-known/oauth-protected-resource/mcp/{template}`, or the gateway's own document without a template. */
export const resourceMetadataUrl = (settings: AuthSettings, host: string | undefined, template: string | undefined) =>
  `${baseUrlOf(settings, host)}/.well-known/oauth-protected-resource${template === undefined ? "" : `/mcp/${encodeURIComponent(template)}`}`

/** The RFC 9728 document for a template's MCP endpoint (or for the gateway as a whole). */
export const resourceMetadata = (settings: AuthSettings, host: string | undefined, template: string | undefined) => {
  const base = baseUrlOf(settings, host)
  return {
    resource: template === undefined ? base : `${base}/mcp/${encodeURIComponent(template)}`,
    authorization_servers: settings.authorizationServers,
    scopes_supported: template === undefined
      ? ["mcp:call", "gateway:read", "gateway:admin"]
      : ["mcp:call", `mcp:call:${template}`],
    bearer_methods_supported: ["header"],
    resource_name: template === undefined ? "mcp-gateway" : `mcp-gateway: ${template}`
  }
}
