import { Duration } from "effect"

export interface OutlierSettings {
  readonly outlier_consecutive_failures: number
  readonly outlier_base_ejection: Duration.Duration
  readonly outlier_max_ejection: Duration.Duration
}

/**
 * Passive outlier detection for one instance, from live traffic (the way Envoy does it):
 * `outlier_consecutive_failures` failures in a row eject the instance from balancing at once,
 * without waiting for a health probe, for `outlier_base_ejection × n` (n: how often it was
 * ejected lately), at most `outlier_max_ejection`. It comes back by itself when the time is
 * up; an instance that then behaves for `outlier_max_ejection` starts again from n = 1.
 * Synchronous, with `now` from the caller's Clock.
 */
export class OutlierDetector {
  consecutiveFailures = 0
  ejections = 0
  ejectedUntil: number | undefined = undefined

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
    this.ejectedUntil = now + forMs
    return forMs
  }

  toJSON(now: number) {
    return {
      ejected: this.isEjected(now),
      ejected_until: this.isEjected(now) ? new Date(this.ejectedUntil!).toISOString() : null,
      ejections: this.ejections,
      consecutive_failures: this.consecutiveFailures
    }
  }
}
