import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Fiber, HashMap, Layer, Logger, LogLevel, MetricBoundaries, MetricKey, MetricLabel, MetricRegistry, TestClock } from "effect"
import parsePrometheusTextFormat from "parse-prometheus-text-format"
import { GatewayMetrics } from "../../src/observability/GatewayMetrics.js"
import { makeLatencyWindow } from "../../src/observability/LatencyWindow.js"
import { RequestLog } from "../../src/observability/RequestLog.js"
import { flushLogs } from "../../src/observability/logging.js"
import { toPrometheusText } from "../../src/observability/PrometheusText.js"
import { scrapeMetrics } from "../../src/http/scrape.js"
import { ClientSessions } from "../../src/sessions/ClientSessions.js"
import { Dispatcher } from "../../src/dispatch/Dispatcher.js"
import { Exposure } from "../../src/exposure/Exposure.js"
import { gatewayHealth, gatewayStats } from "../../src/http/gatewayViews.js"
import { Stats } from "../../src/observability/Stats.js"
import { Registry } from "../../src/registry/Registry.js"
import { refused } from "../support/FakeTransport.js"
import { parseExposition } from "../support/prometheus.js"
import { dispatchVia } from "../support/dispatchVia.js"
import { testConfig } from "../support/testConfig.js"
import { testGateway } from "../support/testGateway.js"

// Retries 10 ms apart, no jitter: the test clock moves by known steps.
const config = testConfig({
  t: { instances: ["a", "b"], load_balancer: { strategy: "round_robin", retry: { base_delay_ms: 10, max_delay_ms: 10, jitter: 0 } } }
})

/** `/metrics` of the gateway in scope, parsed strictly. */
const scrape = Effect.gen(function*() {
  const text = scrapeMetrics(yield* GatewayMetrics, yield* Registry, yield* ClientSessions, yield* Clock.currentTimeMillis)
  return { text, exposition: parseExposition(text) }
})

describe.each(["call", "callNow"] as const)("metrics, via %s", (via) => {
  const call = dispatchVia(via)

  it.scoped("count every request once, by template, operation, instance and outcome; latency from the clock", () => {
    const { fake, layer } = testGateway(config)
    // a answers after 30 ms (of the test clock); b refuses at once, so its requests fail over
    // to a after 10 ms: 30 ms, or 40 ms with the retry.
    fake.set("a", () => Effect.as(Effect.sleep(Duration.millis(30)), {}))
    fake.set("b", () => Effect.fail(refused("b")))
    return Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      for (let i = 0; i < 4; i++) {
        const fiber = yield* Effect.fork(call(dispatcher)("t", "tools/list", undefined))
        for (let ms = 0; ms < 40; ms += 10) yield* TestClock.adjust(Duration.millis(10))
        yield* Fiber.join(fiber)
      }
      const { exposition: m } = yield* scrape
      expect(m.value("mcp_gateway_requests_total", { template: "t", operation: "tools/list", outcome: "ok" })).toBe(4)
      expect(m.value("mcp_gateway_requests_total", { instance: "a" })).toBe(4)
      expect(m.value("mcp_gateway_request_duration_seconds_count", { template: "t" })).toBe(4)
      const failedOver = m.value("mcp_gateway_failovers_total", { template: "t", instance: "b" })
      expect(failedOver).toBe(m.value("mcp_gateway_retries_total", { template: "t" }))
      expect(failedOver).toBe(2)
      expect(m.value("mcp_gateway_request_duration_seconds_sum", { template: "t" })).toBeCloseTo(2 * 0.03 + 2 * 0.04, 5)
      // 30 ms lands in the (0.016, 0.032] bucket, 40 ms in (0.032, 0.064].
      expect(m.value("mcp_gateway_request_duration_seconds_bucket", { template: "t", le: "0.016" })).toBe(0)
      expect(m.value("mcp_gateway_request_duration_seconds_bucket", { template: "t", le: "0.032" })).toBe(2)
      expect(m.value("mcp_gateway_request_duration_seconds_bucket", { template: "t", le: "0.064" })).toBe(4)
      // The last finite bucket is about 65 s, past the default 60 s timeout.
      expect(m.value("mcp_gateway_request_duration_seconds_bucket", { template: "t", le: "65.536" })).toBe(4)
      // Backend calls: four answers from a (30 ms each), two refusals from b (0 ms).
      expect(m.value("mcp_gateway_backend_request_duration_seconds_count", { instance: "a" })).toBe(4)
      expect(m.value("mcp_gateway_instance_inflight_requests", { instance: "a" })).toBe(0)
      expect(m.value("mcp_gateway_up")).toBe(1)

      const snapshot = (yield* Stats).snapshot()
      expect(snapshot.templates.t).toMatchObject({ requests: 4, errors: 0, error_rate: 0 })
      expect(snapshot.templates.t!.distribution.a).toMatchObject({ requests: 4, errors: 0 })
      expect(snapshot.templates.t!.latency_ms).toMatchObject({ average: 35, p50: 30, p99: 40 })
    }).pipe(Effect.provide(layer))
  })

  it.scoped("a failed request counts as an error with the failure's kind", () => {
    const { fake, layer } = testGateway(testConfig({ t: { instances: ["a"] } }))
    fake.set("a", () => Effect.succeed({ error: { code: -32602, message: "bad params" } }))
    return Effect.gen(function*() {
      yield* Effect.either(call(yield* Dispatcher)("t", "tools/call", { name: "x" }))
      const { exposition: m } = yield* scrape
      expect(m.value("mcp_gateway_requests_total", { operation: "tools/call", instance: "a", outcome: "mcp_error" })).toBe(1)
      const snapshot = (yield* Stats).snapshot()
      expect(snapshot.templates.t).toMatchObject({ requests: 1, errors: 1, error_rate: 1 })
    }).pipe(Effect.provide(layer))
  })

  it.scoped("a tool that reports failure (isError) is a tool_error: counted apart, not an error of the instance", () => {
    const { fake, layer } = testGateway(testConfig({ t: { instances: ["a"] } }))
    fake.set("a", () => Effect.succeed({ content: [], isError: true }))
    return Effect.gen(function*() {
      yield* call(yield* Dispatcher)("t", "tools/call", { name: "x" })
      const { exposition: m } = yield* scrape
      expect(m.value("mcp_gateway_requests_total", { operation: "tools/call", instance: "a", outcome: "tool_error" })).toBe(1)
      expect((yield* Stats).snapshot().templates.t).toMatchObject({ requests: 1, errors: 0 })
    }).pipe(Effect.provide(layer))
  })

})

