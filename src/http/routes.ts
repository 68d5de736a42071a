import type { Scope } from "../domain/Identity.js"
import { type ProtectedEndpoint, templateEndpoint } from "./auth/ProtectedResource.js"

/** The path of an aggregate endpoint by its key (`*`: /mcp; `v/{name}`: /mcp/v/{name}). */
export const aggregatePath = (key: string) => (key === "*" ? "/mcp" : `/mcp/v/${encodeURIComponent(key.slice(2))}`)

/**
 * What the front listener needs to know of a request before serving it: which handler, what
 * it requires (a scope, possibly narrowed to a template; or nothing), and how its errors are
 * written (JSON-RPC on the MCP endpoint, the error envelope elsewhere).
 */
export type Route =
  /** GET /gateway/health: open, for load balancers. */
  | { readonly kind: "health" }
  /** /.well-known/oauth-protected-resource[/mcp/{t}]: open (clients read it before they authenticate). */
  | { readonly kind: "resource_metadata"; readonly endpoint: ProtectedEndpoint | undefined }
  /** /mcp/{t}: the MCP endpoint. */
  | { readonly kind: "mcp_endpoint"; readonly template: string }
  /** /mcp (key `*`) and /mcp/v/{name} (key `v/{name}`): the MCP endpoint of several templates at once. */
  | { readonly kind: "aggregate"; readonly key: string }
  /** /mcp/{t}/{operation}: a REST MCP operation. */
  | { readonly kind: "rest_operation"; readonly template: string; readonly operation: string }
  /** /mcp/{t}/health */
  | { readonly kind: "template_health"; readonly template: string }
  /** /gateway/stats, /gateway/registry, /metrics */
  | { readonly kind: "gateway_read" }
  /** GET /gateway/ui: the status page, a static document (the data it polls needs gateway:read) */
  | { readonly kind: "ui" }
  /** POST /gateway/register (the template is in the body: the handler checks it) */
  | { readonly kind: "register" }
  /** POST /gateway/sync: reads the config file again and runs every discovery provider */
  | { readonly kind: "sync" }
  /** DELETE /gateway/deregister/{t}/{id} */
  | { readonly kind: "deregister"; readonly template: string }
  /** GET /gateway/templates/{t}/tools: the template's pins and pending changes (tool integrity) */
  | { readonly kind: "template_tools"; readonly template: string }
  /** POST /gateway/templates/{t}/tools/approve: re-pins what its instances offer now */
  | { readonly kind: "tools_approve"; readonly template: string }
  /** GET /gateway/tools/lock: every template's pins as the tools lock file */
  | { readonly kind: "tools_lock" }
  /** /docs, /openapi.json, /redoc: any authenticated caller */
  | { readonly kind: "docs" }
  /** Anything else: 404 (for an authenticated caller; 401 otherwise, so routes cannot be probed without a key) */
  | { readonly kind: "other" }
  /** A path the gateway cannot even read (bad URL encoding) */
  | { readonly kind: "malformed"; readonly message: string }

export interface RouteRequirement {
  /** undefined: open; "authenticated": any valid credential; else the scope (narrowed to `template` when set). */
  readonly scope: Scope | "authenticated" | undefined
  readonly template?: string | undefined
  /** The template is not known yet (it is in the body): the scope for any template will do here, the handler checks the one named. */
  readonly anyTemplate?: boolean | undefined
  /** Answer errors as JSON-RPC (MCP clients parse JSON-RPC there). */
  readonly jsonRpc: boolean
  /** POSTs must be `application/json` (anything a browser can send without asking first is refused). */
  readonly jsonBody: boolean
  /** Counts against the template's rate limit (an MCP operation). */
  readonly templateLimited: boolean
  /** The MCP endpoint whose protected resource metadata a 401 points at. */
  readonly endpoint?: ProtectedEndpoint | undefined
  /** Not counted against any rate limit (health: a load balancer's probe must never wait on the fleet's Redis, nor be refused). */
  readonly unlimited?: boolean | undefined
}

export const requirementOf = (route: Route): RouteRequirement => {
  const base = { jsonRpc: false, jsonBody: true, templateLimited: false }
  switch (route.kind) {
    case "health":
      return { ...base, scope: undefined, unlimited: true }
    case "resource_metadata":
    case "ui":
      return { ...base, scope: undefined }
    case "mcp_endpoint":
      return { scope: "mcp:call", template: route.template, jsonRpc: true, jsonBody: true, templateLimited: true, endpoint: templateEndpoint(route.template) }
    case "aggregate":
      // Any template will do at the door; the session serves only the templates the caller may call.
      return { scope: "mcp:call", anyTemplate: true, jsonRpc: true, jsonBody: true, templateLimited: false, endpoint: { path: aggregatePath(route.key) } }
    case "rest_operation":
      // Written out, not spread from base: this and mcp_endpoint are on every proxied request.
      return { scope: "mcp:call", template: route.template, jsonRpc: false, jsonBody: true, templateLimited: true }
    case "template_health":
      return { ...base, scope: "gateway:read", template: route.template }
    case "gateway_read":
      return { ...base, scope: "gateway:read" }
    case "register":
      return { ...base, scope: "gateway:admin", anyTemplate: true }
    case "sync":
      return { ...base, scope: "gateway:admin" }
    case "deregister":
    case "template_tools":
    case "tools_approve":
      return { ...base, scope: "gateway:admin", template: route.template }
    case "tools_lock":
      return { ...base, scope: "gateway:admin" }
    case "docs":
    case "other":
    case "malformed":
      return { ...base, scope: "authenticated" }
  }
}

