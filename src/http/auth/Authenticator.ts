import { Context, Data, Effect, Exit, Layer, Option } from "effect"
import * as jose from "jose"
import type { AuthSettings, JwtSettings } from "../../config/AuthConfig.js"
import { GatewayConfig } from "../../config/GatewayConfig.js"
import { LiveAuth } from "../../config/LiveAuth.js"
import { findKey } from "../../domain/apiKey.js"
import type { Identity } from "../../domain/Identity.js"
import { Timer } from "../../clock/Timer.js"

/** Why a request was not authenticated (a 401); `claimed` is who the credential said it was, for the audit log. */
export class AuthenticationFailed extends Data.TaggedError("AuthenticationFailed")<{
  readonly reason: string
  /** A credential was given but is not valid (WWW-Authenticate then says `error="invalid_token"`). */
  readonly invalidToken: boolean
  readonly claimed?: string | undefined
}> {}

/** The credentials a request carries, as the HTTP layer found them. */
export interface Credentials {
  /** `Authorization: Bearer <token>` */
  readonly bearer: string | undefined
  /** `X-API-Key: <key>` */
  readonly apiKey: string | undefined
  /** The client's address: the identity of anonymous callers. */
  readonly address: string
}

export interface AuthenticatorShape {
  /** False when no auth is configured: every caller is anonymous, known by its address. */
  readonly enabled: boolean
  readonly settings: AuthSettings | undefined
  readonly authenticate: (credentials: Credentials) => Effect.Effect<Identity, AuthenticationFailed>
  /**
   * The verdict when it needs no waiting (no credential, an API key), else undefined (a JWT,
   * whose keys may have to be fetched): the front gate's hot path runs no fiber for an API key.
   */
  readonly authenticateNow: (credentials: Credentials) => Exit.Exit<Identity, AuthenticationFailed> | undefined
}

/** How many matched API keys authenticateNow remembers. */
const KNOWN_KEYS = 1024

const looksLikeJwt = (token: string) => /^[\w-]+\.[\w-]+\.[\w-]*$/.test(token)

const scopesOf = (claim: unknown): ReadonlySet<string> =>
  new Set(typeof claim === "string" ? claim.split(/\s+/).filter((s) => s !== "") : Array.isArray(claim) ? claim.map(String) : [])

/**
 * Authentication: API keys (`Authorization: Bearer <key>` or `X-API-Key`), compared by hash in
 * constant time; JWT bearer tokens checked with `jose` for signature, expiry, not-before, issuer
 * and audience, time from the Clock (through the Timer), a JWKS URL cached and refreshed by
 * `jose`. Scopes come from the key's entry or the token's scopes claim.
 */
export class Authenticator extends Context.Tag("mcp-gateway/Authenticator")<Authenticator, AuthenticatorShape>() {
  static readonly layer: Layer.Layer<Authenticator, never, GatewayConfig | Timer> = Layer.effect(
    Authenticator,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const timer = yield* Timer
      const settings = config.gateway.auth
      if (settings === undefined) {
        return {
          enabled: false,
          settings,
          authenticate: (c) => Effect.succeed({ kind: "anonymous", id: `ip:${c.address}`, scopes: new Set() }),
          authenticateNow: (c) => Exit.succeed({ kind: "anonymous", id: `ip:${c.address}`, scopes: new Set() })
        }
      }
      // The settings as the config stands now (a reload replaces them: LiveAuth); without the
      // service (tools, tests), the config's.
      const live = Option.getOrElse(yield* Effect.serviceOption(LiveAuth), () => LiveAuth.make(settings))
      let current = settings
      let verifyJwt = current.jwt === undefined ? undefined : makeJwtVerifier(current.jwt, timer.now)

      /**
       * Keys recently presented and found, and the identity each stands for: a client sends its
       * key on every request, and hashing it each time was a tenth of what auth and rate limits
       * cost a request. Only keys that matched are kept (an unknown one is hashed and compared in
       * constant time, always), at most KNOWN_KEYS of them. A reload that changes `auth` empties
       * it: every request is authorized against the config as it stands now (one reference
       * compared per request).
       */
      const known = new Map<string, Exit.Exit<Identity, AuthenticationFailed>>()
      const refresh = () => {
        const now = live.current()
        if (now === current || now === undefined) return
        current = now
        known.clear()
        verifyJwt = current.jwt === undefined ? undefined : makeJwtVerifier(current.jwt, timer.now)
      }
      const authenticateNow = (c: Credentials): Exit.Exit<Identity, AuthenticationFailed> | undefined => {
        refresh()
        const token = c.bearer ?? c.apiKey
        if (token === undefined || token === "") {
          return Exit.fail(new AuthenticationFailed({ reason: "no credential (Authorization: Bearer, or X-API-Key)", invalidToken: false }))
        }
        if (c.bearer !== undefined && looksLikeJwt(c.bearer) && verifyJwt !== undefined) return undefined
        const seen = known.get(token)
        if (seen !== undefined) return seen
        const key = findKey(current.apiKeys, token)
        if (key === undefined) return Exit.fail(new AuthenticationFailed({ reason: "unknown API key or token", invalidToken: true }))
        const identity: Exit.Exit<Identity, AuthenticationFailed> = Exit.succeed({ kind: "api_key", id: key.id, scopes: key.scopes, templates: key.templates })
        if (known.size >= KNOWN_KEYS) known.clear()
        known.set(token, identity)
        return identity
      }
      const authenticate = (c: Credentials): Effect.Effect<Identity, AuthenticationFailed> =>
        Effect.suspend(() => authenticateNow(c) ?? verifyJwt!(c.bearer!))
      return {
        enabled: true,
        get settings() {
          return current
        },
        authenticate,
        authenticateNow
      }
    })
  )
}

