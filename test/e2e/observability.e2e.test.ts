import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import parsePrometheusTextFormat from "parse-prometheus-text-format"
import { chromium } from "playwright-core"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import {
  api,
  descendants,
  everythingServer,
  initializeRaw,
  mcpPostHeaders,
  repoRoot,
  type RunningGateway,
  type RunningServer,
  startFixtureServer,
  startGateway,
  tempDir,
  waitUntil,
  writeJson
} from "../support/processes.js"
import { parseExposition } from "../support/prometheus.js"

const misbehaving = path.join(repoRoot, "test/fixtures/misbehaving-server.mjs")

/** The page's DOM, as much of it as the page functions below use (the tests compile without the DOM lib). */
declare const document: {
  querySelector(selector: string): { getAttribute(name: string): string | null } | null
  readonly documentElement: { readonly scrollWidth: number; readonly clientWidth: number }
}

/** Runs in the page: whether the status page's row of `instance` has `attribute` equal (or, with `negate`, not equal) to `value`. */
const rowShows = ([instance, attribute, value, negate]: readonly [string, string, string, boolean]) =>
  (document.querySelector(`tr[data-instance="${instance}"]`)?.getAttribute(attribute) === value) !== negate

/**
 * /metrics, read by a strict exposition parser, with `parse-prometheus-text-format` as a second
 * opinion: every counter and gauge it reads has the same value.
 */
const scrape = async (gateway: RunningGateway) => {
  const response = await fetch(`${gateway.url}/metrics`)
  expect(response.status).toBe(200)
  expect(response.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8")
  const text = await response.text()
  const exposition = parseExposition(text)
  const families = parsePrometheusTextFormat(text) as Array<{ name: string; type: string; metrics: Array<{ labels?: Record<string, string>; value?: string }> }>
  expect(families.map((f) => f.name).sort()).toEqual([...exposition.types.keys()].sort())
  for (const family of families.filter((f) => f.type === "COUNTER" || f.type === "GAUGE")) {
    for (const metric of family.metrics) {
      expect(exposition.series(family.name, metric.labels ?? {}).map((s) => s.value)).toEqual([Number(metric.value)])
    }
  }
  return exposition
}

/** Headless Debian chromium (`.ci/run` installs it), or the one `CHROMIUM_PATH` names. */
const launchBrowser = () => {
  const executablePath = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => p !== undefined && fs.existsSync(p))
  if (executablePath === undefined) throw new Error("the status page tests need a Chromium: apt-get install chromium, or set CHROMIUM_PATH")
  return chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
  })
}

