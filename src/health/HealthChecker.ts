import { Cause, Clock, Context, Duration, Effect, Fiber, FiberSet, Layer, Queue, Random, Stream } from "effect"
import { DEFAULT_LOAD_BALANCER } from "../domain/LoadBalancer.js"
import { resolveHeaders } from "../domain/Secret.js"
import { FleetRedis } from "../fleet/FleetRedis.js"
import { makeSharedHealth } from "./SharedHealth.js"
import { Stats } from "../observability/Stats.js"
import { Timer } from "../clock/Timer.js"
import type { InstanceState } from "../instance/InstanceState.js"
import { Registry } from "../registry/Registry.js"
import { InstanceOffers } from "../integrity/InstanceOffers.js"
import { Transport } from "../transport/Transport.js"
import { ProbeError, type ProbeTarget } from "./HealthProbePlugin.js"
import { HealthProbes } from "./HealthProbes.js"
import { ProbeTimes } from "./ProbeTimes.js"

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
 * Probes each instance with its template's probe plugin every `health_check_interval` (jittered
 * ±20%, so that hundreds of instances are not probed in the same millisecond; the next probe is
 * timed from the end of the last), each probe bounded by `health_check_timeout`. The outcome goes
 * through the instance's hysteresis (`unhealthy_threshold`, `healthy_threshold`). Instances
 * registered later are watched from their registration on; removed ones are no longer probed.
 *
 * One scheduler fiber sleeps until the earliest next probe (`ProbeTimes`) and starts what is due,
 * each probe in a fiber of its own while it runs: a waiting instance costs an entry, not a fiber.
 */
