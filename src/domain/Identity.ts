/**
 * Who is calling, once authenticated (or, with no auth configured, the anonymous caller known
 * by address). Scopes: `gateway:read`, `gateway:admin`, `mcp:call`, each optionally narrowed to
 * one template (`mcp:call:filesystem`); `templates` narrows every scope further (an API key's
 * allow-list).
 */
export interface Identity {
  readonly kind: "api_key" | "jwt" | "anonymous"
  /** The key id, the token's subject, or `ip:{address}`: what audit lines and per-client limits use. */
  readonly id: string
  readonly scopes: ReadonlySet<string>
  readonly templates?: ReadonlySet<string> | undefined
}

export type Scope = "gateway:read" | "gateway:admin" | "mcp:call"

/** Whether the identity holds `scope`, for `template` when given. Anonymous callers hold every scope (auth is off). */
export const allows = (identity: Identity, scope: Scope, template?: string): boolean => {
  if (identity.kind === "anonymous") return true
  // Gateway-wide routes (stats, registry) show every template: only an unrestricted identity may see them.
  if (template === undefined) return identity.templates === undefined && identity.scopes.has(scope)
  if (identity.templates !== undefined && !identity.templates.has(template)) return false
  return identity.scopes.has(scope) || identity.scopes.has(`${scope}:${template}`)
}

/** The scope string a caller needs (for `insufficient_scope` answers). */
export const scopeNeeded = (scope: Scope, template?: string) => (template === undefined ? scope : `${scope}:${template}`)

/** Whether the identity holds `scope` for at least one template (or all): where the template is not known yet. */
export const allowsSome = (identity: Identity, scope: Scope): boolean =>
  identity.kind === "anonymous" || identity.scopes.has(scope) ||
  Array.from(identity.scopes).some((s) => s.startsWith(`${scope}:`))

const grants = new WeakMap<Identity, string>()

/**
 * What a credential may do, as one string (its kind, scopes and templates, sorted): two
 * credentials of one owner with the same grant are interchangeable for a session (a refreshed
 * token); a narrower one is not the broader one's session's caller. Kept per identity object
 * (an API key's is one object until the config changes), so the request path computes it once.
 */
export const grantOf = (identity: Identity): string => {
  const known = grants.get(identity)
  if (known !== undefined) return known
  const grant = `${identity.kind}\u0000${Array.from(identity.scopes).sort().join(" ")}\u0000${identity.templates === undefined ? "*" : Array.from(identity.templates).sort().join(" ")}`
  grants.set(identity, grant)
  return grant
}
