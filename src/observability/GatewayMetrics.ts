import { Context, Layer, MetricBoundaries, MetricKey, MetricLabel, MetricRegistry } from "effect"
import type * as MetricHook from "effect/MetricHook"
import { FOLDED, MAX_SERIES_PER_METRIC } from "./metricLabels.js"

/**
 * The gateway's Effect metrics, as `/metrics` exports them (Prometheus names and units) and
 * `/gateway/stats` reads them. Labels are bounded: templates, instances, operations (MCP method
 * names), outcomes, states; never session ids, request ids or arguments.
 *
 * Each gateway keeps its metrics in a MetricRegistry of its own, not Effect's global one: two
 * gateways in one process (tests composing the layers) must not count into each other. Each
 * label set gets its hook once, from a tagged MetricKey, and keeps it: an update on the hot path
 * is then one call, with no key lookup.
 */

/** Seconds, 0.5 ms to about 65 s, doubling (the count includes +Inf). */
const latencyBuckets = MetricBoundaries.exponential({ start: 0.0005, factor: 2, count: 19 })

type Labels = Readonly<Record<string, string>>

const labelsOf = (labels: Labels) => Object.entries(labels).map(([k, v]) => MetricLabel.make(k, v))

/** One hook per label set, made on first use; past `maxSeries` label sets, the one folded series (and `folded` is told). */
const family = <H>(make: (labels: Labels) => H, folded: () => void, maxSeries: number) => {
  const cache = new Map<string, H>()
  let overflow: H | undefined
  return (labels: Labels): H => {
    let key = ""
    for (const k in labels) key += `${labels[k]}\u0000`
    let hook = cache.get(key)
    if (hook === undefined) {
      if (cache.size >= maxSeries) {
        folded()
        if (overflow === undefined) {
          const other: Record<string, string> = {}
          for (const k in labels) other[k] = FOLDED
          overflow = make(other)
        }
        return overflow
      }
      cache.set(key, hook = make(labels))
    }
    return hook
  }
}

