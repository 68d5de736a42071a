import { Clock, Context, Duration, Effect, FiberMap, Layer, Schedule, Stream } from "effect"
import { DEFAULT_LOAD_BALANCER } from "../domain/LoadBalancer.js"
import { resolveHeaders } from "../domain/Secret.js"
import { FleetRedis } from "../fleet/FleetRedis.js"
import { makeSharedHealth } from "../fleet/SharedHealth.js"
import { Stats } from "../proxy/Stats.js"
import type { InstanceState } from "../registry/InstanceState.js"
import { Registry } from "../registry/Registry.js"
import { Transport } from "../transport/Transport.js"
import { ProbeError, type ProbeTarget } from "./HealthProbePlugin.js"
import { HealthProbes } from "./HealthProbes.js"

/** Probes of the first round (start-up) that run at once. */
const FIRST_ROUND_CONCURRENCY = 128

export interface HealthCheckerShape {
  /** Probes every instance once, all at once: start-up runs this before it serves. */
  readonly checkAll: Effect.Effect<void>
  /** Probes one instance now and records the outcome; true when the probe passed. */
  readonly check: (instance: InstanceState) => Effect.Effect<boolean>
}

const instanceKey = (instance: InstanceState) => `${instance.template}\u0000${instance.id}`

/**
 * One fiber per instance (in a FiberMap) probing it with its template's probe plugin every
 * `health_check_interval` (jittered ±20%, so that hundreds of instances are not probed in the
 * same millisecond), each probe bounded by `health_check_timeout`. The outcome goes through the
 * instance's hysteresis (`unhealthy_threshold`, `healthy_threshold`). Instances registered later
 * are watched from their registration on; removed ones are no longer probed.
 */
export class HealthChecker extends Context.Tag("mcp-gateway/HealthChecker")<HealthChecker, HealthCheckerShape>() {
  static readonly layer: Layer.Layer<HealthChecker, never, Registry | HealthProbes | Transport | Stats | FleetRedis> = Layer.scoped(
    HealthChecker,
    Effect.gen(function*() {
      const registry = yield* Registry
      const fleet = yield* FleetRedis
      // Replicas share their verdicts (fleet/SharedHealth.ts): a replica starts warm.
      const shared = fleet.status() === "off" ? undefined : makeSharedHealth(fleet, registry)
      if (shared !== undefined) {
        const seeded = yield* shared.seed
        if (seeded > 0) yield* Effect.logInfo(`health: ${seeded} instances start with the fleet's latest verdicts`)
      }
      const probes = yield* HealthProbes
      const transport = yield* Transport
      const stats = yield* Stats
      const fibers = yield* FiberMap.make<string>()

      const settingsOf = (instance: InstanceState) => registry.template(instance.template)?.settings ?? DEFAULT_LOAD_BALANCER

      const targetOf = (instance: InstanceState): ProbeTarget => ({
        instance: instance.definition,
        headers: instance.definition.transport === "stdio" ? {} : resolveHeaders(instance.definition.headers),
        request: (method, params) =>
          transport.request(instance.definition, method, params).pipe(
            Effect.mapError((e) => new ProbeError({ message: e.message })),
            Effect.flatMap((response) =>
              "error" in response
                ? Effect.fail(new ProbeError({ message: `${method} answered with an error: ${response.error.message}` }))
                : Effect.succeed(response.result)
            )
          )
      })

      const check = (instance: InstanceState) =>
        Effect.gen(function*() {
          const settings = settingsOf(instance)
          const { value: probe } = yield* probes.forTemplate(instance.template, settings).pipe(
            // Probes were built when the template was loaded or registered; failing now is a defect.
            Effect.orDie
          )
          const started = performance.now()
          const outcome = yield* probe.probe(targetOf(instance)).pipe(
            Effect.timeoutFail({
              duration: settings.health_check_timeout,
              onTimeout: () =>
                new ProbeError({ message: `no answer to the health probe within ${Duration.format(settings.health_check_timeout)}` })
            }),
            Effect.either
          )
          const now = yield* Clock.currentTimeMillis
          stats.recordProbe(instance.template, instance.id, outcome._tag === "Right", performance.now() - started)
          // What is logged is the instance's status as a whole (a failed process stays failed, whatever a probe says).
          const before = instance.status
          if (outcome._tag === "Right") {
            instance.probeSucceeded(now, settings)
            shared?.publish(instance)
            if (instance.status !== before && instance.status === "healthy") yield* Effect.logInfo("instance is healthy")
            return true
          }
          const reason = outcome.left.message
          instance.probeFailed(now, reason, settings)
          shared?.publish(instance)
          if (instance.status !== before && instance.status === "unhealthy") yield* Effect.logWarning(`instance is unhealthy: ${reason}`)
          else {
            yield* Effect.logDebug(
              instance.status === "healthy"
                ? `probe failed (${instance.health.consecutiveFailures} of ${settings.unhealthy_threshold} before unhealthy): ${reason}`
                : `probe failed, still ${instance.status}: ${reason}`
            )
          }
          return false
        }).pipe(Effect.annotateLogs({ instance: `${instance.template}/${instance.id}` }))

      /** Every interval, jittered; the next probe's time is kept on the instance (Retry-After uses it). */
      const probeSchedule = (instance: InstanceState) =>
        Schedule.spaced(settingsOf(instance).health_check_interval).pipe(
          Schedule.jittered,
          Schedule.modifyDelayEffect((_, delay) =>
            Effect.map(Clock.currentTimeMillis, (now) => {
              instance.health.nextProbeAt = now + Duration.toMillis(delay)
              return delay
            })
          )
        )

      /** The probe loop of one instance: at once for instances registered at run time, else after a first interval. */
      const watch = (instance: InstanceState, immediately: boolean) =>
        FiberMap.run(
          fibers,
          instanceKey(instance),
          immediately ? Effect.repeat(check(instance), probeSchedule(instance)) : Effect.schedule(check(instance), probeSchedule(instance))
        )

      const changes = yield* registry.changes
      yield* changes.pipe(
        Stream.runForEach((change) => {
          switch (change._tag) {
            case "InstanceAdded":
              return watch(change.instance, true)
            case "InstanceRemoved":
              return FiberMap.remove(fibers, instanceKey(change.instance))
            case "TemplateChanged":
              // New settings (a reload): the loops start again on the new interval.
              return Effect.forEach(change.template.instances.values(), (instance) => watch(instance, false), { discard: true })
          }
        }),
        Effect.forkScoped
      )

      // At most FIRST_ROUND_CONCURRENCY probes at once: 3,000 instances probed all at once (a probe
      // is up to four exchanges: discover, initialize, initialized, ping) swamped the gateway and
      // their servers, so most probes ran out of time and start-up marked healthy instances
      // unhealthy. (Bounded, the first round of 1,000 templates × 3 took 13 s and failed none.)
      // (Read when it runs: discovery adds instances after this layer is built.)
      const checkAll = Effect.suspend(() => Effect.forEach(registry.instances(), check, { concurrency: FIRST_ROUND_CONCURRENCY, discard: true }))

      // Instances present at start: probed once by checkAll (start-up waits for it), then on their interval.
      for (const instance of registry.instances()) yield* watch(instance, false)

      return { checkAll, check }
    })
  )
}
