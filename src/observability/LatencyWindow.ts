/**
 * The latencies of the last `maxAgeMs` (at most `capacity` of them, the newest kept), and their
 * nearest-rank percentiles: p95 of [1 ×9, 100] is 100. Effect's summary metric was tried here
 * first; it rounds ranks down, so a slow request in ten never reached p95 or p99, which is what
 * an operator looks at those for.
 *
 * Recording is O(1) into two preallocated rings; percentiles sort a copy when read (the stats
 * endpoint, not the request path).
 */
export interface LatencyWindow {
  readonly record: (latencyMs: number, now: number) => void
  /** The percentiles (by nearest rank) of the samples not older than `maxAgeMs` at `now`; null without samples. */
  readonly percentiles: (quantiles: ReadonlyArray<number>, now: number) => ReadonlyArray<number | null>
}

export const makeLatencyWindow = (options: { readonly capacity: number; readonly maxAgeMs: number }): LatencyWindow => {
  const values = new Float64Array(options.capacity)
  const times = new Float64Array(options.capacity)
  let next = 0
  let size = 0
  return {
    record: (latencyMs, now) => {
      values[next] = latencyMs
      times[next] = now
      next = (next + 1) % options.capacity
      if (size < options.capacity) size++
    },
    percentiles: (quantiles, now) => {
      const recent: Array<number> = []
      for (let i = 0; i < size; i++) if (now - times[i]! <= options.maxAgeMs) recent.push(values[i]!)
      if (recent.length === 0) return quantiles.map(() => null)
      recent.sort((a, b) => a - b)
      return quantiles.map((q) => recent[Math.min(recent.length, Math.max(1, Math.ceil(q * recent.length))) - 1]!)
    }
  }
}
