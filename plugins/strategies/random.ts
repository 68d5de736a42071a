import { Effect, Random } from "effect"
import { StrategyPlugin } from "mcp-gateway/plugin"

/** A uniformly random healthy instance (Effect's Random, so tests can seed it). */
export default StrategyPlugin.make({
  name: "random",
  description: "Picks a random healthy instance.",
  options: StrategyPlugin.noOptions,
  make: () =>
    Effect.succeed({
      select: (candidates) => Effect.map(Random.nextIntBetween(0, candidates.length), (i) => candidates[i]!)
    })
})
