import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Layer, Logger, Runtime, TestClock } from "effect"
import * as jose from "jose"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { FleetRedis } from "../../src/fleet/FleetRedis.js"
import { GatewayConfig, type GatewayConfigShape, loadGatewayConfig } from "../../src/config/GatewayConfig.js"
import { digestOf, findKey, hashApiKey, newApiKey } from "../../src/domain/apiKey.js"
import { allows, type Identity } from "../../src/domain/Identity.js"
import { redactCommand, redactUrl, redactUrlsIn } from "../../src/domain/redact.js"
import { AuthFailures, makeFailureAudit, MAX_DISTINCT } from "../../src/http/auth/AuthFailures.js"
import { Authenticator } from "../../src/http/auth/Authenticator.js"
import type { RunEffect } from "../../src/http/raw.js"
import { LiveAuth } from "../../src/config/LiveAuth.js"
import { nestsDeeperThan } from "../../src/domain/jsonText.js"
import type { RateDecision } from "../../src/limits/RateDecision.js"
import { type Admission, RateLimiter } from "../../src/limits/RateLimiter.js"
import { Timer } from "../../src/clock/Timer.js"
import { Registry } from "../../src/registry/Registry.js"
import { testConfig } from "../support/testConfig.js"

describe("redaction", () => {
  it("URLs lose user:password, query values and fragments", () => {
    expect(redactUrl("https://alice:s3cret@mcp.example.com:8443/mcp?token=abc&page=2#frag")).toBe(
      "https://***@mcp.example.com:8443/mcp?token=***&page=***#***"
    )
    expect(redactUrl("http://127.0.0.1:3001/mcp")).toBe("http://127.0.0.1:3001/mcp")
    expect(redactUrlsIn("HTTP 500 on POST http://u:p@h/x?session=1 (retrying)")).toBe("HTTP 500 on POST http://***@h/x?session=*** (retrying)")
  })

  it("command lines lose the values of secret-looking arguments", () => {
    expect(redactCommand(["server", "--token=abc", "--api-key", "xyz", "-v", "--port", "80", "API_KEY=k", "https://u:p@h/"])).toEqual(
      ["server", "--token=***", "--api-key", "***", "-v", "--port", "80", "API_KEY=***", "https://***@h/"]
    )
    expect(redactCommand(["s", "--bearer", "b", "--pat", "p", "--token:t", "--github-pat=g", "--path", "/srv", "--key-file", "k"])).toEqual(
      ["s", "--bearer", "***", "--pat", "***", "--token:***", "--github-pat=***", "--path", "/srv", "--key-file", "***"]
    )
  })
})

describe("request limits", () => {
  it("finds JSON nested deeper than the limit without parsing it, ignoring brackets in strings", () => {
    const deep = "{\"a\":".repeat(5000) + "{}" + "}".repeat(5000)
    expect(nestsDeeperThan(deep, 64)).toBe(true)
    expect(nestsDeeperThan("{\"a\":[[[1]]]}", 4)).toBe(false)
    expect(nestsDeeperThan("{\"a\":[[[1]]]}", 3)).toBe(true)
    expect(nestsDeeperThan(JSON.stringify({ s: "[[[[[[[[{{{{{\\\"" }), 2)).toBe(false)
  })
})

