import { Effect, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { resolveSecret, SecretInput } from "../domain/Secret.js"

const ScopeList = Schema.Array(
  Schema.String.pipe(
    Schema.pattern(/^(gateway:read|gateway:admin|mcp:call)(:[A-Za-z0-9][A-Za-z0-9._-]*)?$/, {
      message: () => "expected gateway:read, gateway:admin or mcp:call, optionally narrowed to a template (mcp:call:filesystem)"
    })
  )
)

/** An API key as the config holds it: its hash only (`mcp-gateway hash-key` prints one). */
const ApiKeyInput = Schema.Struct({
  id: Schema.String.pipe(Schema.minLength(1)),
  hash: Schema.String.pipe(
    Schema.pattern(/^sha256:[0-9a-f]{64}$/, { message: () => "expected sha256:<64 hex digits>, as `mcp-gateway hash-key` prints it" })
  ),
  scopes: ScopeList,
  /** The templates the key may reach at all (every scope is narrowed to them). */
  templates: Schema.optional(Schema.Array(Schema.String))
})

const JwtInput = Schema.Struct({
  issuer: Schema.optional(Schema.String),
  audience: Schema.optional(Schema.Union(Schema.String, Schema.Array(Schema.String))),
  /** HS256/384/512: the shared secret. */
  secret: Schema.optional(SecretInput),
  /** RSA, EC and EdDSA algorithms: the issuer's keys, as a JWKS file (relative to the config) or URL (fetched, cached, refreshed). */
  jwks_file: Schema.optional(Schema.String),
  jwks_url: Schema.optional(Schema.String.pipe(Schema.pattern(/^https?:\/\//, { message: () => "expected an http(s) URL" }))),
  algorithms: Schema.optional(Schema.Array(Schema.String)),
  /** The claim with the token's scopes: a space-separated string (OAuth's `scope`) or an array. */
  scopes_claim: Schema.optional(Schema.String),
  /** Seconds of clock difference tolerated for `exp` and `nbf`. */
  clock_tolerance: Schema.optional(Schema.Number.pipe(Schema.nonNegative())),
  /** Seconds: a token that expires later than this from now is refused (a token that never expires is one). */
  max_token_lifetime: Schema.optional(Schema.Number.pipe(Schema.positive()))
})

/** `"auth"` in the config file. */
export const AuthInput = Schema.Struct({
  api_keys: Schema.optional(Schema.Array(ApiKeyInput)),
  jwt: Schema.optional(JwtInput),
  /** Named in the OAuth protected resource metadata (RFC 9728) that MCP clients read. */
  authorization_servers: Schema.optional(Schema.Array(Schema.String)),
  /** The gateway's URL as clients reach it (https://gateway.example.com); by default, the request's Host. */
  resource_base_url: Schema.optional(Schema.String)
})
export type AuthInput = typeof AuthInput.Type

export interface ApiKey {
  readonly id: string
  /** The SHA-256 digest of the key. */
  readonly digest: Buffer
  readonly scopes: ReadonlySet<string>
  readonly templates: ReadonlySet<string> | undefined
}

export type JwtKey =
  | { readonly kind: "secret"; readonly secret: Uint8Array }
  | { readonly kind: "jwks"; readonly jwks: { readonly keys: ReadonlyArray<Record<string, unknown>> } }
  | { readonly kind: "jwks_url"; readonly url: URL }

export interface JwtSettings {
  readonly key: JwtKey
  readonly issuer: string | undefined
  readonly audience: string | ReadonlyArray<string> | undefined
  readonly algorithms: ReadonlyArray<string> | undefined
  readonly scopesClaim: string
  readonly clockToleranceSeconds: number
  /** A token whose `exp` is further than this from now is refused (see DEFAULT_MAX_TOKEN_LIFETIME_SECONDS). */
  readonly maxTokenLifetimeSeconds: number
}

/** A day: longer-lived tokens are refused unless the operator says otherwise (`auth.jwt.max_token_lifetime`). */
export const DEFAULT_MAX_TOKEN_LIFETIME_SECONDS = 86_400

/**
 * The owners a token's subject and the anonymous caller's address are known by (`jwt:{sub}`,
 * `ip:{address}`): an API key's id may not start so, or a key could stand for a token's
 * subject (and share its sessions and rate buckets).
 */
export const RESERVED_OWNER_PREFIXES = ["jwt:", "ip:"] as const

export interface AuthSettings {
  readonly apiKeys: ReadonlyArray<ApiKey>
  readonly jwt: JwtSettings | undefined
  readonly authorizationServers: ReadonlyArray<string>
  readonly resourceBaseUrl: string | undefined
}

/** Decodes `auth` into settings: secrets read, the JWKS file loaded; every problem named by its path. */
export const resolveAuth = (
  input: AuthInput,
  baseDir: string,
  problems: Array<string>
): Effect.Effect<AuthSettings | undefined> =>
  Effect.gen(function*() {
    const apiKeys: Array<ApiKey> = []
    const ids = new Set<string>()
    ;(input.api_keys ?? []).forEach((key, i) => {
      if (ids.has(key.id)) problems.push(`auth.api_keys[${i}].id: duplicate key id ${JSON.stringify(key.id)}`)
      const reserved = RESERVED_OWNER_PREFIXES.find((prefix) => key.id.toLowerCase().startsWith(prefix))
      if (reserved !== undefined) {
        problems.push(`auth.api_keys[${i}].id: ${JSON.stringify(key.id)} starts with "${reserved}", which names token subjects and addresses; choose another id`)
      }
      ids.add(key.id)
      apiKeys.push({
        id: key.id,
        digest: Buffer.from(key.hash.slice("sha256:".length), "hex"),
        scopes: new Set(key.scopes),
        templates: key.templates === undefined ? undefined : new Set(key.templates)
      })
    })
    let jwt: JwtSettings | undefined
    if (input.jwt !== undefined) {
      const j = input.jwt
      const given = [j.secret, j.jwks_file, j.jwks_url].filter((x) => x !== undefined).length
      let key: JwtKey | undefined
      if (given !== 1) {
        problems.push("auth.jwt: expected exactly one of secret, jwks_file or jwks_url")
      } else if (j.secret !== undefined) {
        const secret = resolveSecret(j.secret)
        if (typeof secret === "string") key = { kind: "secret", secret: new TextEncoder().encode(secret) }
        else problems.push(`auth.jwt.secret: ${secret.missing}`)
      } else if (j.jwks_file !== undefined) {
        const file = path.resolve(baseDir, j.jwks_file)
        const text = yield* Effect.promise(() => fs.readFile(file, "utf8").catch((e: Error) => e))
        let parsed: unknown
        try {
          parsed = typeof text === "string" ? JSON.parse(text) : undefined
        } catch {
          parsed = undefined
        }
        if (typeof text !== "string") problems.push(`auth.jwt.jwks_file: cannot read ${file}: ${text.message}`)
        else if (typeof parsed !== "object" || parsed === null || !Array.isArray((parsed as any).keys)) {
          problems.push(`auth.jwt.jwks_file: ${file} is not a JWKS (expected {"keys": [...]})`)
        } else key = { kind: "jwks", jwks: parsed as { keys: Array<Record<string, unknown>> } }
      } else {
        key = { kind: "jwks_url", url: new URL(j.jwks_url!) }
      }
      if (key !== undefined) {
        jwt = {
          key,
          issuer: j.issuer,
          audience: j.audience,
          algorithms: j.algorithms,
          scopesClaim: j.scopes_claim ?? "scope",
          clockToleranceSeconds: j.clock_tolerance ?? 30,
          maxTokenLifetimeSeconds: j.max_token_lifetime ?? DEFAULT_MAX_TOKEN_LIFETIME_SECONDS
        }
      }
      if (j.issuer === undefined) problems.push("auth.jwt.issuer: expected the issuer tokens must name (iss)")
      if (j.audience === undefined) problems.push("auth.jwt.audience: expected the audience tokens must name (aud), e.g. this gateway's URL")
    }
    if (apiKeys.length === 0 && jwt === undefined) return undefined
    return {
      apiKeys,
      jwt,
      authorizationServers: input.authorization_servers ?? [],
      resourceBaseUrl: input.resource_base_url?.replace(/\/+$/, "")
    }
  })
