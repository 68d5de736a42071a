import { Context, Effect, Layer } from "effect"
import { GatewayConfig, type RateLimit } from "../config/GatewayConfig.js"
import { Registry } from "../registry/Registry.js"
import { FleetRedis, isRedisTimeout } from "../fleet/FleetRedis.js"
import { type FleetBucket, makeFleetBuckets } from "./fleetRateLimit.js"
import { Timer } from "../clock/Timer.js"
import type { RateDecision } from "./RateDecision.js"

/** A verdict now, or (buckets shared by the fleet, in Redis) soon. */
export type Admission = RateDecision | Promise<RateDecision>

export interface RateLimiterShape {
  /**
   * Takes one token from the client's bucket and, for an MCP operation, from the template's;
   * from both or from neither, so a refused request costs nothing.
   */
  readonly admit: (client: string, template?: string) => Admission
  /** Takes one token from the template's bucket alone: a request an aggregate routes to it (the client's bucket paid at the door). */
  readonly admitTemplate: (template: string) => Admission
}

/** Buckets kept for clients that are idle (full); past this many, full buckets are dropped (they hold nothing). */
const MAX_IDLE_BUCKETS = 10_000

class Bucket {
  tokens: number
  constructor(readonly limit: RateLimit, public updatedAt: number) {
    this.tokens = limit.burst
  }
  refill(now: number) {
    if (now > this.updatedAt) {
      this.tokens = Math.min(this.limit.burst, this.tokens + ((now - this.updatedAt) / 1000) * this.limit.perSecond)
      this.updatedAt = now
    }
  }
  secondsUntil(tokens: number) {
    return Math.max(0, Math.ceil((tokens - this.tokens) / this.limit.perSecond))
  }
}

/**
 * Token buckets: per client (credential, or address without auth) and per template, sizes from
 * `gateway.rate_limits` and the template's own `rate_limit`. Synchronous arithmetic on the
 * Clock's time (through the Timer), so a burst is counted exactly, with no race, and the
 * TestClock drives refills in tests.
 */
export class RateLimiter extends Context.Tag("mcp-gateway/RateLimiter")<RateLimiter, RateLimiterShape>() {
  static readonly layer: Layer.Layer<RateLimiter, never, GatewayConfig | Registry | Timer | FleetRedis> = Layer.effect(
    RateLimiter,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const registry = yield* Registry
      const timer = yield* Timer
      const fleet = yield* FleetRedis
      const { perClient, perTemplate } = config.gateway.rateLimits
      const clients = new Map<string, Bucket>()
      const templates = new Map<string, Bucket>()

      const bucket = (map: Map<string, Bucket>, key: string, limit: RateLimit, now: number) => {
        let b = map.get(key)
        if (b === undefined || b.limit !== limit) {
          if (map.size >= MAX_IDLE_BUCKETS) {
            for (const [k, idle] of map) {
              idle.refill(now)
              if (idle.tokens >= idle.limit.burst) map.delete(k)
            }
          }
          map.set(key, b = new Bucket(limit, now))
        }
        b.refill(now)
        return b
      }

      const unlimited: RateDecision = { allowed: true, limit: undefined, remaining: 0, resetSeconds: 0, retryAfterSeconds: 0 }

      const admitTemplate = (template: string): RateDecision => {
        const limit = registry.template(template)?.rateLimit ?? perTemplate
        if (limit === undefined) return unlimited
        const now = timer.now()
        const b = bucket(templates, template, limit, now)
        const allowed = b.tokens >= 1
        if (allowed) b.tokens -= 1
        return {
          allowed,
          limit: limit.burst,
          remaining: Math.max(0, Math.floor(b.tokens)),
          resetSeconds: b.secondsUntil(limit.burst),
          retryAfterSeconds: Math.max(1, allowed ? 0 : b.secondsUntil(1)),
          refusedBy: allowed ? undefined : "template"
        }
      }

      // (Written out for the one or two buckets there are, without arrays: it runs on every request.)
      const admitHere = (client: string, template: string | undefined): RateDecision => {
        const templateLimit = template === undefined ? undefined : registry.template(template)?.rateLimit ?? perTemplate
        if (perClient === undefined && templateLimit === undefined) return unlimited
        const now = timer.now()
        const forClient = perClient === undefined ? undefined : bucket(clients, client, perClient, now)
        const forTemplate = templateLimit === undefined || template === undefined ? undefined : bucket(templates, template, templateLimit, now)
        const empty = forClient !== undefined && forClient.tokens < 1
          ? forClient
          : forTemplate !== undefined && forTemplate.tokens < 1
          ? forTemplate
          : undefined
        if (empty === undefined) {
          if (forClient !== undefined) forClient.tokens -= 1
          if (forTemplate !== undefined) forTemplate.tokens -= 1
        }
        // The headers describe the tightest bucket.
        const tightest = forClient === undefined ? forTemplate! : forTemplate === undefined || forClient.tokens <= forTemplate.tokens ? forClient : forTemplate
        return {
          allowed: empty === undefined,
          limit: tightest.limit.burst,
          remaining: Math.max(0, Math.floor(tightest.tokens)),
          resetSeconds: tightest.secondsUntil(tightest.limit.burst),
          retryAfterSeconds: Math.max(1, empty === undefined ? 0 : empty.secondsUntil(1)),
          refusedBy: empty === undefined ? undefined : empty === forClient ? "client" : "template"
        }
      }

      if (fleet.status() === "off") return { admit: admitHere, admitTemplate }

      // Replicas: the buckets are the fleet's, in Redis. While Redis cannot answer, each
      // replica counts with its own buckets (a limit per replica beats none). A request waits
      // for Redis at most `registry.timeout_ms`; the first that waits that long turns the fleet
      // `slow`, and the requests after it count here at once until Redis answers again.
      const shared = makeFleetBuckets(fleet)
      const inFleet = (buckets: ReadonlyArray<FleetBucket>, here: () => RateDecision): Admission =>
        buckets.length === 0 ? unlimited : fleet.status() !== "ok" ? here() : shared(buckets).catch((e: unknown) => {
          if (isRedisTimeout(e)) fleet.reportSlow()
          return here()
        })
      return {
        admit: (client, template) => {
          const templateLimit = template === undefined ? undefined : registry.template(template)?.rateLimit ?? perTemplate
          const buckets: Array<FleetBucket> = []
          if (perClient !== undefined) buckets.push({ key: client, limit: perClient, kind: "client" })
          if (templateLimit !== undefined && template !== undefined) buckets.push({ key: template, limit: templateLimit, kind: "template" })
          return inFleet(buckets, () => admitHere(client, template))
        },
        admitTemplate: (template) => {
          const limit = registry.template(template)?.rateLimit ?? perTemplate
          return inFleet(limit === undefined ? [] : [{ key: template, limit, kind: "template" }], () => admitTemplate(template))
        }
      }
    })
  )
}
