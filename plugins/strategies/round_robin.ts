import { Effect } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import { type InstanceView, StrategyPlugin } from "mcp-gateway/plugin"

/** Each healthy instance in turn: over 3 instances, 30 calls give 10/10/10. */
export default StrategyPlugin.make({
  name: "round_robin",
  description: "Distributes requests evenly, one instance after the other.",
  options: StrategyPlugin.noOptions,
  make: () =>
    Effect.sync(() => {
      let next = 0
      const selectNow = (candidates: NonEmptyReadonlyArray<InstanceView>) => {
        const picked = candidates[next % candidates.length]!
        next = (next + 1) % Number.MAX_SAFE_INTEGER
        return picked
      }
      // (Chosen at once: the request path needs no Effect step; StrategyPlugin.make derives `select`.)
      return { selectNow }
    })
})