describe("observability end to end", () => {
  let gateway: RunningGateway
  let echo: RunningServer
  let otlp: http.Server
  const received: Array<any> = []
  const cleanups: Array<() => Promise<unknown>> = []

  beforeAll(async () => {
    echo = await startFixtureServer("header-echo-server.mjs")
    // An OTLP/HTTP receiver on loopback: it keeps what the gateway exports.
    otlp = http.createServer((req, res) => {
      let body = ""
      req.setEncoding("utf8").on("data", (d: string) => (body += d))
      req.on("end", () => {
        received.push(JSON.parse(body))
        res.writeHead(200, { "content-type": "application/json" }).end("{}")
      })
    })
    await new Promise<void>((r) => otlp.listen(0, "127.0.0.1", r))
    const configFile = path.join(tempDir(), "gateway.json")
    writeJson(configFile, {
      gateway: { rate_limits: {} },
      tracing: { otlp_endpoint: `http://127.0.0.1:${(otlp.address() as any).port}/v1/traces`, export_interval_ms: 200 },
      templates: {
        echo: { instances: [{ id: "e1", transport: "http", endpoint: echo.url }], load_balancer: { health_check_interval: 600 } },
        limited: { instances: [{ id: "l1", transport: "http", endpoint: echo.url }], rate_limit: { requests_per_second: 0.1, burst: 1 } },
        crashy: {
          instances: [{ id: "c1", transport: "stdio", command: ["node", misbehaving] }],
          // Slow enough to restart that the page (polling each second) sees the outage.
          load_balancer: { restart_backoff: { base_delay_ms: 2500, max_delay_ms: 2500, jitter: 0 } }
        }
      }
    })
    gateway = await startGateway({ configFile, args: ["--log-format", "json"] })
  })

  afterAll(async () => {
    while (cleanups.length > 0) await cleanups.pop()!()
    await gateway?.stop()
    await echo?.stop()
    otlp?.close()
  })

  it("/metrics counts known traffic exactly, and /gateway/stats says the same", async () => {
    const call = (template: string, name: string) => api(`${gateway.url}/mcp/${template}/tools/call`, { json: { name, arguments: {} } })
    for (let i = 0; i < 4; i++) expect((await call("echo", "headers")).status).toBe(200)
    for (let i = 0; i < 2; i++) {
      expect((await api(`${gateway.url}/mcp/echo/prompts/get`, { json: { name: "nope" } })).status).toBe(404)
    }
    // Three requests on an MCP session, after its initialize.
    const session = (await initializeRaw(`${gateway.url}/mcp/echo`)).headers.get("mcp-session-id")!
    for (let id = 2; id <= 4; id++) {
      const r = await fetch(`${gateway.url}/mcp/echo`, {
        method: "POST",
        headers: { ...mcpPostHeaders, "mcp-session-id": session },
        body: JSON.stringify({ jsonrpc: "2.0", id, method: "tools/call", params: { name: "headers", arguments: {} } })
      })
      expect(r.status).toBe(200)
      await r.text()
    }
    // A template limited to one request: two more are refused.
    const limited = await Promise.all([call("limited", "headers"), call("limited", "headers"), call("limited", "headers")])
    expect(limited.map((r) => r.status).sort()).toEqual([200, 429, 429])

    const m = await scrape(gateway)
    expect(m.value("mcp_gateway_requests_total", { template: "echo", operation: "tools/call", instance: "e1", outcome: "ok" })).toBe(7)
    expect(m.value("mcp_gateway_requests_total", { template: "echo", operation: "prompts/get", outcome: "mcp_error" })).toBe(2)
    expect(m.value("mcp_gateway_requests_total", { template: "echo", operation: "initialize", outcome: "ok" })).toBe(1)
    expect(m.value("mcp_gateway_request_duration_seconds_count", { template: "echo", operation: "tools/call" })).toBe(7)
    expect(m.value("mcp_gateway_request_duration_seconds_bucket", { template: "echo", operation: "tools/call", le: "+Inf" })).toBe(7)
    expect(m.value("mcp_gateway_backend_request_duration_seconds_count", { template: "echo", instance: "e1" })).toBe(10)
    expect(m.types.get("mcp_gateway_request_duration_seconds")).toBe("histogram")
    expect(m.value("mcp_gateway_rate_limited_total", { limit: "template", template: "limited" })).toBe(2)
    expect(m.value("mcp_gateway_instance_inflight_requests", { template: "echo", instance: "e1" })).toBe(0)
    expect(m.value("mcp_gateway_instance_healthy", { template: "echo", instance: "e1" })).toBe(1)
    expect(m.value("mcp_gateway_instance_status", { template: "echo", instance: "e1", status: "healthy" })).toBe(1)
    expect(m.value("mcp_gateway_circuit_breaker_state", { template: "echo", instance: "e1", state: "closed" })).toBe(1)
    expect(m.value("mcp_gateway_circuit_breaker_state", { template: "echo", instance: "e1", state: "open" })).toBe(0)
    expect(m.value("mcp_gateway_mcp_sessions_open", { template: "echo", protocol_version: "2025-11-25" })).toBe(1)
    expect(m.value("mcp_gateway_health_probes_total", { template: "echo", instance: "e1", result: "ok" })).toBe(1)
    expect(m.value("mcp_gateway_health_probe_duration_seconds_count", { template: "echo" })).toBeGreaterThanOrEqual(1)
    expect(m.value("mcp_gateway_up")).toBe(1)
    // No unbounded label: no session id, request id or argument anywhere.
    for (const sample of m.samples) {
      for (const key of Object.keys(sample.labels)) {
        expect(["template", "operation", "instance", "outcome", "status", "state", "limit", "result", "protocol_version", "scope", "le", "quantile"]).toContain(key)
      }
    }

    const stats = (await api(`${gateway.url}/gateway/stats`)).body
    expect(stats.templates.echo.requests).toBe(m.value("mcp_gateway_requests_total", { template: "echo" }))
    expect(stats.templates.echo.errors).toBe(2)
    expect(stats.templates.echo.instances.e1).toMatchObject({ requests: 10, errors: 2, share: 1, weight_share: 1, status: "healthy" })
    expect(stats.templates.echo.instances.e1.latency_ms.p95).toBeGreaterThan(0)
    expect(stats.templates.echo.latency_ms.p50).toBeGreaterThan(0)
    expect(stats.templates.echo.sessions).toBe(1)
  })

  it("stdio restarts are counted", async () => {
    const before = (await scrape(gateway)).value("mcp_gateway_process_restarts_total", { template: "crashy" })
    const child = descendants(gateway.process.pid!).find((pid) => fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("misbehaving"))!
    process.kill(child, "SIGKILL")
    await waitUntil(async () => (await scrape(gateway)).value("mcp_gateway_process_restarts_total", { template: "crashy", instance: "c1" }) === before + 1, 5000, "the restart counted")
  })

  it("one JSON log line per request, with its request id, which the response returns and the backend receives", async () => {
    const r = await api(`${gateway.url}/mcp/echo/tools/call`, { json: { name: "headers", arguments: {} }, headers: { "x-request-id": "req-obs-1" } })
    expect(r.headers.get("x-request-id")).toBe("req-obs-1")
    expect(JSON.parse(r.body.content[0].text)["x-request-id"]).toBe("req-obs-1")
    const generated = await api(`${gateway.url}/mcp/echo/tools/call`, { json: { name: "headers", arguments: {} } })
    expect(generated.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/)
    await waitUntil(() => gateway.stderr().includes("req-obs-1"), 5000, "the request log line")
    const line = gateway.stderr().split("\n").filter((l) => l.includes("\"req-obs-1\"")).map((l) => JSON.parse(l)).find((l) => l.message === "request")
    expect(line).toMatchObject({
      logLevel: "INFO",
      message: "request",
      annotations: {
        request_id: "req-obs-1",
        template: "echo",
        operation: "tools/call",
        subject: "headers",
        instance: "e1",
        strategy: "round_robin",
        attempts: 1,
        outcome: "ok",
        status: 200
      }
    })
    expect(line.annotations.duration_ms).toBeGreaterThan(0)
    // Every line of the gateway's log is JSON with --log-format json (nothing else on stderr).
    for (const l of gateway.stderr().split("\n").filter((l) => l.trim() !== "")) expect(() => JSON.parse(l), l).not.toThrow()
    expect(gateway.stdout()).toBe("")
  })

  it("exports the span tree over OTLP and propagates traceparent to the backend, in a header and in _meta", async () => {
    const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
    const clientSpan = "00f067aa0ba902b7"
    const r = await api(`${gateway.url}/mcp/echo/tools/call`, {
      json: { name: "headers", arguments: {} },
      headers: { "x-request-id": "req-trace-1", traceparent: `00-${clientTrace}-${clientSpan}-01` }
    })
    const seenByBackend = JSON.parse(r.body.content[0].text).traceparent as string
    expect(seenByBackend).toMatch(new RegExp(`^00-${clientTrace}-[0-9a-f]{16}-01$`))
    const meta = await api(`${gateway.url}/mcp/echo/tools/call`, { json: { name: "meta", arguments: {} }, headers: { traceparent: `00-${clientTrace}-${clientSpan}-01` } })
    expect(JSON.parse(meta.body.content[0].text).traceparent).toMatch(new RegExp(`^00-${clientTrace}-[0-9a-f]{16}-01$`))

    const spans = () =>
      received.flatMap((batch) => batch.resourceSpans ?? []).flatMap((r: any) => r.scopeSpans ?? []).flatMap((s: any) => s.spans ?? [])
        .filter((s: any) => s.traceId === clientTrace)
    await waitUntil(() => spans().some((s: any) => s.name === "gateway.backend") && spans().some((s: any) => s.name === "gateway.request"), 10_000, "the spans")
    const request = spans().find((s: any) => s.name === "gateway.request" && s.attributes.some((a: any) => a.key === "http.request.id" && a.value.stringValue === "req-trace-1"))
    expect(request).toBeDefined()
    expect(request.parentSpanId).toBe(clientSpan)
    const children = (parent: any, name: string) => spans().filter((s: any) => s.name === name && s.parentSpanId === parent.spanId)
    const [select] = children(request, "gateway.select")
    const [attempt] = children(request, "gateway.attempt")
    expect(select).toBeDefined()
    expect(attempt).toBeDefined()
    const [backend] = children(attempt, "gateway.backend")
    expect(backend).toBeDefined()
    // The backend saw the backend-call span as its parent.
    expect(seenByBackend.split("-")[2]).toBe(backend.spanId)
    expect(backend.attributes).toContainEqual({ key: "mcp.instance", value: { stringValue: "e1" } })
    // Traced, the request ran through the request path's driver, as untraced ones do: the core
    // stamps the driver on the attempt's span (a traced request that took the fiber path says "effect").
    expect(attempt.attributes).toContainEqual({ key: "gateway.driver", value: { stringValue: "callback" } })
  })

  it("a traced MCP endpoint request runs through the same driver as an untraced one", async () => {
    const clientTrace = "5cf92f3577b34da6a3ce929d0e0e4737"
    const init = await initializeRaw(`${gateway.url}/mcp/echo`)
    expect(init.status).toBe(200)
    const session = init.headers.get("mcp-session-id")!
    await init.text()
    const headers = { ...mcpPostHeaders, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25" }
    await fetch(`${gateway.url}/mcp/echo`, { method: "POST", headers, body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) }).then((r) => r.text())
    const r = await fetch(`${gateway.url}/mcp/echo`, {
      method: "POST",
      headers: { ...headers, traceparent: `00-${clientTrace}-00f067aa0ba902b8-01` },
      body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "count", arguments: {} } })
    })
    expect(r.status).toBe(200)
    await r.text()
    const spans = () =>
      received.flatMap((batch) => batch.resourceSpans ?? []).flatMap((r: any) => r.scopeSpans ?? []).flatMap((s: any) => s.spans ?? [])
        .filter((s: any) => s.traceId === clientTrace)
    await waitUntil(() => spans().some((s: any) => s.name === "gateway.attempt") && spans().some((s: any) => s.name === "gateway.request"), 10_000, "the spans")
    const request = spans().find((s: any) => s.name === "gateway.request")
    expect(request.attributes).toContainEqual({ key: "mcp.method", value: { stringValue: "tools/call" } })
    const attempt = spans().find((s: any) => s.name === "gateway.attempt")
    expect(attempt.parentSpanId).toBe(request.spanId)
    expect(attempt.attributes).toContainEqual({ key: "gateway.driver", value: { stringValue: "callback" } })
  })

  it("the status page shows the instances live, in a real browser, and follows a process that dies", async () => {
    const browser = await launchBrowser()
    cleanups.push(() => browser.close())
    const page = await browser.newPage({ viewport: { width: 390, height: 844 } })
    await page.goto(`${gateway.url}/gateway/ui`)
    const row = (instance: string) => page.locator(`tr[data-instance="${instance}"]`)
    await row("echo/e1").waitFor()
    await row("crashy/c1").waitFor()
    await page.waitForFunction(rowShows, ["crashy/c1", "data-status", "healthy", false] as const)
    expect(await page.locator("section[data-template]").count()).toBe(3)
    // On a phone the page does not scroll sideways: wide tables scroll inside their section.
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth)).toBe(true)
    // The process dies: the row changes without a reload.
    const pid = descendants(gateway.process.pid!).find((p) => fs.readFileSync(`/proc/${p}/cmdline`, "utf8").includes("misbehaving"))!
    const navigations: Array<string> = []
    page.on("framenavigated", (f) => navigations.push(f.url()))
    const restarts = await row("crashy/c1").getAttribute("data-restarts")
    process.kill(pid, "SIGKILL")
    await page.waitForFunction(rowShows, ["crashy/c1", "data-status", "healthy", true] as const, { timeout: 10_000 })
    expect(navigations).toEqual([])
    const artifacts = path.join(repoRoot, ".tmp/artifacts")
    fs.mkdirSync(artifacts, { recursive: true })
    await page.screenshot({ path: path.join(artifacts, "status-page.png"), fullPage: true })
    expect(fs.statSync(path.join(artifacts, "status-page.png")).size).toBeGreaterThan(1000)
    await page.waitForFunction(rowShows, ["crashy/c1", "data-status", "healthy", false] as const, { timeout: 10_000 })
    expect(Number(await row("crashy/c1").getAttribute("data-restarts"))).toBe(Number(restarts) + 1)
  })
})

describe("the status page with auth on", () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    while (cleanups.length > 0) await cleanups.pop()!()
  })

  it("asks for a credential, then shows the instances", async () => {
    const { hashApiKey, newApiKey } = await import("../../src/domain/apiKey.js")
    const key = newApiKey()
    const configFile = path.join(tempDir(), "gateway.json")
    writeJson(configFile, {
      auth: { api_keys: [{ id: "viewer", hash: hashApiKey(key), scopes: ["gateway:read"] }] },
      templates: { t: { instances: [{ id: "s1", transport: "stdio", command: ["node", everythingServer, "stdio"] }] } }
    })
    const gateway = await startGateway({ configFile })
    cleanups.push(() => gateway.stop())
    expect((await fetch(`${gateway.url}/metrics`)).status).toBe(401)
    const browser = await launchBrowser()
    cleanups.push(() => browser.close())
    const page = await browser.newPage()
    await page.goto(`${gateway.url}/gateway/ui`)
    await page.locator("#login.shown").waitFor()
    await page.fill("#credential", key)
    await page.click("#login button")
    await page.locator('tr[data-instance="t/s1"][data-status="healthy"]').waitFor({ timeout: 10_000 })
  })
})
