import { Effect, Layer } from "effect"
import { HealthChecker } from "./health/HealthChecker.js"
import { HealthProbe } from "./health/HealthProbe.js"
import { HttpServerLive } from "./http/HttpServer.js"
import { ClientSessions } from "./proxy/ClientSessions.js"
import { Dispatcher } from "./proxy/Dispatcher.js"
import { InstanceLifecycle } from "./proxy/InstanceLifecycle.js"
import { Stats } from "./proxy/Stats.js"
import { Registry } from "./registry/Registry.js"
import { Strategies } from "./strategy/Strategies.js"
import { StrategyLoader } from "./strategy/StrategyLoader.js"
import { Transport } from "./transport/Transport.js"

/**
 * The gateway's services without the HTTP server, given a config and a Transport: what tests
 * compose with a fake Transport, and what the live gateway composes with the real one.
 */
export const GatewayCore = ClientSessions.layer.pipe(
  Layer.provideMerge(Layer.mergeAll(Dispatcher.layer, HealthChecker.layer, InstanceLifecycle)),
  Layer.provideMerge(Layer.mergeAll(Strategies.layer, HealthProbe.mcpPing)),
  Layer.provideMerge(Layer.mergeAll(Registry.layer, StrategyLoader.layer, Stats.layer))
)

/** Start-up probes every instance once (which also starts processes and opens sessions) before serving. */
const FirstHealthCheck = Layer.effectDiscard(
  Effect.gen(function*() {
    const checker = yield* HealthChecker
    const registry = yield* Registry
    yield* checker.checkAll
    const instances = registry.instances()
    const healthy = instances.filter((i) => i.status === "healthy").length
    yield* Effect.logInfo(`${healthy} of ${instances.length} instances healthy in ${registry.templates().length} templates`)
  })
)

/** The whole gateway: services, the first round of health checks, then the HTTP server. */
export const GatewayLive = HttpServerLive.pipe(
  Layer.provide(FirstHealthCheck),
  Layer.provideMerge(GatewayCore),
  Layer.provide(Transport.layer)
)

