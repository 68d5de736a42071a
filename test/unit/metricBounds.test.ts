import { describe, expect, it } from "@effect/vitest"
import { makeGatewayMetrics } from "../../src/observability/GatewayMetrics.js"
import { operationLabel } from "../../src/observability/metricLabels.js"
import { toPrometheusText } from "../../src/observability/PrometheusText.js"
import { makeStats } from "../../src/observability/Stats.js"
import { redisUrlProblem } from "../../src/config/GatewayConfig.js"
import { redactUrl } from "../../src/domain/redact.js"
import { parseExposition } from "../support/prometheus.js"

const timer = { now: () => 0, elapsedMs: () => 0, schedule: () => () => undefined } as unknown as Parameters<typeof makeStats>[0]

describe("metric labels a client can influence are bounded", () => {
  it("a method the protocol does not define is counted as operation `other`", () => {
    const M = makeGatewayMetrics()
    const stats = makeStats(timer, M)
    for (let i = 0; i < 3_000; i++) {
      stats.recordRequest({ template: "t", operation: `invented/${i}/${"x".repeat(4096)}`, strategy: "round_robin", instanceId: "a", latencyMs: 1, outcome: "mcp_error" })
    }
    stats.recordRequest({ template: "t", operation: "tools/call", strategy: "round_robin", instanceId: "a", latencyMs: 1, outcome: "ok" })
    const text = toPrometheusText(M.snapshot())
    expect(text.length).toBeLessThan(20_000)
    const exposition = parseExposition(text)
    expect(exposition.value("mcp_gateway_requests_total", { operation: "other" })).toBe(3_000)
    expect(exposition.value("mcp_gateway_requests_total", { operation: "tools/call" })).toBe(1)
    expect(exposition.series("mcp_gateway_requests_total")).toHaveLength(2)
    expect(operationLabel("resources/templates/list")).toBe("resources/templates/list")
    expect(operationLabel("tools/call2")).toBe("other")
  })

  it("past the cap, new label sets fold into one `other` series, and the folds are counted", () => {
    const M = makeGatewayMetrics({ maxSeriesPerMetric: 5 })
    for (let i = 0; i < 12; i++) M.restarts({ template: "t", instance: `i${i}` }).update(1)
    const exposition = parseExposition(toPrometheusText(M.snapshot()))
    const series = exposition.series("mcp_gateway_process_restarts_total")
    expect(series).toHaveLength(6)
    expect(exposition.value("mcp_gateway_process_restarts_total", { template: "other", instance: "other" })).toBe(7)
    expect(exposition.value("mcp_gateway_metric_series_folded_total", { metric: "mcp_gateway_process_restarts_total" })).toBe(7)
    // A label set it already has keeps its own series.
    M.restarts({ template: "t", instance: "i0" }).update(1)
    expect(parseExposition(toPrometheusText(M.snapshot())).value("mcp_gateway_process_restarts_total", { instance: "i0" })).toBe(2)
  })
})

describe("Redis URLs", () => {
  it("a password with a character the URL reads otherwise must be percent-encoded; the problem never repeats the URL", () => {
    for (const url of ["redis://:p#ss@h:6379", "redis://:p?ss@h:6379", "redis://:p/ss@h:6379/0", "redis://h:6379/x", "redis://:p%zz@h:6379"]) {
      const problem = redisUrlProblem(url)
      expect(problem, url).toMatch(/percent-encode/)
      expect(problem).not.toContain("ss@")
    }
    for (const url of ["redis://h", "redis://:p%23ss@h:6379/0", "rediss://user:pw@h:6380", "redis://[::1]:6379/2"]) expect(redisUrlProblem(url), url).toBeUndefined()
    expect(redisUrlProblem("http://h")).toMatch(/redis:\/\//)
  })

  it("is logged with its address and without its credentials", () => {
    expect(redactUrl("redis://:secret@10.0.0.1:6379/0")).toBe("redis://***@10.0.0.1:6379/0")
    expect(redactUrl("rediss://user:pw@cache.internal:6380")).toBe("rediss://***@cache.internal:6380")
    expect(redactUrl("https://u:p@example.com/x?token=1")).toBe("https://***@example.com/x?token=***")
  })
})
