import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import {
  api,
  descendants,
  everythingServer,
  freePort,
  type RunningGateway,
  runGateway,
  repoRoot,
  startEverythingHttp,
  startGateway,
  tempDir,
  waitUntil,
  writeJson
} from "../support/processes.js"

/** Failure paths with real processes: dead backends, lost sessions, crashes, slow tools, bad start-ups. */
describe("failures end to end", () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    while (cleanups.length > 0) await cleanups.pop()!()
  })
  const gatewayWith = async (config: unknown, args: ReadonlyArray<string> = []) => {
    const dir = tempDir()
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, config)
    const gateway = await startGateway({ configFile, args })
    cleanups.push(() => gateway.stop())
    return gateway
  }
  const server = async (port?: number) => {
    const s = await startEverythingHttp(port)
    cleanups.push(() => s.stop())
    return s
  }
  const echo = (gateway: RunningGateway, template: string, message = "x") =>
    api(`${gateway.url}/mcp/${template}/tools/call`, { json: { name: "echo", arguments: { message } } })

  it("routes around a backend that is down, and marks it unhealthy", async () => {
    const deadPort = await freePort()
    const gateway = await gatewayWith({
      templates: {
        t: {
          instances: [
            { id: "dead", transport: "http", endpoint: `http://127.0.0.1:${deadPort}/mcp` },
            { id: "alive", transport: "stdio", command: ["node", everythingServer, "stdio"] }
          ],
          load_balancer: { health_check_interval: 60 }
        }
      }
    })
    const health = await api(`${gateway.url}/mcp/t/health`)
    expect(health.body.instances.dead).toMatchObject({ healthy: false, status: "unhealthy" })
    expect(health.body.instances.dead.last_error).toContain("ECONNREFUSED")
    for (let i = 0; i < 6; i++) {
      const r = await echo(gateway, "t")
      expect(r.status).toBe(200)
      expect(r.headers.get("x-instance-id")).toBe("alive")
    }
  })

  it("brings a recovered backend back after a successful probe", async () => {
    const port = await freePort()
    const gateway = await gatewayWith({
      templates: {
        t: {
          instances: [{ id: "late", transport: "http", endpoint: `http://127.0.0.1:${port}/mcp` }],
          load_balancer: { health_check_interval: 0.5, health_check_timeout: 2 }
        }
      }
    })
    const down = await echo(gateway, "t")
    expect(down.status).toBe(503)
    expect(down.body.error.type).toBe("no_healthy_instance")
    await server(port)
    await waitUntil(async () => (await api(`${gateway.url}/mcp/t/health`)).body.healthy_instances === 1, 15_000, "the instance to recover")
    expect((await echo(gateway, "t", "back")).body.content[0].text).toBe("Echo: back")
  })

  it("kill and restart under load: the restarted instance serves again within one probe interval, not after its ejection", async () => {
    const [a, bPort] = await Promise.all([server(), freePort()])
    let b = await startEverythingHttp(bPort)
    cleanups.push(() => b.stop())
    const interval = 2
    const gateway = await gatewayWith({
      templates: {
        t: {
          instances: [
            { id: "a", transport: "http", endpoint: a.url },
            { id: "b", transport: "http", endpoint: b.url }
          ],
          load_balancer: {
            health_check_interval: interval,
            health_check_timeout: 1,
            // An ejection far longer than the test: only a passing probe can end it in time.
            outlier_base_ejection: 120,
            retry: { base_delay_ms: 0 },
            // The breaker (which a probe does not close) cools down within the interval.
            circuit_breaker: { failure_threshold: 5, base_delay_ms: 200, max_delay_ms: 1000 }
          }
        }
      }
    })
    const served: Array<{ at: number; by: string | null; status: number }> = []
    let running = true
    const worker = async () => {
      while (running) {
        const r = await fetch(`${gateway.url}/mcp/t/tools/call`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ name: "echo", arguments: { message: "load" } })
        }).then(async (res) => ({ status: res.status, by: res.headers.get("x-instance-id"), body: await res.text() }), () => ({ status: 0, by: null }))
        served.push({ at: Date.now(), by: r.by, status: r.status })
      }
    }
    const workers = Array.from({ length: 4 }, worker)
    try {
      await waitUntil(() => served.some((r) => r.by === "b"), 15_000, "b to serve")
      await b.stop()
      const killedAt = Date.now()
      await waitUntil(async () => (await api(`${gateway.url}/mcp/t/health`)).body.instances.b.outlier.ejected === true, 15_000, "b to be ejected")
      b = await startEverythingHttp(bPort)
      const restartedAt = Date.now()
      await waitUntil(() => served.some((r) => r.by === "b" && r.at > restartedAt), 30_000, "the restarted b to serve")
      const back = served.find((r) => r.by === "b" && r.at > restartedAt)!.at - restartedAt
      const health = (await api(`${gateway.url}/mcp/t/health`)).body.instances.b
      const during = served.filter((r) => r.at > killedAt)
      console.log(
        `kill and restart: b served again ${back} ms after its restart (probe interval ${interval} s ±20%, ejection 120 s); ` +
          `${during.length} requests since the kill, ${during.filter((r) => r.status !== 200).length} not 200`
      )
      // One probe interval (jittered up to +20%), and the probe's own time, with room for a busy machine.
      expect(back).toBeLessThan(interval * 1.2 * 1000 + 2_000)
      expect(health.outlier.ejected).toBe(false)
      expect(health.outlier.ejections).toBe(1)
      expect(gateway.stderr()).toContain("outlier ejection ended: a health probe passed")
    } finally {
      running = false
      await Promise.all(workers)
    }
  }, 90_000)

  it("re-initializes when an HTTP backend has forgotten the session", async () => {
    const first = await server()
    const gateway = await gatewayWith({
      templates: { t: { instances: [{ id: "h", transport: "http", endpoint: first.url }], load_balancer: { health_check_interval: 600 } } }
    })
    expect((await echo(gateway, "t", "one")).status).toBe(200)
    // Restart the server on the same port: every session it knew is gone (it answers 400 "No valid session ID").
    await first.stop()
    await server(first.port)
    const after = await echo(gateway, "t", "two")
    expect(after.status).toBe(200)
    expect(after.body.content[0].text).toBe("Echo: two")
    expect(gateway.stderr()).toContain("initializing again")
  })

  it("restarts a stdio server that died, on the next probe", async () => {
    const gateway = await gatewayWith({
      templates: {
        t: {
          instances: [{ id: "s", transport: "stdio", command: ["node", everythingServer, "stdio"] }],
          load_balancer: { health_check_interval: 0.5 }
        }
      }
    })
    expect((await echo(gateway, "t")).status).toBe(200)
    const [child] = descendants(gateway.process.pid!)
    process.kill(child!, "SIGKILL")
    await waitUntil(async () => {
      const r = await echo(gateway, "t", "revived")
      return r.status === 200 && r.body.content[0].text === "Echo: revived"
    }, 15_000, "a new process")
    expect(descendants(gateway.process.pid!)).not.toContain(child)
  })

  it("answers 504 when a call outlives the template's timeout", async () => {
    const gateway = await gatewayWith({
      templates: {
        t: {
          instances: [{ id: "s", transport: "stdio", command: ["node", everythingServer, "stdio"] }],
          load_balancer: { timeout: 1 }
        }
      }
    })
    const started = Date.now()
    const slow = await api(`${gateway.url}/mcp/t/tools/call`, {
      json: { name: "trigger-long-running-operation", arguments: { duration: 5, steps: 5 } }
    })
    expect(slow.status).toBe(504)
    expect(slow.body.error.type).toBe("upstream_timeout")
    expect(Date.now() - started).toBeLessThan(4000)
    // The instance is still usable.
    expect((await echo(gateway, "t")).status).toBe(200)
  })

  it("a bad flag value is one line naming the flag, exit code 2, nothing on stdout", async () => {
    for (const [args, line] of [
      [["start", "--log-level", "loud"], `--log-level: expected one of trace, debug, info, warn, error, fatal, none, got "loud"`],
      [["start", "--port", "abc"], `--port: expected an integer from 0 to 65535, got "abc"`],
      [["--port", "70000"], `--port: expected an integer from 0 to 65535, got "70000"`],
      [["start", "--log-format", "xml"], `--log-format: expected one of text, json, pretty, got "xml"`]
    ] as const) {
      const result = await runGateway([...args])
      expect(result.code, args.join(" ")).toBe(2)
      expect(result.stderr.trim()).toBe(line)
      expect(result.stdout).toBe("")
    }
  })

  it("config validate: the bundled example is valid (exit 0, a summary on stdout); a bad one gives its problems and exit 2; nothing starts", async () => {
    const valid = await runGateway(["config", "validate", path.join(repoRoot, "examples/gateway.json")])
    expect(valid.code).toBe(0)
    expect(valid.stdout).toMatch(/gateway\.json: valid \(2 templates, 3 instances\)/)
    const dir = tempDir()
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, { gateway: { port: "x" }, templates: { t: { instances: [{ id: "a", transport: "http" }], load_balancer: { stratgy: "x" } } } })
    const invalid = await runGateway(["config", "validate", configFile])
    expect(invalid.code).toBe(2)
    expect(invalid.stdout).toBe("")
    expect(invalid.stderr.trim().split("\n")).toEqual([
      `mcp-gateway: gateway.port: expected number, got "x"`,
      "templates.t.instances[0].endpoint: is missing",
      `templates.t.load_balancer.stratgy: is not a known field; did you mean "strategy"?`
    ])
    writeJson(configFile, { templates: { t: { instances: [], load_balancer: { strategy: "./nowhere.js" } } } })
    const plugin = await runGateway(["config", "validate", configFile])
    expect(plugin.code).toBe(2)
    expect(plugin.stderr).toContain(`templates.t.load_balancer.strategy: strategy plugin "./nowhere.js": cannot find module`)
  })

  it("refuses an invalid config with one line per problem, exit code 2 and no stack trace", async () => {
    const dir = tempDir()
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, {
      templates: {
        everything: {
          instances: [
            { id: "a", transport: "stdio", command: [] },
            { id: "b", transport: "http", endpoint: "localhost" }
          ]
        }
      }
    })
    const result = await runGateway(["start", "--config", configFile])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain(`templates.everything.instances[1].endpoint: expected an http(s) URL, got "localhost"`)
    expect(result.stderr).toContain("templates.everything.instances[0].command")
    expect(result.stderr).not.toMatch(/\n\s+at /)
    expect(result.stdout).toBe("")

    writeJson(configFile, { templates: { t: { instances: [], load_balancer: { strategy: "./nowhere.js" } } } })
    const plugin = await runGateway(["--config", configFile])
    expect(plugin.code).toBe(2)
    expect(plugin.stderr).toContain(`templates.t.load_balancer.strategy: strategy plugin "./nowhere.js": cannot find module`)

    const registry = path.join(dir, "registry.json")
    fs.writeFileSync(registry, "{\"version\": 1, \"templ")
    writeJson(configFile, { templates: {} })
    const corrupt = await runGateway(["start", "--config", configFile], { MCP_GATEWAY_REGISTRY_FILE: registry })
    expect(corrupt.code).toBe(2)
    expect(corrupt.stderr).toContain("is not valid JSON")
    expect(fs.readFileSync(registry, "utf8")).toBe("{\"version\": 1, \"templ")
  })

  it("loads a custom strategy plugin by path from the config", async () => {
    const pluginFile = path.join(repoRoot, "test/fixtures/plugins/always-last.mjs")
    const gateway = await gatewayWith({
      templates: {
        t: {
          instances: [
            { id: "first", transport: "stdio", command: ["node", everythingServer, "stdio"] },
            { id: "last", transport: "stdio", command: ["node", everythingServer, "stdio"] }
          ],
          load_balancer: { strategy: pluginFile }
        }
      }
    })
    for (let i = 0; i < 4; i++) expect((await echo(gateway, "t")).headers.get("x-instance-id")).toBe("last")
    expect((await api(`${gateway.url}/gateway/stats`)).body.strategies[pluginFile].requests).toBe(4)
  })
})