/**
 * The methods a route of the HttpApi app or a static page takes (HEAD too wherever GET is), for
 * the 405 and its `Allow` header; undefined where its handler decides (the MCP endpoint and the
 * REST operations) or nothing is served.
 */
export const methodsOf = (route: Route): string | undefined => {
  switch (route.kind) {
    case "health":
    case "resource_metadata":
    case "template_health":
    case "gateway_read":
    case "ui":
    case "docs":
    case "template_tools":
    case "tools_lock":
      return "GET"
    case "register":
    case "sync":
    case "tools_approve":
      return "POST"
    case "deregister":
      return "DELETE"
    default:
      return undefined
  }
}

const decode = (segment: string): string | undefined => {
  try {
    return decodeURIComponent(segment)
  } catch {
    return undefined
  }
}

/**
 * A path in the one spelling the gateway serves: absolute, no empty segment (`//`), no trailing
 * slash, no `;` parameters or fragment. Any other spelling is refused before routing, so no
 * router behind the guard can read a path differently from the guard (find-my-way folds case,
 * merges slashes and drops trailing ones).
 */
const CANONICAL = /^(\/[^/;#]+)+$/

/** First segments of template operations: never virtual server names (the config refuses them too). */
const VIRTUAL_RESERVED = new Set(["tools", "resources", "prompts", "health"])

/** Classifies a request by method and path (the query already cut off). */
export const classifyRoute = (method: string | undefined, path: string): Route => {
  if (!CANONICAL.test(path)) return { kind: "other" }
  if (path === "/gateway/health") return { kind: "health" }
  if (path === "/gateway/stats" || path === "/gateway/registry" || path === "/metrics") return { kind: "gateway_read" }
  if (path === "/gateway/ui") return { kind: "ui" }
  if (path === "/gateway/register") return { kind: "register" }
  if (path === "/gateway/sync") return { kind: "sync" }
  if (path.startsWith("/gateway/deregister/")) {
    const segments = path.slice("/gateway/deregister/".length).split("/")
    if (segments.length !== 2) return { kind: "other" }
    const template = decode(segments[0]!)
    return template === undefined ? { kind: "malformed", message: "the template name in the path is not valid URL encoding" } : { kind: "deregister", template }
  }
  if (path === "/gateway/tools/lock") return { kind: "tools_lock" }
  if (path.startsWith("/gateway/templates/")) {
    const segments = path.slice("/gateway/templates/".length).split("/")
    const kind = segments.length === 2 && segments[1] === "tools"
      ? "template_tools" as const
      : segments.length === 3 && segments[1] === "tools" && segments[2] === "approve"
      ? "tools_approve" as const
      : undefined
    if (kind === undefined) return { kind: "other" }
    const template = decode(segments[0]!)
    return template === undefined ? { kind: "malformed", message: "the template name in the path is not valid URL encoding" } : { kind, template }
  }
  if (path === "/.well-known/oauth-protected-resource") return { kind: "resource_metadata", endpoint: undefined }
  if (path.startsWith("/.well-known/oauth-protected-resource/mcp")) {
    // The document of an MCP endpoint: whatever a classification of the endpoint's own path says it is.
    const endpoint = classifyRoute("GET", path.slice("/.well-known/oauth-protected-resource".length))
    if (endpoint.kind === "mcp_endpoint") return { kind: "resource_metadata", endpoint: templateEndpoint(endpoint.template) }
    if (endpoint.kind === "aggregate") return { kind: "resource_metadata", endpoint: { path: aggregatePath(endpoint.key) } }
    return { kind: "other" }
  }
  if (path === "/mcp") return { kind: "aggregate", key: "*" }
  if (path.startsWith("/mcp/v/")) {
    const name = decode(path.slice("/mcp/v/".length))
    // (/mcp/v/tools/list and the like are template "v"'s operations.)
    if (name !== undefined && !name.includes("/") && !VIRTUAL_RESERVED.has(name)) return { kind: "aggregate", key: `v/${name}` }
  }
  if (path.startsWith("/mcp/")) {
    const slash = path.indexOf("/", 5)
    const template = decode(path.slice(5, slash === -1 ? undefined : slash))
    if (template === undefined) return { kind: "malformed", message: "the template name in the path is not valid URL encoding" }
    if (slash === -1 || slash === path.length - 1) return { kind: "mcp_endpoint", template }
    const operation = path.slice(slash + 1)
    return operation === "health" && method !== "POST" ? { kind: "template_health", template } : { kind: "rest_operation", template, operation }
  }
  if (path === "/docs" || path === "/openapi.json" || path === "/redoc" || path === "/redoc/redoc.standalone.js") return { kind: "docs" }
  return { kind: "other" }
}
