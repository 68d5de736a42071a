import { Effect, Exit } from "effect"
import * as net from "node:net"
import type * as http from "node:http"
import { GatewayConfig } from "../../config/GatewayConfig.js"
import { allows, allowsSome, type Identity, scopeNeeded } from "../../domain/Identity.js"
import { ErrorCode } from "../../domain/JsonRpc.js"
import type { RateDecision } from "../../limits/RateDecision.js"
import { RateLimiter } from "../../limits/RateLimiter.js"
import { Stats } from "../../observability/Stats.js"
import { Registry } from "../../registry/Registry.js"
import { errorAnswer } from "../ApiError.js"
import { type RunEffect, sendJson } from "../raw.js"
import type { RouteRequirement } from "../routes.js"
import { makeFailureAudit } from "./AuthFailures.js"
import { type AuthenticationFailed, Authenticator } from "./Authenticator.js"
import { resourceMetadataUrl, templateEndpoint } from "./ProtectedResource.js"

const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]", "::1"])

/** An anonymous caller's scopes: none, one set for all of them (identities are never changed). */
const NO_SCOPES: ReadonlySet<string> = new Set()

/** The request headers a browser MCP client may send to the endpoint (CORS), and those it may read back. */
const CORS_ALLOW_HEADERS = "content-type, accept, authorization, x-api-key, mcp-session-id, mcp-protocol-version, last-event-id, x-request-id"
const CORS_EXPOSE_HEADERS =
  "mcp-session-id, www-authenticate, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset, x-request-id, x-instance-id"


/** What a guarded request may go on with. */
export interface Admitted {
  readonly identity: Identity
  /** Headers every answer to the request carries (RateLimit-*, CORS). */
  readonly headers: Readonly<Record<string, string>>
}

/**
 * The front gate every request passes before any handler (one place, every route):
 *
 * 1. `Host` must be an IP address, `localhost`, or a name in `allowed_hosts` (a DNS-rebinding
 *    page reaches the gateway with its own name as Host): else 403.
 * 2. An `Origin` (browsers send one) must be a loopback origin or in `allowed_origins`: else 403.
 *    On the MCP endpoint, allowed origins get CORS (preflight included).
 * 3. A POST must be `application/json`: the types a page can send without a preflight
 *    (text/plain, forms, none) are refused with 415.
 * 4. With auth configured: a credential (401, with the OAuth resource metadata on the MCP
 *    endpoint), then the route's scope, narrowed to its template (403 `insufficient_scope`).
 * 5. Rate limits: the client's bucket, and the template's for MCP operations (429).
 *
 * Failures of 4 are audit-logged (who, what, from where), aggregated per address and interval;
 * an address past `rate_limits.auth_failures.max_failures` failed authentications gets 429 until
 * its interval ends (AuthFailures.ts).
 */