export class HealthChecker extends Context.Tag("mcp-gateway/HealthChecker")<HealthChecker, HealthCheckerShape>() {
  static readonly layer: Layer.Layer<HealthChecker, never, Registry | HealthProbes | Transport | Stats | FleetRedis | Timer | InstanceOffers> = Layer.scoped(
    HealthChecker,
    Effect.gen(function*() {
      const registry = yield* Registry
      const fleet = yield* FleetRedis
      const timer = yield* Timer
      // Replicas share their verdicts (health/SharedHealth.ts): a replica starts warm.
      const shared = fleet.status() === "off" ? undefined : makeSharedHealth(fleet, registry, timer)
      if (shared !== undefined) {
        const seeded = yield* shared.seed
        if (seeded > 0) yield* Effect.logInfo(`health: ${seeded} instances start with the fleet's latest verdicts`)
      }
      const probes = yield* HealthProbes
      const transport = yield* Transport
      const stats = yield* Stats
      const offers = yield* InstanceOffers

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
          const started = timer.elapsedMs()
          const startedAt = yield* Clock.currentTimeMillis
          const outcome = yield* probe.probe(targetOf(instance)).pipe(
            Effect.timeoutFail({
              duration: settings.health_check_timeout,
              onTimeout: () =>
                new ProbeError({ message: `no answer to the health probe within ${Duration.format(settings.health_check_timeout)}` })
            }),
            Effect.either
          )
          const now = yield* Clock.currentTimeMillis
          stats.recordProbe(instance.template, instance.id, outcome._tag === "Right", timer.elapsedMs() - started)
          // What is logged is the instance's status as a whole (a failed process stays failed, whatever a probe says).
          const before = instance.status
          if (outcome._tag === "Right") {
            const ejected = instance.outlier.isEjected(now)
            instance.probeSucceeded(now, settings, startedAt)
            if (ejected && !instance.outlier.isEjected(now)) yield* Effect.logInfo("outlier ejection ended: a health probe passed")
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
        }).pipe(
          // After the verdict: a passed probe that finds the instance healthy may read its lists for drift (integrity/InstanceOffers.ts).
          Effect.tap((passed) => Effect.sync(() => offers.probed(instance, passed))),
          Effect.annotateLogs({ instance: `${instance.template}/${instance.id}` })
        )

      // Each instance's next probe time, and the probe running now, if any (by instanceKey).
      const times = new ProbeTimes()
      // `probe` marks the probe `running` belongs to, so that a stale probe's end leaves a newer one's fiber alone.
      const watched = new Map<string, { readonly instance: InstanceState; probe?: object; running?: Fiber.RuntimeFiber<void> }>()
      const running = yield* FiberSet.make<void>()
      // Wakes the scheduler when a probe is due earlier than the one it sleeps until.
      const earlier = yield* Queue.sliding<void>(1)

      /** The next probe of `key` one interval (jittered) from now; the time is kept on the instance (Retry-After uses it). */
      const scheduleNext = (key: string, instance: InstanceState) =>
        Effect.gen(function*() {
          const interval = Duration.toMillis(settingsOf(instance).health_check_interval)
          const at = (yield* Clock.currentTimeMillis) + Math.round(interval * (yield* Random.nextRange(0.8, 1.2)))
          instance.health.nextProbeAt = at
          if (times.schedule(key, at)) yield* Queue.offer(earlier, undefined)
        })

      /**
       * Runs one due probe in a fiber of its own; when it ends, the next is scheduled unless the
       * instance was let go meanwhile. (Checked here too: a large batch of due probes can yield
       * part-way, and the instance be removed and watched again before its turn.)
       */
      const start = (key: string, generation: number) => {
        const entry = watched.get(key)
        if (entry === undefined || !times.isCurrent(key, generation)) return Effect.void
        const probe = {}
        entry.probe = probe
        return check(entry.instance).pipe(
          Effect.catchAllCause((cause) => Effect.logError(`health probe ended with a defect: ${Cause.pretty(cause)}`)),
          Effect.zipRight(Effect.suspend(() => times.isCurrent(key, generation) ? scheduleNext(key, entry.instance) : Effect.void)),
          Effect.ensuring(Effect.sync(() => {
            if (entry.probe === probe) entry.probe = entry.running = undefined
          })),
          FiberSet.run(running),
          Effect.map((fiber) => {
            if (entry.probe === probe) entry.running = fiber
          })
        )
      }

      const scheduler = Effect.gen(function*() {
        for (;;) {
          for (const { generation, key } of times.popDue(yield* Clock.currentTimeMillis)) yield* start(key, generation)
          const next = times.next()
          // The clock read again: starting a large batch takes time of its own.
          const wait = next === undefined ? undefined : Math.max(0, next - (yield* Clock.currentTimeMillis))
          yield* wait === undefined ? Queue.take(earlier) : Effect.raceFirst(Effect.sleep(Duration.millis(wait)), Queue.take(earlier))
        }
      })
      yield* Effect.forkScoped(scheduler)

      /**
       * Stops probing an instance, its running probe too: awaited when the instance is removed
       * (nothing of it runs once it drains); only started when it is watched again under new
       * settings (the old probe, of an older generation, cannot reschedule; the change stream
       * need not wait for each one).
       */
      const unwatch = (key: string, awaitProbe: boolean) =>
        Effect.suspend(() => {
          const running = watched.get(key)?.running
          watched.delete(key)
          times.forget(key)
          if (running === undefined) return Effect.void
          return awaitProbe ? Fiber.interrupt(running) : Effect.asVoid(Fiber.interruptFork(running))
        })

      /** Watches an instance: probed at once (instances registered at run time), else after a first interval. */
      const watch = (instance: InstanceState, immediately: boolean) =>
        Effect.gen(function*() {
          const key = instanceKey(instance)
          yield* unwatch(key, false)
          watched.set(key, { instance })
          if (!immediately) return yield* scheduleNext(key, instance)
          times.schedule(key, yield* Clock.currentTimeMillis)
          yield* Queue.offer(earlier, undefined)
        })

      const changes = yield* registry.changes
      yield* changes.pipe(
        Stream.runForEach((change) => {
          switch (change._tag) {
            case "InstanceAdded":
              return watch(change.instance, true)
            case "InstanceRemoved":
              return unwatch(instanceKey(change.instance), true)
            case "TemplateChanged":
              // New settings (a reload): each instance's next probe is one new interval away.
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
