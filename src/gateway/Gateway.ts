import { Duration, Effect, Fiber, Layer } from "effect"
import { ConfigReload } from "../discovery/ConfigReload.js"
import { Discovery } from "../discovery/Discovery.js"
import { LiveAuth } from "../config/LiveAuth.js"
import { EndedSessions } from "../fleet/EndedSessions.js"
import { FleetRedis } from "../fleet/FleetRedis.js"
import { HealthChecker } from "../health/HealthChecker.js"
import { HealthProbes } from "../health/HealthProbes.js"
import { Authenticator } from "../http/auth/Authenticator.js"
import { HttpServerLive, ListeningAddress } from "../http/HttpServer.js"
import { GatewayMetrics } from "../observability/GatewayMetrics.js"
import { PluginLoader } from "../loader/PluginLoader.js"
import { AggregateSessions } from "../aggregation/AggregateSessions.js"
import { ClientSessions } from "../sessions/ClientSessions.js"
import { Dispatcher } from "../dispatch/Dispatcher.js"
import { Exposure } from "../exposure/Exposure.js"
import { ToolPinsLive } from "../integrity/ToolPinsLive.js"
import { InstanceLifecycle } from "../lifecycle/InstanceLifecycle.js"
import { InstanceSupervision } from "../lifecycle/InstanceSupervision.js"
import { RateLimiter } from "../limits/RateLimiter.js"
import { Stats } from "../observability/Stats.js"
import { Timer } from "../clock/Timer.js"
import { Registry } from "../registry/Registry.js"
import { Strategies } from "../strategy/Strategies.js"
import { TracingLive } from "../observability/Tracing.js"
import { Transport } from "../transport/Transport.js"

/** What everything stands on, from the config alone: the registry, the plugin loader, the stats and the metrics under them. */
export const GatewayFoundation = Layer.mergeAll(Registry.layer, PluginLoader.layer, Stats.layer, LiveAuth.layer, EndedSessions.layer).pipe(
  Layer.provideMerge(Layer.mergeAll(GatewayMetrics.layer, FleetRedis.layer))
)

/**
 * The gateway's services on top of the foundation, given a Transport and a Timer. Live
 * configuration and discovery come last: the health checker and the drain already follow the
 * registry's changes when the first sync adds instances.
 */
export const GatewayServices = Layer.mergeAll(Discovery.layer, ConfigReload.layer).pipe(
  Layer.provideMerge(InstanceLifecycle),
  Layer.provideMerge(AggregateSessions.layer),
  Layer.provideMerge(ClientSessions.layer),
  Layer.provideMerge(Layer.mergeAll(Dispatcher.layer, HealthChecker.layer, RateLimiter.layer)),
  Layer.provideMerge(Layer.mergeAll(Strategies.layer, HealthProbes.layer, Exposure.layer)),
  Layer.provideMerge(ToolPinsLive)
)

/**
 * The gateway's services without the HTTP server, given a config, a Transport and a Timer:
 * what tests compose with `Transport.layerFake` (or another fake Transport) and `Timer.layerTest`.
 */
export const GatewayCore = GatewayServices.pipe(Layer.provideMerge(GatewayFoundation))

/** Up to this many instances, start-up waits for every first probe before it says it listens. */
const WAIT_FOR_EVERY_PROBE = 100
/** Beyond, it waits this long for the first round. */
const FIRST_ROUND_WAIT = Duration.seconds(3)

/**
 * Once the port is bound (so a port in use stops start-up before any server process starts),
 * every instance is probed once (which also starts processes and opens sessions); then the
 * gateway says where it listens.
 */
const FirstHealthCheck = Layer.scopedDiscard(
  Effect.gen(function*() {
    const checker = yield* HealthChecker
    const registry = yield* Registry
    const address = yield* ListeningAddress
    const count = registry.instances().length
    if (count <= WAIT_FOR_EVERY_PROBE) yield* checker.checkAll
    else {
      // A large fleet does not wait for thousands of first probes: it serves after a while, the
      // rest of the round going on (an instance not probed yet is tried, and failed over from).
      const round = yield* Effect.forkScoped(checker.checkAll)
      const done = yield* Fiber.join(round).pipe(Effect.timeout(FIRST_ROUND_WAIT), Effect.option)
      if (done._tag === "None") {
        const probed = registry.instances().filter((i) => i.health.lastCheckedAt !== undefined).length
        yield* Effect.logInfo(`${probed} of ${count} instances probed within ${Duration.format(FIRST_ROUND_WAIT)}; serving while the first round goes on`)
      }
    }
    const instances = registry.instances()
    const healthy = instances.filter((i) => i.status === "healthy").length
    yield* Effect.logInfo(`${healthy} of ${instances.length} instances healthy in ${registry.templates().length} templates`)
    yield* Effect.logInfo(`listening on ${address.url}`)
  })
)

/** The real transports, whose channels report to the registry's instances (InstanceSupervision). */
const LiveTransport = Transport.layer.pipe(Layer.provide(InstanceSupervision))

/**
 * The whole gateway. Built in this order, released in the reverse: the foundation, the
 * transports, the services, the HTTP server, the first health check. So shutdown stops the
 * HTTP server first (draining requests in flight), then ends sessions, then stops processes.
 */
export const GatewayLive = FirstHealthCheck.pipe(
  // (Merged: whoever runs the gateway may want its address, e.g. `start --background`.)
  Layer.provideMerge(HttpServerLive.pipe(Layer.provide(Authenticator.layer))),
  Layer.provideMerge(GatewayServices),
  Layer.provideMerge(LiveTransport),
  Layer.provideMerge(GatewayFoundation),
  Layer.provide(Timer.layer),
  // First of all, so that every fiber of the gateway uses its tracer (when tracing is configured).
  // (With the gateway's metrics, built once for both: it counts the spans it drops.)
  Layer.provide(TracingLive.pipe(Layer.provide(GatewayMetrics.layer)))
)
