import { Effect } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import { type InstanceView, StrategyPlugin } from "mcp-gateway/plugin"

/**
 * The instance with the fewest requests in flight right now. Ties rotate, so that sequential
 * traffic (always 0 in flight) still spreads instead of piling onto the first instance.
 */
export default StrategyPlugin.make({
  name: "least_connections",
  description: "Routes to the instance with the fewest requests in flight.",
  options: StrategyPlugin.noOptions,
  make: () =>
    Effect.sync(() => {
      let rotation = 0
      const selectNow = (candidates: NonEmptyReadonlyArray<InstanceView>) => {
        const offset = rotation++ % candidates.length
        let best = candidates[offset]!
        for (let i = 1; i < candidates.length; i++) {
          const c = candidates[(offset + i) % candidates.length]!
          if (c.activeRequests < best.activeRequests) best = c
        }
        return best
      }
      // (Chosen at once: the request path needs no Effect step; StrategyPlugin.make derives `select`.)
      return { selectNow }
    })
})