export const makeGatewayMetrics = (options: { readonly maxSeriesPerMetric?: number } = {}) => {
  const registry = MetricRegistry.make()
  const maxSeries = options.maxSeriesPerMetric ?? MAX_SERIES_PER_METRIC
  const foldedCounters = new Map<string, MetricHook.MetricHook.Counter<number>>()
  /** Counts an update folded into a metric's `other` series (one series per metric: bounded by the metrics there are). */
  const foldedInto = (name: string) => () => {
    let hook = foldedCounters.get(name)
    if (hook === undefined) {
      foldedCounters.set(
        name,
        hook = registry.getCounter(
          MetricKey.counter("mcp_gateway_metric_series_folded_total", {
            description: `Updates counted in a metric's series labelled "other" because it had ${maxSeries} series already`,
            incremental: true
          }).pipe(MetricKey.taggedWithLabels([MetricLabel.make("metric", name)]))
        )
      )
    }
    hook.update(1)
  }
  const counter = (name: string, description: string) =>
    family((labels): MetricHook.MetricHook.Counter<number> =>
      registry.getCounter(MetricKey.counter(name, { description, incremental: true }).pipe(MetricKey.taggedWithLabels(labelsOf(labels)))), foldedInto(name), maxSeries)
  const gauge = (name: string, description: string) =>
    family((labels): MetricHook.MetricHook.Gauge<number> =>
      registry.getGauge(MetricKey.gauge(name, { description }).pipe(MetricKey.taggedWithLabels(labelsOf(labels)))), foldedInto(name), maxSeries)
  const histogram = (name: string, description: string) =>
    family((labels): MetricHook.MetricHook.Histogram =>
      registry.getHistogram(MetricKey.histogram(name, latencyBuckets, description).pipe(MetricKey.taggedWithLabels(labelsOf(labels)))), foldedInto(name), maxSeries)

  return {
    /** Every metric's current state, for `/metrics`. */
    snapshot: () => registry.snapshot(),

    /** Every request an instance served (or was asked to), once, when it ends: `outcome` is `ok` or the error's kind. */
    requests: counter("mcp_gateway_requests_total", "Requests by template, MCP operation, instance (the one that answered or failed last) and outcome"),
    /** From the gateway's dispatch to its answer, retries included. */
    requestDuration: histogram("mcp_gateway_request_duration_seconds", "Request latency as the gateway served it, retries included"),
    /** One attempt's backend call. */
    backendDuration: histogram("mcp_gateway_backend_request_duration_seconds", "Latency of one backend call (one attempt)"),
    retries: counter("mcp_gateway_retries_total", "Attempts after the first (each on another instance), by template"),
    failovers: counter("mcp_gateway_failovers_total", "Requests moved away from an instance that failed them, by the instance failed"),
    ejections: counter("mcp_gateway_outlier_ejections_total", "Instances ejected from balancing by passive outlier detection"),
    breakerOpens: counter("mcp_gateway_circuit_breaker_opened_total", "Times an instance's circuit breaker opened"),
    probes: counter("mcp_gateway_health_probes_total", "Health probes by result"),
    probeDuration: histogram("mcp_gateway_health_probe_duration_seconds", "Health probe latency"),
    restarts: counter("mcp_gateway_process_restarts_total", "Restarts of an instance's process (stdio) or stream (legacy SSE)"),
    rateLimited: counter("mcp_gateway_rate_limited_total", "Requests refused by a rate limit, by the limit (client or template)"),
    authFailures: counter("mcp_gateway_auth_failures_total", "Requests refused for want of a valid credential (401) or scope (403)"),
    sessionsRefused: counter("mcp_gateway_sessions_refused_total", "New MCP sessions refused with a 503, by template and reason (slots_busy: every process slot held by a session in use)"),
    sessionsEnded: counter("mcp_gateway_session_processes_ended_total", "Sessions with a process of their own the gateway ended, by template and reason (idle, room: for a new session)"),
    cacheRequests: counter("mcp_gateway_cache_requests_total", "Cacheable requests (lists, resources/read) of templates that cache, by result: hit or miss"),
    toolChanges: counter("mcp_gateway_tool_changes_total", "Tool integrity: offered definitions that differ from their pins (or are new, or gone), by template, kind and what the policy made of them (blocked, warned, allowed)"),

    /** Set when scraped, from the registry's live state (nothing to do on the hot path). */
    inflight: gauge("mcp_gateway_instance_inflight_requests", "Requests sent to the instance and not answered yet"),
    healthy: gauge("mcp_gateway_instance_healthy", "1 when the instance is healthy, else 0"),
    status: gauge("mcp_gateway_instance_status", "The instance's status: 1 on the current one (unknown, healthy, unhealthy, failed)"),
    ejected: gauge("mcp_gateway_instance_ejected", "1 while the instance is ejected by outlier detection"),
    breakerState: gauge("mcp_gateway_circuit_breaker_state", "The instance's breaker: 1 on the current state (closed, open, half_open)"),
    sessions: gauge("mcp_gateway_mcp_sessions_open", "MCP endpoint sessions open, by template and the protocol version (generation) they speak"),
    tracingSpansDropped: counter("mcp_gateway_tracing_spans_dropped_total", "Spans not exported: the collector failed, did not answer in time, or too many waited for it"),
    up: gauge("mcp_gateway_up", "1 while the gateway serves"),
    redis: gauge("mcp_gateway_redis_status", "The fleet's Redis (registry.store \"redis\"): 1 on the current state (ok, slow, down)")
  }
}

export type GatewayMetricsShape = ReturnType<typeof makeGatewayMetrics>

export class GatewayMetrics extends Context.Tag("mcp-gateway/GatewayMetrics")<GatewayMetrics, GatewayMetricsShape>() {
  static readonly layer: Layer.Layer<GatewayMetrics> = Layer.sync(GatewayMetrics, () => makeGatewayMetrics())
}
