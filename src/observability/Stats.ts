import { Context, Effect, Layer } from "effect"
import { GatewayMetrics, type GatewayMetricsShape } from "./GatewayMetrics.js"
import { type LatencyWindow, makeLatencyWindow } from "./LatencyWindow.js"
import { operationLabel } from "./metricLabels.js"
import { isoTime, Timer, type TimerShape } from "../clock/Timer.js"

export interface RequestRecord {
  readonly template: string
  /** The MCP method (`tools/call`), or `initialize` for opening a session. */
  readonly operation: string
  readonly strategy: string
  /** The instance that answered or failed last; undefined when none was tried. */
  readonly instanceId: string | undefined
  readonly latencyMs: number
  /** `ok`, or the kind of failure (`mcp_error`, `upstream_timeout`, ...). */
  readonly outcome: string
}

export interface Counted {
  readonly requests: number
  readonly errors: number
}

export interface Percentiles {
  readonly p50: number | null
  readonly p95: number | null
  readonly p99: number | null
}

export interface StatsShape {
  /** A request ended (one per request, retries included). */
  readonly recordRequest: (record: RequestRecord) => void
  /** One attempt's backend call ended. */
  readonly recordAttempt: (template: string, instanceId: string, latencyMs: number) => void
  /** A request moved on from an instance that failed it. */
  readonly recordRetry: (template: string, fromInstanceId: string) => void
  readonly recordEjection: (template: string, instanceId: string) => void
  readonly recordBreakerOpened: (template: string, instanceId: string) => void
  readonly recordProbe: (template: string, instanceId: string, ok: boolean, durationMs: number) => void
  readonly recordRestart: (template: string, instanceId: string) => void
  /** How often an instance's process or stream was restarted. */
  readonly restarts: (template: string, instanceId: string) => number
  readonly recordRateLimited: (limit: "client" | "template" | "auth_failures", template: string | undefined) => void
  readonly recordAuthFailure: (status: 401 | 403) => void
  /** A new MCP session refused: `slots_busy`, every process slot of the template held by a session in use. */
  readonly recordSessionRefused: (template: string, reason: "slots_busy") => void
  /** A session with a process of its own ended by the gateway: `idle` (session_process_idle_timeout), `room` (for a newcomer). */
  readonly recordSessionEnded: (template: string, reason: "idle" | "room") => void
  readonly snapshot: () => StatsSnapshot
}

export interface StatsSnapshot {
  readonly started_at: string
  readonly requests: Counted & { readonly error_rate: number; readonly latency_ms: Percentiles & { readonly average: number | null } }
  readonly templates: Record<string, Counted & {
    readonly error_rate: number
    readonly latency_ms: Percentiles & { readonly average: number | null }
    readonly distribution: Record<string, Counted & { readonly latency_ms: Percentiles }>
  }>
  readonly strategies: Record<string, Counted>
  readonly health_checker: { readonly probes: number; readonly failures: number; readonly average_duration_ms: number | null }
}

const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits

/**
 * Where every number about traffic is recorded, once: into the gateway's Effect metrics
 * (observability/GatewayMetrics.ts, one registry per gateway), which `/metrics` exports. `snapshot` reads the same metrics
 * back for `/gateway/stats`, so both say the same. Synchronous: recording sits on every
 * request's path. Latency percentiles are over a sliding window (5 minutes, 4096 samples; LatencyWindow.ts).
 */
export class Stats extends Context.Tag("mcp-gateway/Stats")<Stats, StatsShape>() {
  static readonly layer: Layer.Layer<Stats, never, Timer | GatewayMetrics> = Layer.effect(
    Stats,
    Effect.zipWith(Timer, GatewayMetrics, (timer, metrics) => makeStats(timer, metrics))
  )
}

interface Series {
  readonly template: string
  readonly instance: string
  readonly strategy: string
  readonly ok: boolean
  readonly counter: ReturnType<GatewayMetricsShape["requests"]>
  /** What else each of its requests updates, found once when the series is first seen (not per request). */
  readonly duration: ReturnType<GatewayMetricsShape["requestDuration"]>
  readonly templateWindow: LatencyWindow
  readonly instanceWindow: LatencyWindow | undefined
}

const WINDOW = { capacity: 4096, maxAgeMs: 5 * 60_000 }

const percentilesOf = (window: LatencyWindow, now: number): Percentiles => {
  const [p50, p95, p99] = window.percentiles([0.5, 0.95, 0.99], now).map((v) => (v === null ? null : round(v)))
  return { p50: p50!, p95: p95!, p99: p99! }
}

