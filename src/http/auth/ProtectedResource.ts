import type { AuthSettings } from "../../config/AuthConfig.js"

/**
 * The MCP endpoint as an OAuth 2.1 resource server (the MCP authorization spec, RFC 9728): a
 * 401 names where the protected resource metadata is, and the metadata names the authorization
 * servers that issue tokens for it and the scopes it knows.
 */

/** The gateway's URL as clients reach it: configured, or from the (validated) Host of the request. */
export const baseUrlOf = (settings: AuthSettings, host: string | undefined) =>
  settings.resourceBaseUrl ?? `http://${host ?? "localhost"}`

/**
 * Which MCP endpoint a document describes: a template's (`/mcp/{template}`), an aggregate's
 * (`/mcp`, `/mcp/v/{name}`), or none (the gateway as a whole).
 */
export interface ProtectedEndpoint {
  /** The endpoint's path, as clients use it. */
  readonly path: string
  /** Its template, when it is one template's. */
  readonly template?: string | undefined
}

/** `/.well-known/oauth-protected-resource{path}`, or the gateway's own document without an endpoint. */
export const resourceMetadataUrl = (settings: AuthSettings, host: string | undefined, endpoint: ProtectedEndpoint | undefined) =>
  `${baseUrlOf(settings, host)}/.well-known/oauth-protected-resource${endpoint?.path ?? ""}`

/** The RFC 9728 document for an MCP endpoint (or for the gateway as a whole). */
export const resourceMetadata = (settings: AuthSettings, host: string | undefined, endpoint: ProtectedEndpoint | undefined) => {
  const base = baseUrlOf(settings, host)
  return {
    resource: endpoint === undefined ? base : `${base}${endpoint.path}`,
    authorization_servers: settings.authorizationServers,
    scopes_supported: endpoint === undefined
      ? ["mcp:call", "gateway:read", "gateway:admin"]
      : endpoint.template === undefined
      ? ["mcp:call"]
      : ["mcp:call", `mcp:call:${endpoint.template}`],
    bearer_methods_supported: ["header"],
    resource_name: endpoint === undefined ? "mcp-gateway" : `mcp-gateway: ${endpoint.template ?? endpoint.path}`
  }
}

/** The endpoint of a template. */
export const templateEndpoint = (template: string): ProtectedEndpoint => ({ path: `/mcp/${encodeURIComponent(template)}`, template })
