// Its own file so that the local and the fleet's buckets (RateLimiter.ts, fleetRateLimit.ts) share it without importing each other.
/** The verdict on one request, with what the RateLimit-* headers say (of the tightest bucket that applied). */
export interface RateDecision {
  readonly allowed: boolean
  /** The bucket's size (burst), for RateLimit-Limit; undefined when no limit applies. */
  readonly limit: number | undefined
  readonly remaining: number
  /** Seconds until the bucket is full again (RateLimit-Reset). */
  readonly resetSeconds: number
  /** Seconds until one more request may pass (Retry-After), when refused. */
  readonly retryAfterSeconds: number
  /** Which limit refused it, for the message. */
  readonly refusedBy?: "client" | "template" | undefined
}
