import { Duration } from "effect"
import { isoTime } from "../clock/Timer.js"

export interface OutlierSettings {
  readonly outlier_consecutive_failures: number
  readonly outlier_base_ejection: Duration.Duration
  readonly outlier_max_ejection: Duration.Duration
  readonly outlier_uneject_on_probe: boolean
}

/**
 * Passive outlier detection for one instance, from live traffic (the way Envoy does it):
 * `outlier_consecutive_failures` failures in a row eject the instance from balancing at once,
 * without waiting for a health probe, for `outlier_base_ejection × n` (n: how often it was
 * ejected lately), at most `outlier_max_ejection`. It comes back by itself when the time is
 * up, or (with `outlier_uneject_on_probe`, as Envoy does by default) as soon as a health probe
 * started after the ejection passes: a restarted instance serves again at its next probe, not
 * after the whole ejection. An instance that then behaves for `outlier_max_ejection` starts
 * again from n = 1. Synchronous, with `now` from the caller's Clock.
 */
export class OutlierDetector {
  consecutiveFailures = 0
  ejections = 0
  ejectedUntil: number | undefined = undefined
  /** When the current (or last) ejection began. */
  ejectedAt: number | undefined = undefined

  isEjected(now: number): boolean {
    return this.ejectedUntil !== undefined && now < this.ejectedUntil
  }

  onSuccess(now: number, settings: OutlierSettings) {
    this.consecutiveFailures = 0
    if (
      this.ejections > 0 && this.ejectedUntil !== undefined &&
      now - this.ejectedUntil >= Duration.toMillis(settings.outlier_max_ejection)
    ) {
      this.ejections = 0
    }
  }

  /**
   * A health probe that started at `probeStartedAt` passed at `now`: ends an ejection that began
   * before the probe did (a probe already under way when the instance was ejected says nothing
   * of what ejected it). The ejection count stays, so an instance that passes probes but keeps
   * failing requests is ejected for longer each time. Returns whether it ended an ejection.
   */
  onProbeSuccess(probeStartedAt: number, now: number, settings: OutlierSettings): boolean {
    if (!settings.outlier_uneject_on_probe || !this.isEjected(now) || probeStartedAt < this.ejectedAt!) return false
    this.ejectedUntil = now
    this.consecutiveFailures = 0
    return true
  }

  /**
   * Counts a failure; ejects when the count reaches the threshold and `mayEject` (the template
   * has room for another ejection). Returns the ejection's length in ms when it ejected.
   */
  onFailure(now: number, settings: OutlierSettings, mayEject: boolean): number | undefined {
    this.consecutiveFailures++
    const threshold = settings.outlier_consecutive_failures
    if (threshold === 0 || this.consecutiveFailures < threshold || this.isEjected(now) || !mayEject) return undefined
    this.ejections++
    this.consecutiveFailures = 0
    const forMs = Math.min(
      Duration.toMillis(settings.outlier_base_ejection) * this.ejections,
      Duration.toMillis(settings.outlier_max_ejection)
    )
    this.ejectedAt = now
    this.ejectedUntil = now + forMs
    return forMs
  }

  toJSON(now: number) {
    return {
      ejected: this.isEjected(now),
      ejected_until: this.isEjected(now) ? isoTime(this.ejectedUntil!) : null,
      ejections: this.ejections,
      consecutive_failures: this.consecutiveFailures
    }
  }
}