export const makeGuard = Effect.gen(function*() {
  const config = yield* GatewayConfig
  const authenticator = yield* Authenticator
  const limiter = yield* RateLimiter
  const stats = yield* Stats
  const registry = yield* Registry
  const allowedOrigins = new Set(config.gateway.allowedOrigins)
  const allowedHosts = new Set(config.gateway.allowedHosts.map((h) => h.toLowerCase()))
  const listenHost = config.gateway.host.toLowerCase()

  const hostAllowed = (host: string | undefined) => {
    // "name", "name:port", "[v6]", "[v6]:port": nothing else is a Host a browser sends.
    const parsed = host === undefined ? null : /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(host)
    if (parsed === null) return false
    const name = parsed[1]!
    const bare = name.startsWith("[") ? name.slice(1, -1) : name
    return net.isIP(bare) !== 0 || LOOPBACK_HOSTS.has(name.toLowerCase()) || allowedHosts.has(name.toLowerCase()) ||
      name.toLowerCase() === listenHost
  }

  const originAllowed = (origin: string) => {
    if (allowedOrigins.has(origin) || allowedOrigins.has("*")) return true
    try {
      // A loopback origin as browsers send them: http(s), a host, maybe a port, nothing else.
      const url = new URL(origin)
      return (url.protocol === "http:" || url.protocol === "https:") && url.username === "" && url.password === "" &&
        origin === url.origin && LOOPBACK_HOSTS.has(url.hostname)
    } catch {
      return false
    }
  }

  const failures = yield* makeFailureAudit(config.gateway.authFailures)

  return {
    hostAllowed,
    originAllowed,
    /**
     * Checks the request against its route's requirement; calls `proceed` when it may go on,
     * answers it otherwise. `run` runs what must be asynchronous (token verification, logs).
     */
    check: (
      req: http.IncomingMessage,
      res: http.ServerResponse,
      requestId: string,
      requirement: RouteRequirement,
      run: RunEffect,
      proceed: (admitted: Admitted) => void
    ) => {
      const refuse = (
        status: number,
        type: string,
        message: string,
        headers?: Record<string, string>,
        rpcCode: number = ErrorCode.InvalidRequest,
        extra?: Parameters<typeof errorAnswer>[4]
      ) => {
        req.resume()
        if (requirement.jsonRpc) {
          return sendJson(res, status, { jsonrpc: "2.0", id: null, error: { code: rpcCode, message } }, headers)
        }
        const answer = errorAnswer(status, type, message, requestId, extra)
        sendJson(res, status, answer.body, headers)
      }

      if (!hostAllowed(req.headers.host)) {
        return refuse(403, "forbidden_host", `Forbidden: host ${JSON.stringify(req.headers.host ?? "")} is not allowed (gateway.allowed_hosts)`)
      }
      const origin = req.headers.origin
      const cors: Record<string, string> = {}
      if (typeof origin === "string") {
        if (!originAllowed(origin)) return refuse(403, "forbidden_origin", `Forbidden: origin ${origin} is not allowed`)
        if (requirement.jsonRpc) {
          cors["access-control-allow-origin"] = origin
          cors["access-control-expose-headers"] = CORS_EXPOSE_HEADERS
          cors["vary"] = "Origin"
        }
      }
      // (OPTIONS elsewhere goes on like any other method: its route answers 405 with the error body.)
      if (req.method === "OPTIONS" && requirement.jsonRpc) {
        req.resume()
        // A CORS preflight of a browser MCP client (its origin is allowed: checked above).
        res.writeHead(204, {
          ...cors,
          "access-control-allow-methods": "GET, POST, DELETE",
          "access-control-allow-headers": CORS_ALLOW_HEADERS,
          "access-control-max-age": "600"
        }).end()
        return
      }
      if (req.method === "POST" && requirement.jsonBody) {
        const type = String(req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase()
        if (type !== "application/json") {
          return refuse(415, "unsupported_media_type", `Unsupported Media Type: send the body as Content-Type: application/json`, cors)
        }
      }

      const address = req.socket.remoteAddress ?? "unknown"
      const limited = (identity: Identity) => {
        // Ending a session is never refused for being over the limit: it frees what the client held.
        // Nor is health counted (it never waits on the fleet's Redis).
        if ((req.method === "DELETE" && requirement.jsonRpc) || requirement.unlimited === true) {
          const headers: Record<string, string> = {}
          for (const name in cors) headers[name] = cors[name]!
          return proceed({ identity, headers })
        }
        const admission = limiter.admit(identity.id, requirement.templateLimited ? requirement.template : undefined)
        // (A promise only when the buckets are the fleet's, in Redis.)
        if (admission instanceof Promise) return void admission.then((decision) => decided(identity, decision))
        decided(identity, admission)
      }
      const decided = (identity: Identity, decision: RateDecision) => {
        // (Copied key by key: an object spread per request is V8's slow path.)
        const headers: Record<string, string> = {}
        for (const name in cors) headers[name] = cors[name]!
        if (decision.limit !== undefined) {
          headers["ratelimit-limit"] = String(decision.limit)
          headers["ratelimit-remaining"] = String(decision.remaining)
          headers["ratelimit-reset"] = String(decision.resetSeconds)
        }
        if (!decision.allowed) {
          // The template as a metric label only when it exists: a path is the client's to invent,
          // and every invented name would be a new series for ever.
          const template = requirement.template !== undefined && registry.template(requirement.template) !== undefined ? requirement.template : undefined
          stats.recordRateLimited(decision.refusedBy ?? "client", template)
          headers["retry-after"] = String(decision.retryAfterSeconds)
          const whose = decision.refusedBy === "template" ? `template "${requirement.template}"` : "this client"
          return refuse(429, "rate_limited", `Too Many Requests: the rate limit of ${whose} is reached; retry after ${decision.retryAfterSeconds}s`, headers, -32000)
        }
        proceed({ identity, headers })
      }

      if (requirement.scope === undefined || !authenticator.enabled) {
        return limited({ kind: "anonymous", id: `ip:${address}`, scopes: NO_SCOPES })
      }

      const challenge = (error?: string, scope?: string) => {
        const params = ['realm="mcp-gateway"']
        if (error !== undefined) params.push(`error="${error}"`)
        if (scope !== undefined) params.push(`scope="${scope}"`)
        const endpoint = requirement.endpoint ?? (requirement.template === undefined ? undefined : templateEndpoint(requirement.template))
        const metadata = resourceMetadataUrl(authenticator.settings!, req.headers.host, endpoint)
        params.push(`resource_metadata="${metadata}"`)
        return { ...cors, "www-authenticate": `Bearer ${params.join(", ")}` }
      }
      const what = `${req.method} ${(req.url ?? "/").split("?")[0]}`
      // An address that failed too often lately is refused before its credential is even looked at.
      const blockedFor = failures.retryAfterSeconds(address)
      if (blockedFor !== undefined) {
        stats.recordRateLimited("auth_failures", undefined)
        const message = `Too Many Requests: too many failed authentications from this address; retry after ${blockedFor}s`
        return refuse(429, "rate_limited", message, { ...cors, "retry-after": String(blockedFor) }, -32000)
      }

      const authorized = (identity: Identity) => {
        const permitted = requirement.scope === "authenticated" ||
          (requirement.anyTemplate === true ? allowsSome(identity, requirement.scope!) : allows(identity, requirement.scope!, requirement.template))
        if (!permitted) {
          const needed = scopeNeeded(requirement.scope!, requirement.template)
          failures.failed(run, "forbidden", address, { who: identity.id, what, needed })
          stats.recordAuthFailure(403)
          return refuse(403, "forbidden", `Forbidden: this credential lacks the scope ${needed}`, challenge("insufficient_scope", needed), undefined, { scope: needed })
        }
        limited(identity)
      }

      const authorization = req.headers.authorization
      const bearer = typeof authorization === "string" && /^bearer\s+/i.test(authorization)
        ? authorization.replace(/^bearer\s+/i, "").trim()
        : undefined
      const apiKey = typeof req.headers["x-api-key"] === "string" ? req.headers["x-api-key"] : undefined
      const failed = (e: AuthenticationFailed) => {
        failures.failed(run, "authentication_failed", address, { who: e.claimed ?? "(unknown)", what, reason: e.reason })
        stats.recordAuthFailure(401)
        refuse(401, "unauthorized", `Unauthorized: ${e.reason}`, challenge(e.invalidToken ? "invalid_token" : undefined))
      }
      const verdict = (exit: Exit.Exit<Identity, AuthenticationFailed>) => {
        if (Exit.isSuccess(exit)) return authorized(exit.value)
        if (exit.cause._tag === "Fail") return failed(exit.cause.error)
        refuse(500, "internal_error", "the gateway failed to check the credential; see its log")
      }
      // An API key is checked at once; only a JWT (its keys may be fetched) takes a fiber.
      const credentials = { bearer, apiKey, address }
      const now = authenticator.authenticateNow(credentials)
      if (now !== undefined) return verdict(now)
      run(authenticator.authenticate(credentials)).addObserver(verdict)
    }
  }
})
