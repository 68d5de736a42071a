import type { RequestDeadline } from "../transport/Connection.js"
import type { TimerShape } from "../clock/Timer.js"

/**
 * The deadline of one request, across its attempts (failovers share it). It expires `timeout`
 * after the start; with `resetsOnProgress`, each progress report from the backend starts the
 * `timeout` again, but never past `max` after the start: a long tool that says it is working
 * is not cut off by the per-hop timeout, and none runs for ever.
 */
export class Deadline implements RequestDeadline {
  private expiresAt: number
  private readonly cap: number
  private cancelTimer: (() => void) | undefined
  private onExpire: (() => void) | undefined

  constructor(
    private readonly timer: TimerShape,
    startedAt: number,
    readonly timeoutMs: number,
    maxMs: number,
    private readonly resetsOnProgress: boolean
  ) {
    this.cap = startedAt + Math.max(timeoutMs, maxMs)
    this.expiresAt = startedAt + timeoutMs
  }

  arm(onExpire: () => void) {
    this.disarm()
    this.onExpire = onExpire
    this.wait()
  }

  disarm() {
    this.cancelTimer?.()
    this.cancelTimer = undefined
    this.onExpire = undefined
  }

  /** The backend reported progress on the request. */
  progress() {
    // Only the expiry moves; the armed timer finds out when it fires (no timer churn per report).
    if (this.resetsOnProgress) this.expiresAt = Math.min(this.timer.now() + this.timeoutMs, this.cap)
  }

  remainingMs() {
    return this.expiresAt - this.timer.now()
  }

  private wait() {
    const left = this.remainingMs()
    if (left <= 0) return this.fire()
    this.cancelTimer = this.timer.schedule(left, () => {
      this.cancelTimer = undefined
      if (this.remainingMs() > 0) this.wait()
      else this.fire()
    })
  }

  private fire() {
    const onExpire = this.onExpire
    this.onExpire = undefined
    onExpire?.()
  }
}
