export type ProbeStatus = "unknown" | "healthy" | "unhealthy"

export interface HysteresisSettings {
  readonly unhealthy_threshold: number
  readonly healthy_threshold: number
}

/**
 * What health probes say of one instance, with hysteresis so that one lost probe does not
 * flap an instance out of rotation: a healthy instance turns unhealthy after
 * `unhealthy_threshold` failed probes in a row, an unhealthy one healthy after
 * `healthy_threshold` successes in a row. The first probe of an instance (status `unknown`)
 * decides at once either way: there is nothing yet to be steady about.
 */
export class ActiveHealth {
  status: ProbeStatus = "unknown"
  consecutiveFailures = 0
  consecutiveSuccesses = 0
  lastCheckedAt: number | undefined = undefined
  lastError: string | undefined = undefined
  /** When the health checker will probe next (for Retry-After); undefined when no probe is scheduled. */
  nextProbeAt: number | undefined = undefined

  /** Returns the new status when this probe changed it. */
  succeeded(now: number, settings: HysteresisSettings): ProbeStatus | undefined {
    this.lastCheckedAt = now
    this.consecutiveFailures = 0
    this.consecutiveSuccesses++
    if (this.status === "healthy") return undefined
    if (this.status === "unknown" || this.consecutiveSuccesses >= settings.healthy_threshold) return this.set("healthy")
    return undefined
  }

  /** Returns the new status when this probe changed it. */
  failed(now: number, reason: string, settings: HysteresisSettings): ProbeStatus | undefined {
    this.lastCheckedAt = now
    this.lastError = reason
    this.consecutiveSuccesses = 0
    this.consecutiveFailures++
    if (this.status === "unhealthy") return undefined
    if (this.status === "unknown" || this.consecutiveFailures >= settings.unhealthy_threshold) return this.set("unhealthy")
    return undefined
  }

  /**
   * What another replica's probes found lately (a replica starting warm): taken only while this
   * replica has no verdict of its own; its own first probe decides again.
   */
  seed(status: "healthy" | "unhealthy", checkedAt: number, error: string | undefined) {
    if (this.status !== "unknown") return
    this.status = status
    this.lastCheckedAt = checkedAt
    this.lastError = status === "healthy" ? undefined : error
  }

  /** Evidence as good as a probe, outside the probe schedule (a restarted process answered `initialize`). */
  markHealthy(now: number) {
    this.lastCheckedAt = now
    this.consecutiveFailures = 0
    this.set("healthy")
  }

  private set(status: ProbeStatus): ProbeStatus {
    this.status = status
    if (status === "healthy") this.lastError = undefined
    return status
  }
}