describe("metrics", () => {
  it.scoped("two gateways in one process do not count into each other", () => {
    const run = Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      yield* dispatcher.call("t", "tools/list", undefined)
      yield* dispatcher.call("t", "tools/list", undefined)
      return (yield* scrape).exposition.value("mcp_gateway_requests_total", { template: "t" })
    })
    return Effect.gen(function*() {
      expect(yield* Effect.provide(run, testGateway(config).layer)).toBe(2)
      expect(yield* Effect.provide(run, testGateway(config).layer)).toBe(2)
    })
  })

  it.scoped("an instance that is removed leaves no gauges behind; its counters stay", () => {
    const { layer } = testGateway(config)
    return Effect.gen(function*() {
      yield* (yield* Dispatcher).call("t", "tools/list", undefined)
      const registry = yield* Registry
      const before = (yield* scrape).exposition
      expect(before.series("mcp_gateway_instance_healthy", { instance: "b" })).toHaveLength(1)
      yield* registry.deregister("t", "b")
      const after = (yield* scrape).exposition
      expect(after.series("mcp_gateway_instance_healthy", { instance: "b" })).toHaveLength(0)
      expect(after.series("mcp_gateway_instance_status", { instance: "b" })).toHaveLength(0)
      expect(after.value("mcp_gateway_requests_total", { template: "t" })).toBe(1)
    }).pipe(Effect.provide(layer))
  })
})