export const makeStats = (timer: TimerShape, M: GatewayMetricsShape): StatsShape => {
  const startedAt = timer.now()
  /** Every (template, operation, instance, outcome) counted so far, for snapshots to sum. */
  const series = new Map<string, Series>()
  const durations = new Map<string, ReturnType<GatewayMetricsShape["requestDuration"]>>()
  const probeSeries = new Map<string, { readonly ok: boolean; readonly counter: ReturnType<GatewayMetricsShape["probes"]> }>()
  const probeDurations = new Set<ReturnType<GatewayMetricsShape["probeDuration"]>>()
  const windows = new Map<string, LatencyWindow>()

  const windowOf = (scope: string, template: string, instance: string) => {
    const key = `${scope}\u0000${template}\u0000${instance}`
    let metric = windows.get(key)
    if (metric === undefined) windows.set(key, metric = makeLatencyWindow(WINDOW))
    return metric
  }
  const gatewayWindow = windowOf("gateway", "", "")

  return {
    recordRequest: (r) => {
      const instance = r.instanceId ?? ""
      // (A method the protocol does not define is `other`: the client names it, and each name would be a series.)
      const operation = operationLabel(r.operation)
      const key = `${r.template}\u0000${operation}\u0000${instance}\u0000${r.outcome}`
      let s = series.get(key)
      if (s === undefined) {
        const durationKey = `${r.template}\u0000${operation}`
        let duration = durations.get(durationKey)
        if (duration === undefined) durations.set(durationKey, duration = M.requestDuration({ template: r.template, operation }))
        series.set(key, s = {
          template: r.template,
          instance,
          strategy: r.strategy,
          ok: r.outcome === "ok" || r.outcome === "tool_error",
          counter: M.requests({ template: r.template, operation, instance, outcome: r.outcome }),
          duration,
          templateWindow: windowOf("template", r.template, ""),
          instanceWindow: instance === "" ? undefined : windowOf("instance", r.template, instance)
        })
      }
      s.counter.update(1)
      s.duration.update(r.latencyMs / 1000)
      const now = timer.now()
      gatewayWindow.record(r.latencyMs, now)
      s.templateWindow.record(r.latencyMs, now)
      s.instanceWindow?.record(r.latencyMs, now)
    },
    recordAttempt: (template, instance, latencyMs) => M.backendDuration({ template, instance }).update(latencyMs / 1000),
    recordRetry: (template, from) => {
      M.retries({ template }).update(1)
      M.failovers({ template, instance: from }).update(1)
    },
    recordEjection: (template, instance) => M.ejections({ template, instance }).update(1),
    recordBreakerOpened: (template, instance) => M.breakerOpens({ template, instance }).update(1),
    recordProbe: (template, instance, ok, durationMs) => {
      const result = ok ? "ok" : "failed"
      const key = `${template}\u0000${instance}\u0000${result}`
      let p = probeSeries.get(key)
      if (p === undefined) probeSeries.set(key, p = { ok, counter: M.probes({ template, instance, result }) })
      p.counter.update(1)
      const duration = M.probeDuration({ template })
      probeDurations.add(duration)
      duration.update(durationMs / 1000)
    },
    recordRestart: (template, instance) => M.restarts({ template, instance }).update(1),
    restarts: (template, instance) => M.restarts({ template, instance }).get().count,
    recordRateLimited: (limit, template) => M.rateLimited({ limit, template: template ?? "" }).update(1),
    recordAuthFailure: (status) => M.authFailures({ status: String(status) }).update(1),
    recordSessionRefused: (template, reason) => M.sessionsRefused({ template, reason }).update(1),
    recordSessionEnded: (template, reason) => M.sessionsEnded({ template, reason }).update(1),

    snapshot: () => {
      const now = timer.now()
      const overall = { requests: 0, errors: 0 }
      const templates = new Map<string, { requests: number; errors: number; instances: Map<string, { requests: number; errors: number }> }>()
      const strategies = new Map<string, { requests: number; errors: number }>()
      for (const s of series.values()) {
        const n = s.counter.get().count
        const errors = s.ok ? 0 : n
        overall.requests += n
        overall.errors += errors
        let t = templates.get(s.template)
        if (t === undefined) templates.set(s.template, t = { requests: 0, errors: 0, instances: new Map() })
        t.requests += n
        t.errors += errors
        if (s.instance !== "") {
          let i = t.instances.get(s.instance)
          if (i === undefined) t.instances.set(s.instance, i = { requests: 0, errors: 0 })
          i.requests += n
          i.errors += errors
        }
        let st = strategies.get(s.strategy)
        if (st === undefined) strategies.set(s.strategy, st = { requests: 0, errors: 0 })
        st.requests += n
        st.errors += errors
      }
      const average = (template?: string) => {
        let sum = 0
        let count = 0
        for (const [key, metric] of durations) {
          if (template !== undefined && !key.startsWith(`${template}\u0000`)) continue
          const state = metric.get()
          sum += state.sum
          count += state.count
        }
        return count === 0 ? null : round((sum / count) * 1000)
      }
      const errorRate = (c: { requests: number; errors: number }) => (c.requests === 0 ? 0 : round(c.errors / c.requests, 4))
      let probes = 0
      let failures = 0
      for (const p of probeSeries.values()) {
        const n = p.counter.get().count
        probes += n
        if (!p.ok) failures += n
      }
      let probeSum = 0
      let probeCount = 0
      for (const d of probeDurations) {
        const state = d.get()
        probeSum += state.sum
        probeCount += state.count
      }
      return {
        started_at: isoTime(startedAt),
        requests: {
          ...overall,
          error_rate: errorRate(overall),
          latency_ms: { average: average(), ...percentilesOf(gatewayWindow, now) }
        },
        templates: Object.fromEntries(Array.from(templates, ([name, t]) => [name, {
          requests: t.requests,
          errors: t.errors,
          error_rate: errorRate(t),
          latency_ms: { average: average(name), ...percentilesOf(windowOf("template", name, ""), now) },
          distribution: Object.fromEntries(Array.from(t.instances, ([id, i]) => [id, {
            ...i,
            latency_ms: percentilesOf(windowOf("instance", name, id), now)
          }]))
        }])),
        strategies: Object.fromEntries(strategies),
        health_checker: { probes, failures, average_duration_ms: probeCount === 0 ? null : round((probeSum / probeCount) * 1000) }
      }
    }
  }
}
