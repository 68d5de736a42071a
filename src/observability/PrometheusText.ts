import { Option } from "effect"
import type * as MetricPair from "effect/MetricPair"
import * as MetricState from "effect/MetricState"

/**
 * Effect metric snapshots in the Prometheus text exposition format (version 0.0.4): one
 * `# HELP` and `# TYPE` per metric family, then its samples; histograms as cumulative
 * `_bucket{le=...}` with `_sum` and `_count`, summaries as `{quantile=...}` with `_sum` and
 * `_count`. Only the gateway's own metrics (`mcp_gateway_*`).
 */
export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

const escapeLabel = (value: string) => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, "\\\"")
const escapeHelp = (value: string) => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

const number = (n: number | bigint) => {
  if (typeof n === "bigint") return n.toString()
  if (Number.isNaN(n)) return "NaN"
  if (n === Infinity) return "+Inf"
  if (n === -Infinity) return "-Inf"
  return String(n)
}

const labels = (pairs: ReadonlyArray<readonly [string, string]>) =>
  pairs.length === 0 ? "" : `{${pairs.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`

export const toPrometheusText = (
  pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>,
  /** Leaves series out (gauges of instances that are gone). */
  keep: (pair: MetricPair.MetricPair.Untyped) => boolean = () => true
): string => {
  const families = new Map<string, { type: string; help: string; lines: Array<string> }>()
  const tagsOf = (pair: MetricPair.MetricPair.Untyped) => pair.metricKey.tags.map((t) => `${t.key}=${t.value}`).join(",")
  const sorted = [...pairs].sort((a, b) => a.metricKey.name.localeCompare(b.metricKey.name) || tagsOf(a).localeCompare(tagsOf(b)))
  for (const pair of sorted) {
    const key = pair.metricKey
    const name = key.name
    if (!name.startsWith("mcp_gateway_") || !keep(pair)) continue
    const tags = key.tags.map((t): readonly [string, string] => [t.key, t.value])
    const state = pair.metricState
    let family = families.get(name)
    const add = (type: string) => {
      if (family === undefined) families.set(name, family = { type, help: Option.getOrElse(key.description, () => name), lines: [] })
      return family.lines
    }
    if (MetricState.isCounterState(state)) {
      add("counter").push(`${name}${labels(tags)} ${number(state.count)}`)
    } else if (MetricState.isGaugeState(state)) {
      add("gauge").push(`${name}${labels(tags)} ${number(state.value)}`)
    } else if (MetricState.isHistogramState(state)) {
      const lines = add("histogram")
      for (const [boundary, count] of state.buckets) {
        lines.push(`${name}_bucket${labels([...tags, ["le", number(boundary)]])} ${count}`)
      }
      lines.push(`${name}_sum${labels(tags)} ${number(state.sum)}`, `${name}_count${labels(tags)} ${state.count}`)
    } else if (MetricState.isSummaryState(state)) {
      const lines = add("summary")
      for (const [quantile, value] of state.quantiles) {
        lines.push(`${name}${labels([...tags, ["quantile", String(quantile)]])} ${number(Option.getOrElse(value, () => NaN))}`)
      }
      lines.push(`${name}_sum${labels(tags)} ${number(state.sum)}`, `${name}_count${labels(tags)} ${state.count}`)
    }
  }
  const out: Array<string> = []
  for (const [name, family] of Array.from(families).sort(([a], [b]) => a.localeCompare(b))) {
    out.push(`# HELP ${name} ${escapeHelp(family.help)}`, `# TYPE ${name} ${family.type}`, ...family.lines)
  }
  return out.join("\n") + "\n"
}