const makeJwtVerifier = (jwt: JwtSettings, now: () => number) => {
  const key: jose.JWTVerifyGetKey | Uint8Array = jwt.key.kind === "secret"
    ? jwt.key.secret
    : jwt.key.kind === "jwks"
    ? jose.createLocalJWKSet(jwt.key.jwks as jose.JSONWebKeySet)
    // Fetched when a token names a key it has not seen, cached, refreshed at most every 30 s.
    : jose.createRemoteJWKSet(jwt.key.url, { cacheMaxAge: 10 * 60_000, cooldownDuration: 30_000, timeoutDuration: 5_000 })
  const algorithms = jwt.algorithms ?? (jwt.key.kind === "secret" ? ["HS256", "HS384", "HS512"] : undefined)
  return (token: string): Effect.Effect<Identity, AuthenticationFailed> =>
    Effect.tryPromise({
      try: () =>
        jose.jwtVerify(token, key as any, {
          issuer: jwt.issuer,
          audience: jwt.audience as string | Array<string> | undefined,
          algorithms: algorithms as Array<string> | undefined,
          clockTolerance: jwt.clockToleranceSeconds,
          // from the clock: jose takes the time as a Date; this one is the Timer's.
          currentDate: new Date(now()),
          // Without a subject every token is the same caller (shared sessions and rate buckets);
          // without an expiry a leaked token works for ever.
          requiredClaims: ["sub", "exp"]
        }),
      catch: (e) => {
        let claimed: string | undefined
        try {
          const sub = jose.decodeJwt(token).sub
          claimed = sub === undefined ? undefined : `jwt:${sub}`
        } catch {
          claimed = undefined
        }
        return new AuthenticationFailed({ reason: `invalid token: ${describeJoseError(e)}`, invalidToken: true, claimed })
      }
    }).pipe(
      Effect.flatMap(({ payload }) => {
        const claimed = `jwt:${payload.sub}`
        if (typeof payload.sub !== "string" || payload.sub === "") {
          return Effect.fail(new AuthenticationFailed({ reason: "invalid token: no subject (sub)", invalidToken: true }))
        }
        if (payload.exp! * 1000 - now() > (jwt.maxTokenLifetimeSeconds + jwt.clockToleranceSeconds) * 1000) {
          return Effect.fail(
            new AuthenticationFailed({ reason: `invalid token: it expires more than ${jwt.maxTokenLifetimeSeconds}s from now (auth.jwt.max_token_lifetime)`, invalidToken: true, claimed })
          )
        }
        return Effect.succeed<Identity>({ kind: "jwt", id: claimed, scopes: scopesOf(payload[jwt.scopesClaim]) })
      })
    )
}

const describeJoseError = (e: unknown): string => {
  if (e instanceof jose.errors.JWTExpired) return "expired"
  if (e instanceof jose.errors.JWTClaimValidationFailed) {
    if (e.reason === "missing") return e.claim === "sub" ? "no subject (sub)" : e.claim === "exp" ? "no expiry (exp)" : `no ${e.claim} claim`
    return e.claim === "nbf" ? "not valid yet" : e.claim === "iss" ? "wrong issuer" : e.claim === "aud" ? "wrong audience" : `claim ${e.claim}: ${e.reason}`
  }
  if (e instanceof jose.errors.JWSSignatureVerificationFailed) return "bad signature"
  if (e instanceof jose.errors.JWKSNoMatchingKey) return "signed with an unknown key"
  if (e instanceof jose.errors.JOSEAlgNotAllowed) return "algorithm not allowed"
  if (e instanceof jose.errors.JWKSTimeout) return "the issuer's keys could not be fetched in time"
  if (e instanceof jose.errors.JOSEError) return e.message
  return "malformed"
}