describe("API keys", () => {
  it("are random, hashed with SHA-256, and found by hash", () => {
    const key = newApiKey()
    expect(key).toMatch(/^mgw_[\w-]{43}$/)
    expect(newApiKey()).not.toBe(key)
    expect(hashApiKey("abc")).toBe("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    const keys = [{ id: "a", digest: digestOf("one") }, { id: "b", digest: digestOf(key) }]
    expect(findKey(keys, key)?.id).toBe("b")
    expect(findKey(keys, key + "x")).toBeUndefined()
  })
})

describe("scopes", () => {
  const id = (scopes: Array<string>, templates?: Array<string>): Identity => ({
    kind: "api_key",
    id: "k",
    scopes: new Set(scopes),
    templates: templates === undefined ? undefined : new Set(templates)
  })
  it("a scope covers every template; a narrowed scope or a template allow-list only its templates", () => {
    expect(allows(id(["mcp:call"]), "mcp:call", "fs")).toBe(true)
    expect(allows(id(["mcp:call:fs"]), "mcp:call", "fs")).toBe(true)
    expect(allows(id(["mcp:call:fs"]), "mcp:call", "other")).toBe(false)
    expect(allows(id(["mcp:call"], ["fs"]), "mcp:call", "other")).toBe(false)
    expect(allows(id(["gateway:read"]), "gateway:admin", "fs")).toBe(false)
    // Gateway-wide routes show every template: only an unrestricted credential sees them.
    expect(allows(id(["gateway:read"]), "gateway:read")).toBe(true)
    expect(allows(id(["gateway:read"], ["fs"]), "gateway:read")).toBe(false)
    expect(allows(id(["gateway:read:fs"]), "gateway:read")).toBe(false)
  })
})

/** A local limiter's verdict (a fleet's would be a promise). */
const decided = (admission: Admission): RateDecision => {
  if (admission instanceof Promise) throw new Error("expected a verdict of the replica's own buckets")
  return admission
}

describe("rate limits", () => {
  const limiter = (config: GatewayConfigShape) =>
    Layer.mergeAll(RateLimiter.layer).pipe(
      Layer.provide(Registry.layerMemory),
      Layer.provide(FleetRedis.off),
      Layer.provide(Timer.layerTest),
      Layer.provide(GatewayConfig.layer(config))
    )
  const withLimits = (perClient?: { perSecond: number; burst: number }, perTemplate?: { perSecond: number; burst: number }) => {
    const base = testConfig({ t: { instances: ["a"] }, u: { instances: ["b"] } })
    return { ...base, gateway: { ...base.gateway, rateLimits: { perClient, perTemplate } } }
  }

  it.scoped("a burst gets exactly `burst` requests through, then refills at the rate", () =>
    Effect.gen(function*() {
      const rl = yield* RateLimiter
      const verdicts = Array.from({ length: 20 }, () => decided(rl.admit("c1", "t")))
      expect(verdicts.filter((v) => v.allowed)).toHaveLength(5)
      const refused = verdicts.at(-1)!
      expect(refused).toMatchObject({ allowed: false, limit: 5, remaining: 0, retryAfterSeconds: 1, refusedBy: "client" })
      expect(refused.resetSeconds).toBe(3)
      // Another client has its own bucket.
      expect(decided(rl.admit("c2", "t")).allowed).toBe(true)
      // Half a second gives one token back (2 per second).
      yield* TestClock.adjust(Duration.millis(499))
      expect(decided(rl.admit("c1", "t")).allowed).toBe(false)
      yield* TestClock.adjust(Duration.millis(1))
      expect(decided(rl.admit("c1", "t")).allowed).toBe(true)
      expect(decided(rl.admit("c1", "t")).allowed).toBe(false)
      yield* TestClock.adjust(Duration.seconds(10))
      expect(Array.from({ length: 10 }, () => decided(rl.admit("c1", "t"))).filter((v) => v.allowed)).toHaveLength(5)
    }).pipe(Effect.provide(limiter(withLimits({ perSecond: 2, burst: 5 })))))

  it.scoped("a template's limit holds across clients, and a refused request costs the client nothing", () =>
    Effect.gen(function*() {
      const rl = yield* RateLimiter
      const results = Array.from({ length: 6 }, (_, i) => decided(rl.admit(`client-${i}`, "t")))
      expect(results.map((r) => r.allowed)).toEqual([true, true, true, false, false, false])
      expect(results[3]).toMatchObject({ refusedBy: "template" })
      // Another template is not affected; no client lost a token to the refusals.
      expect(decided(rl.admit("client-3", "u")).allowed).toBe(true)
      expect(decided(rl.admit("client-3", "u")).allowed).toBe(true)
    }).pipe(Effect.provide(limiter(withLimits({ perSecond: 100, burst: 2 }, { perSecond: 1, burst: 3 })))))
})

describe("JWT authentication", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-jwt-"))
  const issuer = "https://auth.example.com/"
  const audience = "https://gateway.example.com"
  const secret = "an HS256 secret of at least thirty-two bytes!"

  const authenticator = (auth: unknown) =>
    Effect.gen(function*() {
      const file = path.join(dir, `c${Math.random()}.json`)
      fs.writeFileSync(file, JSON.stringify({ auth }))
      const config = yield* loadGatewayConfig({ configFile: file })
      return yield* Effect.provide(Authenticator, Authenticator.layer.pipe(Layer.provide(Timer.layerTest), Layer.provide(GatewayConfig.layer(config))))
    })

  const sign = (claims: jose.JWTPayload, key: jose.CryptoKey | Uint8Array, alg: string, kid?: string) =>
    Effect.promise(() => new jose.SignJWT(claims).setProtectedHeader({ alg, ...(kid ? { kid } : {}) }).sign(key))

  const verdict = (auth: { authenticate: Authenticator["Type"]["authenticate"] }, bearer: string) =>
    Effect.map(Effect.exit(auth.authenticate({ bearer, apiKey: undefined, address: "127.0.0.1" })), (exit) =>
      Exit.isSuccess(exit) ? exit.value : (exit.cause as any).error.reason as string)

  it.effect("HS256: valid, expired, not yet valid, badly signed, wrong issuer, wrong audience, scopes from the claim", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.parse("2026-11-24T12:00:00Z"))
      const now = Math.floor(Date.parse("2026-11-24T12:00:00Z") / 1000)
      const key = new TextEncoder().encode(secret)
      const auth = yield* authenticator({ jwt: { issuer, audience, secret, clock_tolerance: 0 } })
      const good = { iss: issuer, aud: audience, sub: "alice", scope: "mcp:call:fs gateway:read", iat: now, exp: now + 60 }
      const identity = yield* verdict(auth, yield* sign(good, key, "HS256"))
      expect(identity).toMatchObject({ kind: "jwt", id: "jwt:alice" })
      expect(Array.from((identity as Identity).scopes)).toEqual(["mcp:call:fs", "gateway:read"])
      expect(yield* verdict(auth, yield* sign({ ...good, exp: now - 1 }, key, "HS256"))).toBe("invalid token: expired")
      expect(yield* verdict(auth, yield* sign({ ...good, nbf: now + 30 }, key, "HS256"))).toBe("invalid token: not valid yet")
      expect(yield* verdict(auth, yield* sign(good, new TextEncoder().encode(secret + "x"), "HS256"))).toBe("invalid token: bad signature")
      expect(yield* verdict(auth, yield* sign({ ...good, iss: "https://evil/" }, key, "HS256"))).toBe("invalid token: wrong issuer")
      expect(yield* verdict(auth, yield* sign({ ...good, aud: "someone-else" }, key, "HS256"))).toBe("invalid token: wrong audience")
      // Time runs on the Clock: the good token expires a minute later.
      const token = yield* sign(good, key, "HS256")
      yield* TestClock.adjust(Duration.seconds(61))
      expect(yield* verdict(auth, token)).toBe("invalid token: expired")
    }))

  it.effect("a token without a subject or an expiry, or expiring later than max_token_lifetime, is refused", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.parse("2026-11-24T12:00:00Z"))
      const now = Math.floor(Date.parse("2026-11-24T12:00:00Z") / 1000)
      const key = new TextEncoder().encode(secret)
      const auth = yield* authenticator({ jwt: { issuer, audience, secret, clock_tolerance: 0, max_token_lifetime: 3600 } })
      const good = { iss: issuer, aud: audience, sub: "alice", scope: "mcp:call", exp: now + 3600 }
      expect(yield* verdict(auth, yield* sign(good, key, "HS256"))).toMatchObject({ id: "jwt:alice" })
      const { sub: _sub, ...noSubject } = good
      const { exp: _exp, ...noExpiry } = good
      expect(yield* verdict(auth, yield* sign(noSubject, key, "HS256"))).toBe("invalid token: no subject (sub)")
      expect(yield* verdict(auth, yield* sign({ ...good, sub: "" }, key, "HS256"))).toBe("invalid token: no subject (sub)")
      expect(yield* verdict(auth, yield* sign(noExpiry, key, "HS256"))).toBe("invalid token: no expiry (exp)")
      expect(yield* verdict(auth, yield* sign({ ...good, exp: now + 3601 }, key, "HS256"))).toMatch(/expires more than 3600s from now/)
      // The default: a day.
      const daily = yield* authenticator({ jwt: { issuer, audience, secret } })
      expect(yield* verdict(daily, yield* sign({ ...good, exp: now + 86_000 }, key, "HS256"))).toMatchObject({ id: "jwt:alice" })
      expect(yield* verdict(daily, yield* sign({ ...good, exp: now + 30 * 86_400 }, key, "HS256"))).toMatch(/auth.jwt.max_token_lifetime/)
    }))

  it.effect("an API key id cannot name a token's subject or an address (jwt:, ip:)", () =>
    Effect.gen(function*() {
      const file = path.join(dir, "reserved.json")
      const hash = hashApiKey(newApiKey())
      fs.writeFileSync(file, JSON.stringify({ auth: { api_keys: [{ id: "jwt:alice", hash, scopes: ["mcp:call"] }, { id: "IP:10.0.0.1", hash: hashApiKey(newApiKey()), scopes: [] }] } }))
      const exit = yield* Effect.exit(loadGatewayConfig({ configFile: file }))
      const problems = Exit.isFailure(exit) ? (exit.cause as any).error.problems.join("\n") : ""
      expect(problems).toContain(`auth.api_keys[0].id: "jwt:alice" starts with "jwt:"`)
      expect(problems).toContain(`auth.api_keys[1].id: "IP:10.0.0.1" starts with "ip:"`)
    }))

  it.effect("keys are checked against the auth settings as they stand now (a reload): removed, narrowed", () =>
    Effect.gen(function*() {
      const [k1, k2] = [newApiKey(), newApiKey()]
      const file = path.join(dir, "live.json")
      const write = (keys: ReadonlyArray<unknown>) => fs.writeFileSync(file, JSON.stringify({ auth: { api_keys: keys } }))
      write([{ id: "one", hash: hashApiKey(k1), scopes: ["mcp:call"] }, { id: "two", hash: hashApiKey(k2), scopes: ["mcp:call"] }])
      const config = yield* loadGatewayConfig({ configFile: file })
      const live = LiveAuth.make(config.gateway.auth)
      const auth = yield* Effect.provide(
        Authenticator,
        Authenticator.layer.pipe(Layer.provide(Timer.layerTest), Layer.provide(GatewayConfig.layer(config)), Layer.provide(Layer.succeed(LiveAuth, live)))
      )
      const check = (apiKey: string) => {
        const exit = auth.authenticateNow({ bearer: undefined, apiKey, address: "127.0.0.1" })!
        return Exit.isSuccess(exit) ? exit.value : undefined
      }
      expect(check(k1)?.templates).toBeUndefined()
      expect(check(k2)?.id).toBe("two")
      write([{ id: "one", hash: hashApiKey(k1), scopes: ["mcp:call"], templates: ["fs"] }])
      expect(live.apply((yield* loadGatewayConfig({ configFile: file })).gateway.auth)).toBe("applied")
      expect(Array.from(check(k1)?.templates ?? [])).toEqual(["fs"])
      expect(check(k2)).toBeUndefined()
      // Turning auth off takes a restart.
      expect(live.apply(undefined)).toBe("needs_restart")
    }))

  it.effect("RS256 and ES256 from a JWKS file; an unsigned or unknown-key token is refused", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.parse("2026-11-24T12:00:00Z"))
      const now = Math.floor(Date.parse("2026-11-24T12:00:00Z") / 1000)
      const rsa = yield* Effect.promise(() => jose.generateKeyPair("RS256"))
      const ec = yield* Effect.promise(() => jose.generateKeyPair("ES256"))
      const other = yield* Effect.promise(() => jose.generateKeyPair("RS256"))
      const jwks = {
        keys: [
          { ...(yield* Effect.promise(() => jose.exportJWK(rsa.publicKey))), kid: "rsa-1", alg: "RS256" },
          { ...(yield* Effect.promise(() => jose.exportJWK(ec.publicKey))), kid: "ec-1", alg: "ES256" }
        ]
      }
      const jwksFile = path.join(dir, "jwks.json")
      fs.writeFileSync(jwksFile, JSON.stringify(jwks))
      const auth = yield* authenticator({ jwt: { issuer, audience, jwks_file: jwksFile, scopes_claim: "permissions" } })
      const claims = { iss: issuer, aud: audience, sub: "svc", permissions: ["mcp:call"], exp: now + 60 }
      expect(yield* verdict(auth, yield* sign(claims, rsa.privateKey, "RS256", "rsa-1"))).toMatchObject({ id: "jwt:svc" })
      expect(yield* verdict(auth, yield* sign(claims, ec.privateKey, "ES256", "ec-1"))).toMatchObject({ id: "jwt:svc" })
      expect(yield* verdict(auth, yield* sign(claims, other.privateKey, "RS256", "rsa-1"))).toBe("invalid token: bad signature")
      expect(yield* verdict(auth, yield* sign(claims, other.privateKey, "RS256", "nobody"))).toBe("invalid token: signed with an unknown key")
      const unsigned = new jose.UnsecuredJWT(claims).encode()
      expect(yield* verdict(auth, unsigned)).toMatch(/^invalid token/)
    }))

  it.effect("config problems name the field", () =>
    Effect.gen(function*() {
      const file = path.join(dir, "bad.json")
      fs.writeFileSync(file, JSON.stringify({
        auth: {
          api_keys: [{ id: "a", hash: "md5:abc", scopes: ["mcp:everything"] }],
          jwt: { secret: { env: "GATEWAY_TEST_UNSET_SECRET" }, jwks_url: "https://x/jwks" }
        }
      }))
      const exit = yield* Effect.exit(loadGatewayConfig({ configFile: file }))
      const problems = Exit.isFailure(exit) ? (exit.cause as any).error.problems.join("\n") : ""
      expect(problems).toContain("auth.api_keys[0].hash: expected sha256:<64 hex digits>")
      expect(problems).toContain("auth.api_keys[0].scopes[0]: expected gateway:read, gateway:admin or mcp:call")
      const file2 = path.join(dir, "bad2.json")
      fs.writeFileSync(file2, JSON.stringify({ auth: { jwt: { secret: { env: "GATEWAY_TEST_UNSET_SECRET" } } } }))
      const exit2 = yield* Effect.exit(loadGatewayConfig({ configFile: file2 }))
      const problems2 = Exit.isFailure(exit2) ? (exit2.cause as any).error.problems.join("\n") : ""
      expect(problems2).toContain("auth.jwt.secret: environment variable GATEWAY_TEST_UNSET_SECRET is not set")
      expect(problems2).toContain("auth.jwt.issuer: expected the issuer")
      expect(problems2).toContain("auth.jwt.audience: expected the audience")
    }))
})

