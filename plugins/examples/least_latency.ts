/**
 * An example strategy plugin: send each request to the instance that has answered fastest
 * lately, but now and then (`explore`) try another one so that a slow instance that recovered
 * gets a chance to show it.
 *
 * Use it from a config file by path (relative to the config file):
 *
 *   "load_balancer": {
 *     "strategy": "./plugins/least_latency.js",
 *     "strategy_options": { "explore": 0.1 }
 *   }
 *
 * A plugin is an ES module whose default export is `StrategyPlugin.make({...})`:
 * - `name`: shown in logs and /gateway/stats;
 * - `options`: an Effect Schema that validates the template's `strategy_options`
 *   (unknown keys are rejected at start-up with a message naming the template);
 * - `make(options)`: runs once per template and returns `{ select }`; keep per-template state
 *   in its closure. `select(candidates, context)` gets the healthy instances (never empty) and
 *   returns one of them as an Effect.
 * Each candidate is an InstanceView: id, weight, activeRequests, latencyMs (moving average,
 * undefined before the first answer), successRate (0..1), status and its definition.
 */
import { Effect, Random, Schema } from "effect"
import { StrategyPlugin } from "mcp-gateway/plugin"

export default StrategyPlugin.make({
  name: "least_latency",
  description: "Routes to the instance with the lowest recent latency, exploring others now and then.",
  options: Schema.Struct({
    explore: Schema.optionalWith(Schema.Number.pipe(Schema.between(0, 1)), { default: () => 0.1 })
  }),
  make: ({ explore }) =>
    Effect.succeed({
      select: (candidates) =>
        Effect.gen(function*() {
          // Instances nobody has measured yet go first: they need a latency to compete.
          const unmeasured = candidates.find((c) => c.latencyMs === undefined)
          if (unmeasured !== undefined) return unmeasured
          if ((yield* Random.next) < explore) {
            return candidates[yield* Random.nextIntBetween(0, candidates.length)]!
          }
          return candidates.reduce((best, c) => (c.latencyMs! < best.latencyMs! ? c : best))
        })
    })
})
