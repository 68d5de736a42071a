import type { RateLimit } from "../config/GatewayConfig.js"
import type { RateDecision } from "./RateDecision.js"
import type { FleetRedisShape } from "../fleet/FleetRedis.js"

/**
 * Token buckets in Redis, so that a limit holds for the fleet, not per replica: every bucket of
 * a request is refilled by the time since its last use (Redis's own clock, the same for every
 * replica), then one token is taken from each, or none if one is empty. Returns 1 or 0, then
 * each bucket's tokens left. Idle buckets expire once full.
 */
const BUCKETS = `
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local state = {}
local allowed = 1
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local v = redis.call('HMGET', KEYS[i], 't', 'u')
  local tokens = tonumber(v[1]) or burst
  local updated = tonumber(v[2]) or nowMs
  if nowMs > updated then
    tokens = math.min(burst, tokens + (nowMs - updated) / 1000 * rate)
    updated = nowMs
  end
  if tokens < 1 then allowed = 0 end
  state[i] = { tokens, updated, rate, burst }
end
local out = { allowed }
for i = 1, #KEYS do
  local s = state[i]
  if allowed == 1 then s[1] = s[1] - 1 end
  redis.call('HSET', KEYS[i], 't', tostring(s[1]), 'u', tostring(s[2]))
  redis.call('PEXPIRE', KEYS[i], math.ceil((s[4] - s[1]) / s[3] * 1000) + 1000)
  out[#out + 1] = tostring(s[1])
end
return out`

export interface FleetBucket {
  readonly key: string
  readonly limit: RateLimit
  readonly kind: "client" | "template"
}

/** Takes a token from each bucket in Redis (all or none); rejects if Redis cannot answer (the caller falls back to its own buckets). */
export const makeFleetBuckets = (fleet: FleetRedisShape) => {
  const redis = fleet.command!
  redis.defineCommand("mcpGatewayBuckets", { lua: BUCKETS })
  const run = (redis as unknown as { mcpGatewayBuckets: (...args: Array<string | number>) => Promise<Array<string | number>> }).mcpGatewayBuckets.bind(redis)

  return async (buckets: ReadonlyArray<FleetBucket>): Promise<RateDecision> => {
    const keys = buckets.map((b) => `${fleet.prefix}ratelimit:${b.kind}:${b.key}`)
    const args = buckets.flatMap((b) => [b.limit.perSecond, b.limit.burst])
    const [allowed, ...left] = await run(keys.length, ...keys, ...args)
    const tokens = left.map(Number)
    const ok = Number(allowed) === 1
    // The headers describe the tightest bucket; Retry-After the first empty one.
    let tightest = 0
    tokens.forEach((t, i) => void (t < tokens[tightest]! && (tightest = i)))
    const empty = ok ? -1 : tokens.findIndex((t) => t < 1)
    const secondsUntil = (i: number, wanted: number) => Math.max(0, Math.ceil((wanted - tokens[i]!) / buckets[i]!.limit.perSecond))
    return {
      allowed: ok,
      limit: buckets[tightest]!.limit.burst,
      remaining: Math.max(0, Math.floor(tokens[tightest]!)),
      resetSeconds: secondsUntil(tightest, buckets[tightest]!.limit.burst),
      retryAfterSeconds: Math.max(1, empty === -1 ? 0 : secondsUntil(empty, 1)),
      refusedBy: empty === -1 ? undefined : buckets[empty]!.kind
    }
  }
}
