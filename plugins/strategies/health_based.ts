import { Effect, Schema } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import { StrategyPlugin, type InstanceView } from "mcp-gateway/plugin"

/**
 * Prefers the instance with the best health score: its recent success rate, discounted by its
 * latency relative to `latency_reference_ms`. Instances within `tolerance` of the best score
 * share the traffic in turn, so equally good instances are all used.
 */
export default StrategyPlugin.make({
  name: "health_based",
  description: "Prefers instances with higher recent success rates and lower latency.",
  options: Schema.Struct({
    latency_reference_ms: Schema.optionalWith(Schema.Number.pipe(Schema.positive()), { default: () => 1000 }),
    tolerance: Schema.optionalWith(Schema.Number.pipe(Schema.between(0, 1)), { default: () => 0.05 })
  }),
  make: (options) =>
    Effect.sync(() => {
      let rotation = 0
      const score = (i: InstanceView) => i.successRate * (options.latency_reference_ms / (options.latency_reference_ms + (i.latencyMs ?? 0)))
      const selectNow = (candidates: NonEmptyReadonlyArray<InstanceView>) => {
        const scores = candidates.map(score)
        const top = Math.max(...scores)
        const best = candidates.filter((_, i) => scores[i]! >= top - options.tolerance)
        return best[rotation++ % best.length]!
      }
      // (Chosen at once: the request path needs no Effect step; StrategyPlugin.make derives `select`.)
      return { selectNow }
    })
})
