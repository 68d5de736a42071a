import { type Backoff, backoffDelayMs } from "../domain/LoadBalancer.js"
import { isoTime } from "../clock/Timer.js"

export type BreakerState = "closed" | "open" | "half_open"

export type BreakerSettings = Backoff & { readonly failure_threshold: number }

/**
 * One instance's circuit breaker, as a synchronous state machine (it is consulted on every
 * request; `now` comes from the caller's Clock, so tests drive it with the TestClock):
 *
 *   closed ── failure_threshold failures in a row ──▶ open
 *   open ── cool-down over, a request asks ──▶ half_open (that request is the one trial)
 *   half_open ── trial succeeds ──▶ closed
 *   half_open ── trial fails ──▶ open, with a longer cool-down (exponential, capped, jittered)
 *
 * While open (and while a trial is out) every other request to the instance is refused at
 * once: balanced requests go elsewhere, a session pinned to it ends.
 */
export class CircuitBreaker {
  state: BreakerState = "closed"
  consecutiveFailures = 0
  /** Times it opened since it was last closed: the cool-down grows with them. */
  trips = 0
  openedAt: number | undefined = undefined
  nextTrialAt: number | undefined = undefined
  private trialInFlight = false

  /** Would a request pass now? (Does not take the trial: see `acquire`.) */
  allows(now: number): boolean {
    if (this.state === "closed") return true
    if (this.trialInFlight) return false
    return this.state === "half_open" || now >= this.nextTrialAt!
  }

  /** Lets one request through if it may pass; an open breaker past its cool-down lets this one be the trial. */
  acquire(now: number): boolean {
    if (this.state === "closed") return true
    if (!this.allows(now)) return false
    this.state = "half_open"
    this.trialInFlight = true
    return true
  }

  /** The request (trial or not) was answered. */
  onSuccess() {
    if (this.state === "closed" && this.consecutiveFailures === 0) return
    this.state = "closed"
    this.consecutiveFailures = 0
    this.trips = 0
    this.openedAt = undefined
    this.nextTrialAt = undefined
    this.trialInFlight = false
  }

  /**
   * The request failed for a reason that is the instance's. Returns true when this failure
   * opened the breaker (for the log).
   */
  onFailure(now: number, settings: BreakerSettings, random: number): boolean {
    this.consecutiveFailures++
    if (settings.failure_threshold === 0) return false
    if (this.state === "half_open" || (this.state === "closed" && this.consecutiveFailures >= settings.failure_threshold)) {
      this.trips++
      this.state = "open"
      this.trialInFlight = false
      this.openedAt = now
      this.nextTrialAt = now + backoffDelayMs(settings, this.trips, random)
      return true
    }
    return false
  }

  /** The request ended without saying anything of the instance (the client left, or sent nonsense). */
  onNeutral() {
    // A trial that proved nothing frees the slot: the next request becomes the trial.
    this.trialInFlight = false
  }

  /** What `/gateway/stats` and friends show. */
  toJSON(now: number) {
    return {
      state: this.state === "open" && now >= this.nextTrialAt! ? "half_open" : this.state,
      consecutive_failures: this.consecutiveFailures,
      trips: this.trips,
      opened_at: this.openedAt === undefined ? null : isoTime(this.openedAt),
      next_trial_at: this.state === "open" ? isoTime(this.nextTrialAt!) : null
    }
  }
}
