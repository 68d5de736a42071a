import { Duration, Effect } from "effect"
import type { InstanceState } from "../instance/InstanceState.js"
import type { RegistryShape } from "../registry/Registry.js"
import type { TimerShape } from "../clock/Timer.js"
import { type FleetRedisShape, isRedisTimeout } from "../fleet/FleetRedis.js"

/**
 * Probe verdicts shared by the replicas: each replica probes every instance itself and writes
 * what it found (status, when, why) to one Redis hash; a replica that starts reads it first, so
 * it starts warm (an instance the fleet knows is down is not tried before this replica's own
 * probe says otherwise). Only verdicts fresher than three probe intervals count. Passive
 * evidence (outlier ejections, breakers) stays each replica's own: it is about its own traffic.
 */
export const makeSharedHealth = (fleet: FleetRedisShape, registry: RegistryShape, timer: TimerShape) => {
  const key = `${fleet.prefix}health`
  const field = (instance: InstanceState) => `${instance.template}/${instance.id}`

  /** After a probe: this replica's verdict, for the others (a Redis that is down is simply not told). */
  const publish = (instance: InstanceState) => {
    if (fleet.status() !== "ok" || instance.health.status === "unknown") return
    const record = JSON.stringify({ status: instance.health.status, at: instance.health.lastCheckedAt ?? timer.now(), error: instance.health.lastError })
    void fleet.command!.hset(key, field(instance), record).catch((e: unknown) => isRedisTimeout(e) && fleet.reportSlow())
  }

  /** At start: the fleet's recent verdicts, for the instances this replica has not probed yet. */
  const seed = Effect.gen(function*() {
    if (fleet.status() !== "ok") return 0
    const records = yield* Effect.tryPromise(() => fleet.command!.hgetall(key)).pipe(Effect.orElseSucceed(() => ({} as Record<string, string>)))
    const now = timer.now()
    let seeded = 0
    for (const instance of registry.instances()) {
      const text = records[field(instance)]
      if (text === undefined) continue
      try {
        const record = JSON.parse(text) as { status: string; at: number; error?: string }
        const interval = Duration.toMillis(registry.template(instance.template)?.settings.health_check_interval ?? Duration.seconds(30))
        if ((record.status !== "healthy" && record.status !== "unhealthy") || now - record.at > 3 * interval) continue
        instance.health.seed(record.status, record.at, record.error)
        seeded++
      } catch {
        // a record of another version: this replica's own probe will do
      }
    }
    return seeded
  })

  return { publish, seed }
}
