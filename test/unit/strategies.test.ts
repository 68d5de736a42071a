import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { defineInstance } from "../../src/domain/Instance.js"
import type { InstanceView } from "../../src/domain/InstanceView.js"
import { DEFAULT_LOAD_BALANCER } from "../../src/domain/LoadBalancer.js"
import { InstanceState } from "../../src/instance/InstanceState.js"
import { builtinNames, makePluginLoader, PluginLoader } from "../../src/loader/PluginLoader.js"
import { makeTemplatePlugins } from "../../src/loader/TemplatePlugins.js"
import { StrategyPlugin } from "../../src/strategy/StrategyPlugin.js"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")

const instances = (...specs: Array<[string, number?]>): NonEmptyReadonlyArray<InstanceState> =>
  specs.map(([id, weight]) =>
    new InstanceState(defineInstance("t", id, { id, transport: "http", endpoint: "http://127.0.0.1:1/", weight }, "config"), 0)
  ) as any

/** Builds a template's strategy through the same loader the gateway uses, from the repo root. */
const strategyOf = (strategy: string, strategy_options: Record<string, unknown> = {}) =>
  Effect.gen(function*() {
    const strategies = yield* makeTemplatePlugins(StrategyPlugin.kind).pipe(
      Effect.provideService(PluginLoader, makePluginLoader(root))
    )
    const { name, value } = yield* strategies.forTemplate("t", { ...DEFAULT_LOAD_BALANCER, strategy, strategy_options })
    return { name, strategy: value }
  })

const pick = (select: (c: NonEmptyReadonlyArray<InstanceView>) => Effect.Effect<InstanceView>, candidates: NonEmptyReadonlyArray<InstanceView>, n: number) =>
  Effect.gen(function*() {
    const counts: Record<string, number> = {}
    for (let i = 0; i < n; i++) {
      const chosen = yield* select(candidates)
      counts[chosen.id] = (counts[chosen.id] ?? 0) + 1
    }
    return counts
  })

const ctx = { template: "t", method: "tools/call", attempt: 1 }

describe("built-in strategies (loaded as plugins)", () => {
  it("ships the five built-ins", () => {
    expect(builtinNames("strategies")).toEqual(["health_based", "least_connections", "random", "round_robin", "weighted"])
  })

  it.scoped("round_robin: 10/10/10 over 3 instances", () =>
    Effect.gen(function*() {
      const { name, strategy } = yield* strategyOf("round_robin")
      expect(name).toBe("round_robin")
      expect(yield* pick((c) => strategy.select(c, ctx), instances(["a"], ["b"], ["c"]), 30)).toEqual({ a: 10, b: 10, c: 10 })
    }))

  it.scoped("weighted: 3:1 weights give 30/10 over 40 picks", () =>
    Effect.gen(function*() {
      const { strategy } = yield* strategyOf("weighted")
      expect(yield* pick((c) => strategy.select(c, ctx), instances(["a", 3], ["b", 1]), 40)).toEqual({ a: 30, b: 10 })
    }))

  it.scoped("least_connections: the instance with the fewest requests in flight", () =>
    Effect.gen(function*() {
      const { strategy } = yield* strategyOf("least_connections")
      const [a, b, c] = instances(["a"], ["b"], ["c"])
      a!.activeRequests = 5
      b!.activeRequests = 2
      c!.activeRequests = 4
      expect(yield* pick((x) => strategy.select(x, ctx), [a!, b!, c!], 10)).toEqual({ b: 10 })
      // Equal loads are shared rather than piled onto one instance.
      b!.activeRequests = 4
      a!.activeRequests = 4
      expect(yield* pick((x) => strategy.select(x, ctx), [a!, b!, c!], 30)).toEqual({ a: 10, b: 10, c: 10 })
    }))

  it.scoped("health_based: prefers the healthier instance, shares between equals", () =>
    Effect.gen(function*() {
      const { strategy } = yield* strategyOf("health_based")
      const [good, flaky, slow] = instances(["good"], ["flaky"], ["slow"])
      flaky!.successRate = 0.6
      good!.latencyMs = 20
      slow!.latencyMs = 2000
      flaky!.latencyMs = 20
      expect(yield* pick((x) => strategy.select(x, ctx), [good!, flaky!, slow!], 20)).toEqual({ good: 20 })
      const [x, y] = instances(["x"], ["y"])
      expect(yield* pick((c) => strategy.select(c, ctx), [x!, y!], 20)).toEqual({ x: 10, y: 10 })
    }))

  it.scoped("random: every instance gets traffic", () =>
    Effect.gen(function*() {
      const { strategy } = yield* strategyOf("random")
      const counts = yield* pick((c) => strategy.select(c, ctx), instances(["a"], ["b"], ["c"]), 300)
      expect(Object.keys(counts).sort()).toEqual(["a", "b", "c"])
      for (const n of Object.values(counts)) expect(n).toBeGreaterThan(50)
    }))
})

describe("plugin loader", () => {
  it.scoped("loads the example plugin by path, with its options", () =>
    Effect.gen(function*() {
      const { name, strategy } = yield* strategyOf("./plugins/examples/least_latency.ts", { explore: 0 })
      expect(name).toBe("least_latency")
      const [fast, slow] = instances(["fast"], ["slow"])
      fast!.latencyMs = 5
      slow!.latencyMs = 50
      expect(yield* pick((c) => strategy.select(c, ctx), [slow!, fast!], 10)).toEqual({ fast: 10 })
    }))

  const failure = (strategy: string, options: Record<string, unknown> = {}) =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const exit = yield* Effect.exit(strategyOf(strategy, options).pipe(Scope.extend(scope)))
      yield* Scope.close(scope, Exit.void)
      expect(Exit.isFailure(exit), strategy).toBe(true)
      return Exit.isFailure(exit) ? String((exit.cause as any).error?.message ?? exit.cause) : ""
    })

  it.effect("names the template, the plugin and the problem", () =>
    Effect.gen(function*() {
      expect(yield* failure("round_robbin")).toMatch(
        /^templates\.t\.load_balancer\.strategy: strategy plugin "round_robbin": no built-in strategy of that name \(built-ins: health_based, least_connections, random, round_robin, weighted\)/
      )
      expect(yield* failure("./missing.js")).toContain("cannot find module")
      expect(yield* failure("./test/fixtures/plugins/not-a-plugin.mjs")).toContain("default export is not a strategy plugin")
      expect(yield* failure("./test/fixtures/plugins/throws-on-import.mjs")).toContain("boom at import")
      expect(yield* failure("./plugins/examples/least_latency.ts", { explore: 2 })).toContain(
        "invalid strategy_options: strategy_options.explore"
      )
      expect(yield* failure("round_robin", { speed: 1 })).toContain("this plugin takes no options, got \"speed\"")
    }))
})
