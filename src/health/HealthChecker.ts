import { Context, Effect, FiberMap, Layer, Schedule, Stream } from "effect"
import { DEFAULT_LOAD_BALANCER, seconds } from "../domain/LoadBalancer.js"
import { Stats } from "../proxy/Stats.js"
import type { InstanceState } from "../registry/InstanceState.js"
import { Registry } from "../registry/Registry.js"
import { HealthProbe } from "./HealthProbe.js"

export interface HealthCheckerShape {
  /** Probes every instance once, all at once: start-up runs this before it serves. */
  readonly checkAll: Effect.Effect<void>
  /** Probes one instance now and records the outcome; true when healthy. */
  readonly check: (instance: InstanceState) => Effect.Effect<boolean>
}

const instanceKey = (instance: InstanceState) => `${instance.template}\u0000${instance.id}`

/**
 * One fiber per instance (in a FiberMap) probing it every `health_check_interval` with
 * `health_check_timeout`. A failed probe takes the instance out of rotation; a successful
 * one brings it back. Instances registered later are watched from their registration on.
 */
export class HealthChecker extends Context.Tag("mcp-gateway/HealthChecker")<HealthChecker, HealthCheckerShape>() {
  static readonly layer: Layer.Layer<HealthChecker, never, Registry | HealthProbe | Stats> = Layer.scoped(
    HealthChecker,
    Effect.gen(function*() {
      const registry = yield* Registry
      const { probe } = yield* HealthProbe
      const stats = yield* Stats
      const fibers = yield* FiberMap.make<string>()

      const settingsOf = (instance: InstanceState) => registry.template(instance.template)?.settings ?? DEFAULT_LOAD_BALANCER

      const check = (instance: InstanceState) =>
        Effect.suspend(() => {
          const settings = settingsOf(instance)
          const wasHealthy = instance.status === "healthy"
          return probe(instance.definition).pipe(
            Effect.timeoutFail({
              duration: seconds(settings.health_check_timeout),
              onTimeout: () => ({ message: `no answer to the health probe within ${settings.health_check_timeout}s` })
            }),
            Effect.matchEffect({
              onSuccess: () =>
                Effect.sync(() => {
                  instance.markHealthy()
                  stats.recordProbe(true)
                }).pipe(
                  Effect.zipRight(wasHealthy ? Effect.void : Effect.logInfo("instance is healthy")),
                  Effect.as(true)
                ),
              onFailure: (e) =>
                Effect.sync(() => {
                  const wasUnhealthy = instance.status === "unhealthy" && instance.consecutiveFailures > 0
                  instance.markUnhealthy(e.message)
                  instance.recordFailure()
                  stats.recordProbe(false)
                  return wasUnhealthy
                }).pipe(
                  Effect.flatMap((already) =>
                    already ? Effect.logDebug(`still unhealthy: ${e.message}`) : Effect.logWarning(`instance is unhealthy: ${e.message}`)
                  ),
                  Effect.as(false)
                )
            }),
            Effect.annotateLogs({ instance: `${instance.template}/${instance.id}` })
          )
        })

      /** The probe loop of one instance; `immediately` for instances registered at run time. */
      const watch = (instance: InstanceState, immediately: boolean) => {
        const interval = seconds(settingsOf(instance).health_check_interval)
        const loop = Effect.repeat(check(instance), Schedule.spaced(interval))
        return FiberMap.run(fibers, instanceKey(instance), immediately ? loop : Effect.delay(loop, interval))
      }

      const changes = yield* registry.changes
      yield* changes.pipe(
        Stream.runForEach((change) =>
          change._tag === "InstanceAdded"
            ? watch(change.instance, true)
            : FiberMap.remove(fibers, instanceKey(change.instance))
        ),
        Effect.forkScoped
      )

      const checkAll = Effect.forEach(registry.instances(), check, { concurrency: "unbounded", discard: true })

      // Instances present at start: probed once by checkAll (start-up waits for it), then on their interval.
      for (const instance of registry.instances()) yield* watch(instance, false)

      return { checkAll, check }
    })
  )
}
