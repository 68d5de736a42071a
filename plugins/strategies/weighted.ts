import { Effect } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import { type InstanceView, StrategyPlugin } from "mcp-gateway/plugin"

/**
 * Smooth weighted round robin (as nginx does it): every pick, each candidate's current weight
 * grows by its weight, the largest wins and gives back the total. Weights 3:1 give exactly 3:1
 * over every 4 picks, interleaved (A A B A, not A A A B).
 */
export default StrategyPlugin.make({
  name: "weighted",
  description: "Routes in proportion to instance weights (smooth weighted round robin).",
  options: StrategyPlugin.noOptions,
  make: () =>
    Effect.sync(() => {
      const current = new Map<string, number>()
      const selectNow = (candidates: NonEmptyReadonlyArray<InstanceView>) => {
        let total = 0
        let best = candidates[0]
        let bestWeight = -Infinity
        for (const c of candidates) {
          const w = (current.get(c.id) ?? 0) + c.weight
          current.set(c.id, w)
          total += c.weight
          if (w > bestWeight) {
            best = c
            bestWeight = w
          }
        }
        current.set(best.id, bestWeight - total)
        // Forget instances that are gone, so the map does not grow with churn.
        if (current.size > candidates.length * 2) {
          const live = new Set(candidates.map((c) => c.id))
          for (const id of current.keys()) if (!live.has(id)) current.delete(id)
        }
        return best
      }
      // (Chosen at once: the request path needs no Effect step; StrategyPlugin.make derives `select`.)
      return { selectNow }
    })
})
