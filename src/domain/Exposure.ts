import { Schema } from "effect"

/**
 * What a template (or a virtual server) shows its clients, as the config says it: which tools,
 * prompts and resources (allow and deny lists of names, URIs or globs), the transform plugins
 * its requests and results go through, how long its lists may be cached, and the prefix of its
 * names where several templates are served together.
 */

/** `*` any run of characters (none included), `?` one character; anything else is itself. */
export const Glob = Schema.String.pipe(Schema.minLength(1))

export const NameFilterInput = Schema.Struct({
  /** Only these (names, URIs or globs); absent or empty: everything. */
  allow: Schema.optional(Schema.Array(Glob)),
  /** Never these, even if allowed. */
  deny: Schema.optional(Schema.Array(Glob))
})
export type NameFilterInput = typeof NameFilterInput.Type

export const TransformSpec = Schema.Struct({
  /** A built-in (`inject_arguments`, `redact`, `rename_tool`) or a plugin by path. */
  transform: Schema.String,
  options: Schema.optional(Schema.Unknown)
})
export type TransformSpec = typeof TransformSpec.Type

export const CacheInput = Schema.Struct({
  /**
   * How long list results and `resources/read` of a server that gives no caching hints of its
   * own (servers before 2026-07-28) may be served from the cache; 0 (the default): not cached.
   * A 2026-07-28 server's own `ttlMs`/`cacheScope` are honoured whatever this says.
   */
  ttl_seconds: Schema.optional(Schema.Number.pipe(Schema.filter((n) => (Number.isFinite(n) && n >= 0) || `expected a number of seconds, got ${n}`))),
  /** `private` (default): one cache per caller; `public`: shared by every caller of the template. */
  scope: Schema.optional(Schema.Literal("private", "public"))
})
export type CacheInput = typeof CacheInput.Type

/** The exposure fields of a template in the config (and of a virtual server, less `prefix` and `cache`). */
export const ExposureFields = {
  tools: Schema.optional(NameFilterInput),
  prompts: Schema.optional(NameFilterInput),
  resources: Schema.optional(NameFilterInput),
  transforms: Schema.optional(Schema.Array(TransformSpec))
}

export interface ExposureInput {
  readonly tools?: NameFilterInput | undefined
  readonly prompts?: NameFilterInput | undefined
  readonly resources?: NameFilterInput | undefined
  readonly transforms?: ReadonlyArray<TransformSpec> | undefined
  readonly cache?: CacheInput | undefined
  /** Where several templates are served together (`/mcp`): `{prefix}{separator}{name}`; "" for none. */
  readonly prefix?: string | undefined
}

/** Whether an exposure asks for anything at all (the request path skips it entirely when not). */
export const exposesAnything = (exposure: ExposureInput | undefined): boolean =>
  exposure !== undefined &&
  (exposure.tools !== undefined || exposure.prompts !== undefined || exposure.resources !== undefined ||
    (exposure.transforms?.length ?? 0) > 0 || (exposure.cache?.ttl_seconds ?? 0) > 0)

/** A compiled allow/deny list. */
export interface NameFilter {
  readonly allows: (name: string) => boolean
}

const globToRegExp = (glob: string): RegExp =>
  new RegExp(`^${glob.split("").map((c) => c === "*" ? ".*" : c === "?" ? "." : c.replace(/[.+^${}()|[\]\\/]/g, "\\$&")).join("")}$`, "s")

/** A glob (`*`, `?`) as a test of names: for transforms that apply to some tools. */
export const globMatcher = (globs: ReadonlyArray<string> | undefined): (name: string) => boolean => {
  if (globs === undefined || globs.length === 0) return () => true
  const patterns = globs.map(globToRegExp)
  return (name) => patterns.some((r) => r.test(name))
}

export const compileFilter = (input: NameFilterInput | undefined): NameFilter | undefined => {
  if (input === undefined) return undefined
  const allow = (input.allow ?? []).map(globToRegExp)
  const deny = (input.deny ?? []).map(globToRegExp)
  if (allow.length === 0 && deny.length === 0) return undefined
  return {
    allows: (name) => (allow.length === 0 || allow.some((r) => r.test(name))) && !deny.some((r) => r.test(name))
  }
}
