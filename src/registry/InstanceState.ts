import type { InstanceDefinition } from "../domain/Instance.js"
import type { HealthStatus, InstanceView } from "../domain/InstanceView.js"

/** Weight of the newest sample in the latency and success-rate averages. */
const EWMA_ALPHA = 0.2

/**
 * The live state of one instance. Plain mutable fields on purpose: they change on every
 * request, the runtime is single-threaded, and only the Registry, the Dispatcher and the
 * HealthChecker write them (strategies get the read-only InstanceView).
 */
export class InstanceState implements InstanceView {
  status: HealthStatus = "unknown"
  activeRequests = 0
  latencyMs: number | undefined = undefined
  successRate = 1
  consecutiveFailures = 0
  lastCheckedAt: Date | undefined = undefined
  lastError: string | undefined = undefined
  readonly registeredAt = new Date()

  constructor(readonly definition: InstanceDefinition) {}

  get id() {
    return this.definition.id
  }
  get template() {
    return this.definition.template
  }
  get weight() {
    return this.definition.weight
  }

  /** Eligible for traffic: healthy, or not yet probed (optimistic until the first probe says otherwise). */
  get routable() {
    return this.status !== "unhealthy"
  }

  recordSuccess(latencyMs: number) {
    this.latencyMs = this.latencyMs === undefined ? latencyMs : this.latencyMs + EWMA_ALPHA * (latencyMs - this.latencyMs)
    this.successRate += EWMA_ALPHA * (1 - this.successRate)
  }

  recordFailure() {
    this.successRate += EWMA_ALPHA * (0 - this.successRate)
  }

  markHealthy() {
    this.status = "healthy"
    this.consecutiveFailures = 0
    this.lastError = undefined
    this.lastCheckedAt = new Date()
  }

  markUnhealthy(reason: string) {
    this.status = "unhealthy"
    this.consecutiveFailures += 1
    this.lastError = reason
    this.lastCheckedAt = new Date()
  }

  /** The instance as `/gateway/registry` and `/mcp/{t}/health` show it. */
  toJSON() {
    const d = this.definition
    return {
      id: d.id,
      transport: d.transport,
      ...(d.transport === "stdio" ? { command: d.command, working_dir: d.working_dir } : { endpoint: d.endpoint }),
      weight: d.weight,
      source: d.source,
      healthy: this.status === "healthy",
      status: this.status,
      active_requests: this.activeRequests,
      latency_ms: this.latencyMs === undefined ? null : Math.round(this.latencyMs * 100) / 100,
      success_rate: Math.round(this.successRate * 1000) / 1000,
      consecutive_failures: this.consecutiveFailures,
      last_checked_at: this.lastCheckedAt?.toISOString() ?? null,
      last_error: this.lastError ?? null,
      registered_at: this.registeredAt.toISOString(),
      ...(d.metadata ? { metadata: d.metadata } : {})
    }
  }
}