describe("the Prometheus text encoder", () => {
  const registry = MetricRegistry.make()
  const tagged = <K extends MetricKey.MetricKey.Untyped>(key: K, labels: Record<string, string>) =>
    key.pipe(MetricKey.taggedWithLabels(Object.entries(labels).map(([k, v]) => MetricLabel.make(k, v)))) as K
  // A label value with every character the format escapes.
  const odd = "a \"quoted\" back\\slash\nnewline"
  registry.getCounter(tagged(MetricKey.counter("mcp_gateway_things_total", { description: "Things\nwith a \\ in help" }), { template: odd })).update(3)
  registry.getCounter(tagged(MetricKey.counter("mcp_gateway_things_total", { description: "Things\nwith a \\ in help" }), { template: "plain" })).update(1)
  registry.getGauge(MetricKey.gauge("mcp_gateway_level")).update(-2.5)
  const h = registry.getHistogram(tagged(MetricKey.histogram("mcp_gateway_wait_seconds", MetricBoundaries.fromIterable([0.1, 1])), { template: "x" }))
  for (const v of [0.05, 0.5, 0.7, 3]) h.update(v)
  registry.getCounter(MetricKey.counter("not_ours_total")).update(1)
  const text = toPrometheusText(registry.snapshot())

  it("writes what a strict reader and parse-prometheus-text-format both read back", () => {
    const m = parseExposition(text)
    expect(m.types.get("mcp_gateway_things_total")).toBe("counter")
    expect(m.help.get("mcp_gateway_things_total")).toBe("Things\\nwith a \\\\ in help")
    expect(m.value("mcp_gateway_things_total", { template: odd })).toBe(3)
    expect(m.value("mcp_gateway_level")).toBe(-2.5)
    expect(m.series("mcp_gateway_wait_seconds_bucket", { template: "x" }).map((s) => [s.labels.le, s.value])).toEqual([["0.1", 1], ["1", 3], ["+Inf", 4]])
    expect(m.value("mcp_gateway_wait_seconds_sum", { template: "x" })).toBeCloseTo(4.25)
    expect(m.value("mcp_gateway_wait_seconds_count", { template: "x" })).toBe(4)
    // Only the gateway's own families.
    expect(m.types.has("not_ours_total")).toBe(false)

    const families = parsePrometheusTextFormat(text) as Array<{ name: string; metrics: Array<{ labels?: Record<string, string>; value?: string }> }>
    const things = families.find((f) => f.name === "mcp_gateway_things_total")!
    expect(things.metrics.find((x) => x.labels?.template === odd)?.value).toBe("3")
    expect(families.find((f) => f.name === "mcp_gateway_level")!.metrics[0]!.value).toBe("-2.5")
  })
})

describe("the latency window", () => {
  it("gives nearest-rank percentiles: one slow request in ten is the p95", () => {
    const window = makeLatencyWindow({ capacity: 100, maxAgeMs: 1000 })
    for (let i = 0; i < 9; i++) window.record(1, 0)
    window.record(100, 0)
    expect(window.percentiles([0.5, 0.9, 0.95, 0.99], 0)).toEqual([1, 1, 100, 100])
  })

  it("forgets samples older than its age, and keeps the newest when full", () => {
    const window = makeLatencyWindow({ capacity: 3, maxAgeMs: 1000 })
    expect(window.percentiles([0.5], 0)).toEqual([null])
    window.record(500, 0)
    window.record(7, 600)
    expect(window.percentiles([1], 1000)).toEqual([500])
    expect(window.percentiles([1], 1001)).toEqual([7])
    for (const v of [1, 2, 3]) window.record(v, 700)
    expect(window.percentiles([0, 1], 700)).toEqual([1, 3])
  })
})

describe("routing-decision logs", () => {
  /** Each log line's message and annotations, at every level (the gateway's own switch is under test). */
  const capture = () => {
    const lines: Array<{ level: string; message: unknown; annotations: Record<string, unknown> }> = []
    const logger = Logger.make(({ logLevel, message, annotations }) => {
      lines.push({ level: logLevel.label, message: Array.isArray(message) ? message[0] : message, annotations: Object.fromEntries(HashMap.toEntries(annotations)) })
    })
    return { lines, layer: Layer.merge(Logger.replace(Logger.defaultLogger, logger), Logger.minimumLogLevel(LogLevel.All)) }
  }
  const withLevel = (logLevel: "debug" | "info") => {
    const base = testConfig({ t: { instances: ["a", "b"], load_balancer: { strategy: "round_robin", retry: { base_delay_ms: 10, max_delay_ms: 10, jitter: 0 } } } })
    return { ...base, gateway: { ...base.gateway, logLevel } }
  }

  it.scoped("at debug: the candidates, the strategy and the pick of each attempt", () => {
    const { fake, layer } = testGateway(withLevel("debug"))
    const logs = capture()
    fake.set("a", () => Effect.fail(refused("a")))
    fake.set("b", () => Effect.fail(refused("b")))
    return Effect.gen(function*() {
      const fiber = yield* Effect.fork(Effect.either((yield* Dispatcher).call("t", "tools/list", undefined)))
      yield* TestClock.adjust(Duration.millis(10))
      yield* Fiber.join(fiber)
      const routes = logs.lines.filter((l) => l.message === "route")
      expect(routes.map((r) => r.annotations)).toEqual([
        expect.objectContaining({ template: "t", operation: "tools/list", strategy: "round_robin", attempt: 1, candidates: "a,b" }),
        expect.objectContaining({ template: "t", strategy: "only-candidate", attempt: 2 })
      ])
      expect(routes.every((r) => r.level === "DEBUG")).toBe(true)
      expect(new Set(routes.map((r) => r.annotations.instance))).toEqual(new Set(["a", "b"]))
      const request = logs.lines.find((l) => l.message === "request")!
      expect(request).toMatchObject({ level: "INFO", annotations: { template: "t", attempts: 2, outcome: "upstream_failed", status: 502 } })
    }).pipe(Effect.provide(layer), Effect.provide(logs.layer))
  })

  it.scoped("at info: none (the line is not even built)", () => {
    const { fake, layer } = testGateway(withLevel("info"))
    const logs = capture()
    fake.set("a", () => Effect.succeed({}))
    fake.set("b", () => Effect.succeed({}))
    return Effect.gen(function*() {
      yield* (yield* Dispatcher).call("t", "tools/list", undefined)
      expect(logs.lines.some((l) => l.message === "route")).toBe(false)
      expect(logs.lines.some((l) => l.message === "request")).toBe(true)
    }).pipe(Effect.provide(layer), Effect.provide(logs.layer))
  })
})