describe("redaction leaves what has nothing to hide as it was", () => {
  it("a URL without userinfo, query or fragment is unchanged", () => {
    expect(redactUrl("http://127.0.0.1:8080")).toBe("http://127.0.0.1:8080")
    expect(redactUrlsIn("listening on http://127.0.0.1:8080")).toBe("listening on http://127.0.0.1:8080")
  })
})

describe("the hardened example config", () => {
  it.effect("examples/secure.json loads as documented (its backend token from the environment)", () =>
    Effect.gen(function*() {
      process.env.GITHUB_MCP_TOKEN = "example-token"
      const config = yield* loadGatewayConfig({ configFile: path.resolve(__dirname, "../../examples/secure.json") })
      expect(config.gateway.host).toBe("0.0.0.0")
      expect(config.gateway.auth?.apiKeys.map((k) => k.id)).toEqual(["ops-dashboard", "ci-deployer"])
      expect(config.gateway.auth?.jwt?.key.kind).toBe("jwks_url")
      expect(config.templates[0]?.forwardHeaders).toEqual(["x-tenant-id"])
      expect(config.gateway.rateLimits.perClient).toEqual({ perSecond: 20, burst: 40 })
      delete process.env.GITHUB_MCP_TOKEN
      const exit = yield* Effect.exit(loadGatewayConfig({ configFile: path.resolve(__dirname, "../../examples/secure.json") }))
      expect(Exit.isFailure(exit) && (exit.cause as any).error.problems).toContain(
          `templates.github.instances[0].headers["Authorization"]: environment variable GITHUB_MCP_TOKEN is not set`
      )
    }))
})

