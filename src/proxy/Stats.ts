import { Context, Layer } from "effect"

/** Latency samples kept for percentiles: the most recent ones, in a ring. */
const WINDOW = 4096

class LatencyWindow {
  private readonly samples = new Float64Array(WINDOW)
  private size = 0
  private next = 0
  count = 0
  errors = 0
  private totalMs = 0

  add(ms: number, ok: boolean) {
    this.samples[this.next] = ms
    this.next = (this.next + 1) % WINDOW
    if (this.size < WINDOW) this.size++
    this.count++
    this.totalMs += ms
    if (!ok) this.errors++
  }

  summary() {
    const sorted = Array.from(this.samples.subarray(0, this.size)).sort((a, b) => a - b)
    const at = (q: number) => sorted.length === 0 ? null : round(sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!)
    return {
      requests: this.count,
      errors: this.errors,
      error_rate: this.count === 0 ? 0 : round(this.errors / this.count, 4),
      latency_ms: {
        average: this.count === 0 ? null : round(this.totalMs / this.count),
        p50: at(0.5),
        p95: at(0.95),
        p99: at(0.99)
      }
    }
  }
}

const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits

export interface RequestRecord {
  readonly template: string
  readonly strategy: string
  /** The instance that answered or failed last; undefined when none was tried. */
  readonly instanceId: string | undefined
  readonly latencyMs: number
  readonly ok: boolean
}

export interface StatsShape {
  readonly recordRequest: (record: RequestRecord) => void
  readonly recordProbe: (ok: boolean, durationMs: number) => void
  readonly snapshot: () => StatsSnapshot
}

export interface StatsSnapshot {
  readonly started_at: string
  readonly requests: ReturnType<LatencyWindow["summary"]>
  readonly templates: Record<string, ReturnType<LatencyWindow["summary"]> & {
    readonly distribution: Record<string, { readonly requests: number; readonly errors: number }>
  }>
  readonly strategies: Record<string, { readonly requests: number; readonly errors: number }>
  readonly health_checker: { readonly probes: number; readonly failures: number; readonly average_duration_ms: number | null }
}

/**
 * Counters behind `/gateway/stats`. Synchronous and allocation-light: recording sits on
 * every request's path. Latencies are in ms; percentiles cover the latest 4096 requests.
 */
export class Stats extends Context.Tag("mcp-gateway/Stats")<Stats, StatsShape>() {
  static readonly layer: Layer.Layer<Stats> = Layer.sync(Stats, () => {
    const startedAt = new Date()
    const overall = new LatencyWindow()
    const templates = new Map<string, { window: LatencyWindow; instances: Map<string, { requests: number; errors: number }> }>()
    const strategies = new Map<string, { requests: number; errors: number }>()
    const probes = { probes: 0, failures: 0, totalMs: 0 }

    const count = (map: Map<string, { requests: number; errors: number }>, key: string, ok: boolean) => {
      let c = map.get(key)
      if (c === undefined) map.set(key, c = { requests: 0, errors: 0 })
      c.requests++
      if (!ok) c.errors++
    }

    return {
      recordRequest: (r) => {
        overall.add(r.latencyMs, r.ok)
        let t = templates.get(r.template)
        if (t === undefined) templates.set(r.template, t = { window: new LatencyWindow(), instances: new Map() })
        t.window.add(r.latencyMs, r.ok)
        if (r.instanceId !== undefined) count(t.instances, r.instanceId, r.ok)
        count(strategies, r.strategy, r.ok)
      },
      recordProbe: (ok, durationMs) => {
        probes.probes++
        probes.totalMs += durationMs
        if (!ok) probes.failures++
      },
      snapshot: () => ({
        started_at: startedAt.toISOString(),
        requests: overall.summary(),
        templates: Object.fromEntries(
          Array.from(templates, ([name, t]) => [name, { ...t.window.summary(), distribution: Object.fromEntries(t.instances) }])
        ),
        strategies: Object.fromEntries(strategies),
        health_checker: {
          probes: probes.probes,
          failures: probes.failures,
          average_duration_ms: probes.probes === 0 ? null : round(probes.totalMs / probes.probes)
        }
      })
    }
  })
}