describe("the request line written directly (text and JSON, as `start` writes it)", () => {
  const fields = {
    template: "t", operation: "resources/read", subject: "https://user:secret@example.com/doc?token=abc", instance: "a",
    strategy: "round_robin", attempts: 2, outcome: "ok", status: 200, duration_ms: 1.25
  }
  /** The lines the request log writes for `fields` in `format`, with request id "req 1". */
  const written = (format: "text" | "json") =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const original = process.stderr.write
      process.stderr.write = ((chunk: string) => (lines.push(...chunk.split("\n").filter((l) => l !== "")), true)) as typeof process.stderr.write
      try {
        const log = yield* Effect.provide(RequestLog, RequestLog.forLogger("info", format))
        yield* log.write(fields).pipe(Effect.annotateLogs("request_id", "req 1"))
        flushLogs()
      } finally {
        process.stderr.write = original
      }
      return lines
    })

  it.effect("logfmt: the same fields as every other line, values quoted where they must be, URLs redacted", () =>
    Effect.gen(function*() {
      const [line] = yield* written("text")
      expect(line).toMatch(/^timestamp=\S+ level=INFO fiber=#\d+ message=request request_id="req 1" template=t operation=resources\/read subject=\S+ instance=a strategy=round_robin attempts=2 outcome=ok status=200 duration_ms=1.25$/)
      expect(line).not.toContain("secret")
      expect(line).not.toContain("abc")
    }))

  it.effect("JSON: Effect's JSON logger's shape", () =>
    Effect.gen(function*() {
      const [line] = yield* written("json")
      expect(JSON.parse(line!)).toMatchObject({
        message: "request",
        logLevel: "INFO",
        annotations: { request_id: "req 1", template: "t", attempts: 2, status: 200, duration_ms: 1.25, instance: "a" }
      })
    }))

  it.effect("below info: nothing", () =>
    Effect.gen(function*() {
      const log = yield* Effect.provide(RequestLog, RequestLog.forLogger("warn", "text"))
      const original = process.stderr.write
      let calls = 0
      process.stderr.write = (() => (calls++, true)) as typeof process.stderr.write
      yield* log.write(fields)
      flushLogs()
      process.stderr.write = original
      expect(calls).toBe(0)
    }))
})