describe("failed authentications per address (credential floods)", () => {
  const limit = { maxFailures: 3, intervalMs: 60_000, maxAddresses: 2 }

  it("past max_failures in an interval an address is refused until the interval ends; another address is not", () => {
    const failures = new AuthFailures(limit)
    const detail = { who: "(unknown)", reason: "unknown API key or token" }
    expect(failures.fail("10.0.0.1", 1_000, detail)).toEqual({ first: true, ended: undefined })
    expect(failures.retryAfterSeconds("10.0.0.1", 1_000)).toBeUndefined()
    failures.fail("10.0.0.1", 2_000, detail)
    failures.fail("10.0.0.1", 3_000, detail)
    expect(failures.retryAfterSeconds("10.0.0.1", 3_000)).toBe(58)
    expect(failures.retryAfterSeconds("10.0.0.1", 60_500)).toBe(1)
    expect(failures.retryAfterSeconds("10.0.0.2", 3_000)).toBeUndefined()
    // The interval is over: the address may try again.
    expect(failures.retryAfterSeconds("10.0.0.1", 61_000)).toBeUndefined()
  })

  it("the first failure of an interval is logged at once, the rest as one summary with a count when it ends", () => {
    const failures = new AuthFailures(limit)
    for (let i = 0; i < 10; i++) failures.fail("10.0.0.1", 1_000 + i, { who: `key-${i % 2}`, reason: "unknown API key or token" })
    failures.retryAfterSeconds("10.0.0.1", 2_000)
    failures.fail("10.0.0.2", 5_000, { who: "x", reason: "r" })
    expect(failures.sweep(60_999)).toEqual([])
    // 10.0.0.2 had only its first failure, already logged: nothing to sum up.
    expect(failures.sweep(65_000)).toEqual([{ address: "10.0.0.1", more: 9, refused: 1, seen: { who: "key-1, key-0", reason: "unknown API key or token" } }])
    expect(failures.size).toBe(0)
    // A failure after the interval, before a sweep, opens the next one and closes the last.
    failures.fail("10.0.0.3", 70_000, { who: "a" })
    failures.fail("10.0.0.3", 70_001, { who: "b" })
    const next = failures.fail("10.0.0.3", 130_000, { who: "c" })
    expect(next.first).toBe(true)
    expect(next.ended).toMatchObject({ address: "10.0.0.3", more: 1, seen: { who: "b" } })
  })

  it.scoped("the guard's audit: the first failure at once, the rest summed up when the interval ends (TestClock); 429 past the limit", () => {
    const lines: Array<string> = []
    const capture = Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => void lines.push(String(message))))
    return Effect.gen(function*() {
      const audit = yield* makeFailureAudit({ maxFailures: 3, interval: Duration.seconds(10), maxAddresses: 100 })
      const runtime = yield* Effect.runtime<never>()
      const run: RunEffect = (effect) => Runtime.runFork(runtime)(effect)
      for (let i = 0; i < 5; i++) audit.failed(run, "authentication_failed", "10.0.0.9", { who: "(unknown)", what: "GET /gateway/stats", reason: "unknown API key or token" })
      yield* Effect.yieldNow()
      expect(lines).toEqual(["audit: authentication_failed"])
      expect(audit.retryAfterSeconds("10.0.0.9")).toBe(10)
      yield* TestClock.adjust(Duration.seconds(4))
      expect(audit.retryAfterSeconds("10.0.0.9")).toBe(6)
      yield* TestClock.adjust(Duration.seconds(6))
      expect(lines).toEqual([
        "audit: authentication_failed",
        "audit: authentication_failed: 4 more from 10.0.0.9 within 10s, 2 requests refused (429)"
      ])
      expect(audit.retryAfterSeconds("10.0.0.9")).toBeUndefined()
    }).pipe(Effect.provide(capture))
  })

  it("what it holds is bounded: addresses (the oldest forgotten) and the distinct values of a summary", () => {
    const failures = new AuthFailures(limit)
    failures.fail("a", 0, {})
    failures.fail("b", 0, {})
    failures.fail("c", 0, {})
    expect(failures.size).toBe(2)
    for (let i = 0; i < 100; i++) failures.fail("c", 1 + i, { what: `GET /x${i}` })
    const [summary] = failures.drain().filter((s) => s.address === "c")
    expect(summary!.more).toBe(100)
    expect(summary!.seen.what!.split(", ")).toHaveLength(MAX_DISTINCT + 1)
    expect(summary!.seen.what).toMatch(/, \.\.\.$/)
  })
})
