import type { FleetStatus } from "../fleet/FleetRedis.js"
import type { TemplateIntegrity } from "../integrity/ToolPins.js"
import { GATEWAY_VERSION } from "../domain/Protocol.js"
import type { ClientSessionsShape } from "../sessions/ClientSessions.js"
import type { ExposureShape } from "../exposure/Exposure.js"
import type { StatsShape } from "../observability/Stats.js"
import type { RegistryShape, TemplateState } from "../registry/Registry.js"

/**
 * The views of `/gateway/health`, `/gateway/stats` and `/mcp/{template}/health`, as functions of
 * the gateway's state and of `now` (epoch ms from the Timer): what an ejection, a breaker or an
 * uptime shows depends on the time, and the handlers pass the clock's, so tests drive every
 * figure with `TestClock`.
 */

/** Whether a new session of the template found every process slot busy lately (see InstanceState.saturated). */
const templateSaturated = (template: TemplateState, now: number) => {
  for (const i of template.instances.values()) if (i.saturated(now)) return true
  return false
}

export const templateHealth = (template: TemplateState, now: number) => {
  const instances = Array.from(template.instances.values())
  const healthy = instances.filter((i) => i.status === "healthy").length
  return {
    template_name: template.name,
    strategy: template.settings.strategy,
    total_instances: instances.length,
    healthy_instances: healthy,
    health_percentage: instances.length === 0 ? 0 : Math.round((healthy / instances.length) * 1000) / 10,
    saturated: templateSaturated(template, now),
    instances: Object.fromEntries(instances.map((i) => [i.id, i.toJSON(now)]))
  }
}

/** `/gateway/health`: `startedAt` is when the gateway's handlers were built (the clock's time). */
export const gatewayHealth = (registry: RegistryShape, fleet: FleetStatus, startedAt: number, now: number) => {
  const instances = registry.instances()
  const saturated = registry.templates().filter((t) => templateSaturated(t, now)).map((t) => t.name)
  return {
    // Degraded: the Redis the replicas share is down or does not answer in time (serving from
    // the last known registry, rate limits per replica, registrations refused; read from the
    // fleet's state, never from Redis: health answers at once whatever Redis does), or a
    // template refused new sessions lately, every process slot busy.
    status: fleet === "down" || fleet === "slow" || saturated.length > 0 ? "degraded" : "healthy",
    version: GATEWAY_VERSION,
    uptime_seconds: Math.round((now - startedAt) / 1000),
    templates: registry.templates().length,
    instances: instances.length,
    healthy_instances: instances.filter((i) => i.status === "healthy").length,
    saturated_templates: saturated
  }
}

/** `/gateway/stats`: the recorded traffic (Stats) with each instance's live state at `now`. */
/** What the status page shows of a template's tool integrity: its policy, pins, and open changes with their diffs. */
const integritySummary = (r: TemplateIntegrity) => ({
  pin: r.policy.pin,
  on_change: r.policy.on_change,
  pins: r.pins.length,
  changes: r.changes.map((c) => ({ kind: c.kind, name: c.name, change: c.change, action: c.action, diff: c.diff }))
})

export const gatewayStats = (
  services: {
    readonly stats: StatsShape
    readonly registry: RegistryShape
    readonly sessions: ClientSessionsShape
    readonly exposure: ExposureShape
    /** Each template's tool integrity (ToolPins.report), for the status page. */
    readonly integrity?: ReadonlyArray<TemplateIntegrity> | undefined
  },
  now: number
) => {
  const { exposure, registry, sessions, stats } = services
  const integrity = new Map(services.integrity?.map((r) => [r.template, r]))
  const snapshot = stats.snapshot()
  const sessionCounts = sessions.counts()
  const templates: Record<string, unknown> = { ...snapshot.templates }
  for (const t of registry.templates()) {
    const counted = snapshot.templates[t.name]
    const instances = Array.from(t.instances.values())
    const totalWeight = instances.reduce((n, i) => n + i.weight, 0)
    const served = counted?.requests ?? 0
    templates[t.name] = {
      ...(counted ?? { requests: 0, errors: 0, error_rate: 0 }),
      strategy: t.settings.strategy,
      sessions: sessionCounts.filter((c) => c.template === t.name).reduce((n, c) => n + c.count, 0),
      instances: Object.fromEntries(instances.map((i) => {
        const d = counted?.distribution[i.id]
        const requests = d?.requests ?? 0
        const errors = d?.errors ?? 0
        return [i.id, {
          requests,
          errors,
          error_rate: requests === 0 ? 0 : Math.round((errors / requests) * 10_000) / 10_000,
          // Load distribution: the share of the template's requests it served, against its share of the weight.
          share: served === 0 ? 0 : Math.round((requests / served) * 1000) / 1000,
          weight: i.weight,
          weight_share: totalWeight === 0 ? 0 : Math.round((i.weight / totalWeight) * 1000) / 1000,
          latency_ms: {
            moving_average: i.latencyMs === undefined ? null : Math.round(i.latencyMs * 100) / 100,
            ...(d?.latency_ms ?? { p50: null, p95: null, p99: null })
          },
          healthy: i.status === "healthy",
          status: i.status,
          active_requests: i.activeRequests,
          ejected: i.outlier.isEjected(now),
          circuit_breaker: i.breaker.toJSON(now).state,
          ...(i.channel === undefined ? {} : { process: i.channel.state, restarts: stats.restarts(t.name, i.id) })
        }]
      })),
      ...(integrity.has(t.name) ? { tool_integrity: integritySummary(integrity.get(t.name)!) } : {})
    }
  }
  return { ...snapshot, templates, sessions: sessionCounts.reduce((n, c) => n + c.count, 0), cache: exposure.stats() }
}