describe("the views read the gateway's clock (TestClock drives them)", () => {
  /** `/gateway/stats` and `/gateway/health` as their handlers build them, at the clock's time. */
  const views = Effect.gen(function*() {
    const services = { stats: yield* Stats, registry: yield* Registry, sessions: yield* ClientSessions, exposure: yield* Exposure }
    const now = yield* Clock.currentTimeMillis
    return {
      stats: gatewayStats(services, now) as ReturnType<typeof gatewayStats> & { templates: Record<string, any> },
      health: gatewayHealth(services.registry, "off", 0, now)
    }
  })

  it.scoped("/gateway/stats: started_at, and latency percentiles over the last 5 minutes of the clock; /gateway/health: uptime", () => {
    const { fake, layer } = testGateway(testConfig({ t: { instances: ["a"] } }))
    fake.set("a", () => Effect.as(Effect.sleep(Duration.millis(30)), {}))
    return Effect.gen(function*() {
      const request = yield* Effect.fork((yield* Dispatcher).call("t", "tools/list", undefined))
      yield* TestClock.adjust(Duration.millis(30))
      yield* Fiber.join(request)
      let { health, stats } = yield* views
      expect(stats.started_at).toBe("1970-01-01T00:00:00.000Z")
      expect(stats.requests.latency_ms).toMatchObject({ p50: 30, p99: 30 })
      expect(stats.templates.t.instances.a.latency_ms).toMatchObject({ p50: 30 })
      expect(health.uptime_seconds).toBe(0)
      // Recorded at 30 ms: in the window up to 5 minutes later, out of it past that.
      yield* TestClock.adjust(Duration.minutes(5))
      ;({ health, stats } = yield* views)
      expect(stats.requests.latency_ms.p50).toBe(30)
      expect(health.uptime_seconds).toBe(300)
      yield* TestClock.adjust(Duration.millis(1))
      ;({ stats } = yield* views)
      expect(stats.requests.latency_ms).toMatchObject({ p50: null, p95: null, p99: null })
      // The counts stay: only the percentiles are of a window.
      expect(stats.requests.requests).toBe(1)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("an ejection shows in /gateway/stats and /metrics for its time, and ends there when the clock passes it", () => {
    const { fake, layer } = testGateway(testConfig({
      t: {
        instances: ["a", "b"],
        load_balancer: { retry: { base_delay_ms: 0 }, outlier_consecutive_failures: 3, outlier_base_ejection: 10, circuit_breaker: { failure_threshold: 0 } }
      }
    }))
    fake.set("a", () => Effect.fail(refused("a")))
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      for (let i = 0; i < 6; i++) yield* d.call("t", "tools/list", undefined)
      fake.clear("a")
      expect((yield* views).stats.templates.t.instances.a.ejected).toBe(true)
      expect((yield* scrape).exposition.value("mcp_gateway_instance_ejected", { instance: "a" })).toBe(1)
      const registry = (yield* Registry).template("t")!.instances.get("a")!.toJSON(yield* Clock.currentTimeMillis)
      expect(registry.outlier).toMatchObject({ ejected_until: "1970-01-01T00:00:10.000Z" })
      yield* TestClock.adjust(Duration.millis(9_999))
      expect((yield* views).stats.templates.t.instances.a.ejected).toBe(true)
      yield* TestClock.adjust(Duration.millis(1))
      expect((yield* views).stats.templates.t.instances.a.ejected).toBe(false)
      expect((yield* scrape).exposition.value("mcp_gateway_instance_ejected", { instance: "a" })).toBe(0)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("a breaker shows open in /gateway/stats and /metrics for its cool-down, then half-open", () => {
    const { fake, layer } = testGateway(testConfig({
      t: { instances: ["a"], load_balancer: { circuit_breaker: { failure_threshold: 2, base_delay_ms: 1000, max_delay_ms: 1000, jitter: 0 } } }
    }))
    fake.set("a", () => Effect.fail(refused("a")))
    return Effect.gen(function*() {
      const d = yield* Dispatcher
      for (let i = 0; i < 2; i++) yield* Effect.either(d.call("t", "tools/list", undefined))
      const breakerGauge = (state: string) => Effect.map(scrape, (s) => s.exposition.value("mcp_gateway_circuit_breaker_state", { instance: "a", state }))
      expect((yield* views).stats.templates.t.instances.a.circuit_breaker).toBe("open")
      expect(yield* breakerGauge("open")).toBe(1)
      yield* TestClock.adjust(Duration.millis(999))
      expect((yield* views).stats.templates.t.instances.a.circuit_breaker).toBe("open")
      yield* TestClock.adjust(Duration.millis(1))
      expect((yield* views).stats.templates.t.instances.a.circuit_breaker).toBe("half_open")
      expect(yield* breakerGauge("open")).toBe(0)
      expect(yield* breakerGauge("half_open")).toBe(1)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("registered_at is when the registry took the instance in, on the clock", () => {
    const { layer } = testGateway(testConfig({ t: { instances: ["a"] } }))
    return Effect.gen(function*() {
      yield* TestClock.adjust(Duration.seconds(90))
      const registry = yield* Registry
      const added = yield* registry.register({ template: "t", spec: { id: "later", transport: "http", endpoint: "http://127.0.0.1:1/" } })
      const now = yield* Clock.currentTimeMillis
      expect(registry.template("t")!.instances.get("a")!.toJSON(now).registered_at).toBe("1970-01-01T00:00:00.000Z")
      expect(added.toJSON(now).registered_at).toBe("1970-01-01T00:01:30.000Z")
    }).pipe(Effect.provide(layer))
  })
})
