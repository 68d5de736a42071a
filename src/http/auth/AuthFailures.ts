import { Duration, Effect } from "effect"
import { type AuthFailureSettings, DEFAULT_AUTH_FAILURES } from "../../config/GatewayConfig.js"
import type { RunEffect } from "../raw.js"

/** What one failure was, for its audit line. */
export type FailureDetail = Readonly<Record<string, string>>

/** The failures of one address in one interval that were not logged one by one. */
export interface FailureSummary {
  readonly address: string
  /** Failures after the first (which was logged when it happened). */
  readonly more: number
  /** Requests refused with 429 meanwhile (none are authenticated). */
  readonly refused: number
  /** Each field of the failures' details (who, what, reason): its distinct values, at most `MAX_DISTINCT`, comma-separated. */
  readonly seen: FailureDetail
}

/** Distinct values kept per detail field in an interval (an attacker chooses them: bounded). */
export const MAX_DISTINCT = 5

export interface AuthFailureLimit {
  /** Failures an address may have in one interval; past them its requests are refused until the interval ends. */
  readonly maxFailures: number
  readonly intervalMs: number
  /** Addresses followed at once (the oldest is forgotten first). */
  readonly maxAddresses: number
}

interface Window {
  readonly start: number
  failures: number
  refused: number
  /** Distinct values per field of the failures after the first (the first was logged whole). */
  readonly seen: Map<string, Set<string>>
  /** Whether some field had more distinct values than were kept. */
  more: boolean
}

/**
 * Failed authentications per client address, in fixed intervals that start at an address's first
 * failure: what rate limits credential floods and keeps their audit log bounded. Past
 * `maxFailures` failures in an interval, an address's requests to authenticated routes are
 * refused (429) until the interval ends, without checking their credentials. The first failure
 * of an interval is logged at once; the rest of it comes out as one summary line with a count
 * when the interval ends (`sweep`), or when the address fails again after it. Synchronous, with
 * `now` from the caller's Clock; at most `maxAddresses` windows are held.
 */
export class AuthFailures {
  private readonly windows = new Map<string, Window>()

  constructor(private readonly limit: AuthFailureLimit) {}

  /** Seconds until `address` may try again, when it is over the limit now (the refusal is counted); else undefined. */
  retryAfterSeconds(address: string, now: number): number | undefined {
    const window = this.windows.get(address)
    if (window === undefined || window.failures < this.limit.maxFailures) return undefined
    const end = window.start + this.limit.intervalMs
    if (now >= end) return undefined
    window.refused++
    return Math.max(1, Math.ceil((end - now) / 1000))
  }

  /**
   * Counts a failure of `address`. `first`: it opened an interval (log it now); `ended`: the
   * summary of the address's previous interval, which this failure found over.
   */
  fail(address: string, now: number, detail: FailureDetail): { readonly first: boolean; readonly ended: FailureSummary | undefined } {
    const window = this.windows.get(address)
    if (window !== undefined && now < window.start + this.limit.intervalMs) {
      window.failures++
      for (const field in detail) {
        let values = window.seen.get(field)
        if (values === undefined) window.seen.set(field, values = new Set())
        if (values.size < MAX_DISTINCT) values.add(detail[field]!)
        else if (!values.has(detail[field]!)) window.more = true
      }
      return { first: false, ended: undefined }
    }
    let ended: FailureSummary | undefined
    if (window !== undefined) {
      this.windows.delete(address)
      ended = summaryOf(address, window)
    } else if (this.windows.size >= this.limit.maxAddresses) {
      // Full: the oldest address is forgotten (its failures so far were logged, at least the first).
      const oldest = this.windows.keys().next().value!
      this.windows.delete(oldest)
    }
    this.windows.set(address, { start: now, failures: 1, refused: 0, seen: new Map(), more: false })
    return { first: true, ended }
  }

  /** The intervals over by `now`, forgotten, with the summaries of those that had more than their first failure. */
  sweep(now: number): Array<FailureSummary> {
    const summaries: Array<FailureSummary> = []
    for (const [address, window] of this.windows) {
      if (now < window.start + this.limit.intervalMs) continue
      this.windows.delete(address)
      const summary = summaryOf(address, window)
      if (summary !== undefined) summaries.push(summary)
    }
    return summaries
  }

  /** Every interval, over or not (at shutdown). */
  drain(): Array<FailureSummary> {
    return this.sweep(Number.POSITIVE_INFINITY)
  }

  get size(): number {
    return this.windows.size
  }
}

const summaryOf = (address: string, window: Window): FailureSummary | undefined => {
  if (window.failures <= 1 && window.refused === 0) return undefined
  const seen: Record<string, string> = {}
  for (const [field, values] of window.seen) seen[field] = [...values].join(", ") + (window.more && values.size === MAX_DISTINCT ? ", ..." : "")
  return { address, more: window.failures - 1, refused: window.refused, seen }
}

/** The audit events the guard counts: failed authentications (rate limited) and refused scopes (only aggregated). */
export type FailureEvent = "authentication_failed" | "forbidden"

/**
 * The guard's failure log and limit: one `AuthFailures` per event, on the Clock, their intervals
 * summed up by a fiber of the caller's scope every interval, and what is left at its end.
 */
export const makeFailureAudit = (settings: AuthFailureSettings | undefined) =>
  Effect.gen(function*() {
    const { interval, maxAddresses, maxFailures } = settings ?? DEFAULT_AUTH_FAILURES
    const intervalMs = Duration.toMillis(interval)
    const counters: Record<FailureEvent, AuthFailures> = {
      authentication_failed: new AuthFailures({ maxFailures, intervalMs, maxAddresses }),
      forbidden: new AuthFailures({ maxFailures: Number.POSITIVE_INFINITY, intervalMs, maxAddresses })
    }
    const clock = yield* Effect.clock
    const line = (event: FailureEvent, fields: FailureDetail) =>
      Effect.logWarning(`audit: ${event}`).pipe(Effect.annotateLogs({ audit: event, ...fields }))
    const summaryLine = (event: FailureEvent, s: FailureSummary) =>
      Effect.logWarning(
        `audit: ${event}: ${s.more} more from ${s.address} within ${Duration.format(interval)}` +
          (s.refused > 0 ? `, ${s.refused} requests refused (429)` : "")
      ).pipe(Effect.annotateLogs({ audit: event, ...s.seen, from: s.address, count: String(s.more), refused: String(s.refused) }))
    const logSummaries = (take: (counter: AuthFailures) => Array<FailureSummary>) =>
      Effect.suspend(() =>
        Effect.forEach(
          (["authentication_failed", "forbidden"] as const).flatMap((event) => take(counters[event]).map((s) => summaryLine(event, s))),
          (log) => log,
          { discard: true }
        )
      )
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(Effect.sleep(interval), logSummaries((c) => c.sweep(clock.unsafeCurrentTimeMillis())))))
    yield* Effect.addFinalizer(() => logSummaries((c) => c.drain()))
    return {
      /** Seconds until `address` may try to authenticate again, when it is over the limit now. */
      retryAfterSeconds: (address: string) => counters.authentication_failed.retryAfterSeconds(address, clock.unsafeCurrentTimeMillis()),
      /** One failure of `address`: logged when it opens an interval (with the summary of the interval it closes), else counted. */
      failed: (run: RunEffect, event: FailureEvent, address: string, detail: FailureDetail) => {
        const { ended, first } = counters[event].fail(address, clock.unsafeCurrentTimeMillis(), detail)
        if (ended !== undefined) void run(summaryLine(event, ended))
        if (first) void run(line(event, { ...detail, from: address }))
      }
    }
  })
