import * as MetricState from "effect/MetricState"
import type { FleetStatus } from "../fleet/FleetRedis.js"
import type { ClientSessionsShape } from "../sessions/ClientSessions.js"
import type { RegistryShape } from "../registry/Registry.js"
import type { GatewayMetricsShape } from "../observability/GatewayMetrics.js"
import { toPrometheusText } from "../observability/PrometheusText.js"

const STATUSES = ["unknown", "healthy", "unhealthy", "failed"] as const
const BREAKER_STATES = ["closed", "open", "half_open"] as const
const REDIS_STATES = ["ok", "slow", "down"] as const

/**
 * The Prometheus text of `/metrics`: the counters and histograms as recorded, and the gauges of
 * live state (in flight, health, ejection, breaker, sessions) set now from the registry and the
 * sessions, so the hot path updates no gauge. `now` (epoch ms, from the Timer) decides what an
 * ejection or a breaker shows. Gauge series of instances and templates that are
 * gone are left out (a removed instance must not report its last state for ever).
 */
export const scrapeMetrics = (M: GatewayMetricsShape, registry: RegistryShape, sessions: ClientSessionsShape, now: number, fleet: FleetStatus = "off"): string => {
  const live = new Set<string>()
  const liveTemplates = new Set<string>()
  for (const t of registry.templates()) {
    liveTemplates.add(t.name)
    for (const i of t.instances.values()) {
      live.add(`${t.name}\u0000${i.id}`)
      const labels = { template: t.name, instance: i.id }
      M.inflight(labels).update(i.activeRequests)
      M.healthy(labels).update(i.status === "healthy" ? 1 : 0)
      M.ejected(labels).update(i.outlier.isEjected(now) ? 1 : 0)
      for (const status of STATUSES) M.status({ ...labels, status }).update(i.status === status ? 1 : 0)
      const breaker = i.breaker.toJSON(now).state
      for (const state of BREAKER_STATES) M.breakerState({ ...labels, state }).update(breaker === state ? 1 : 0)
    }
  }
  const open = new Set<string>()
  for (const c of sessions.counts()) {
    open.add(`${c.template}\u0000${c.protocolVersion}`)
    M.sessions({ template: c.template, protocol_version: c.protocolVersion }).update(c.count)
  }
  M.up({}).update(1)
  // (Only for a gateway with a Redis: one on its own has no such series.)
  if (fleet !== "off") for (const state of REDIS_STATES) M.redis({ state }).update(fleet === state ? 1 : 0)
  return toPrometheusText(M.snapshot(), (pair) => {
    if (!MetricState.isGaugeState(pair.metricState)) return true
    const tag = (key: string) => pair.metricKey.tags.find((t) => t.key === key)?.value
    const template = tag("template")
    const instance = tag("instance")
    if (instance !== undefined) return live.has(`${template}\u0000${instance}`)
    if (pair.metricKey.name === "mcp_gateway_mcp_sessions_open") {
      // Sessions that ended: their series goes (a template without sessions has none).
      return open.has(`${template}\u0000${tag("protocol_version")}`)
    }
    return template === undefined || liveTemplates.has(template)
  })
}
