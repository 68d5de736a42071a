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
