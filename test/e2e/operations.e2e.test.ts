import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import {
  api,
  descendants,
  everythingServer,
  freePort,
  initializeRaw,
  isAlive,
  mcpPostHeaders,
  type RunningGateway,
  repoRoot,
  runGateway,
  startEverythingHttp,
  startGateway,
  tempDir,
  waitUntil,
  writeJson
} from "../support/processes.js"

const misbehaving = path.join(repoRoot, "test/fixtures/misbehaving-server.mjs")
const everything = (id: string, env?: Record<string, string>) => ({
  id,
  transport: "stdio",
  command: ["node", everythingServer, "stdio"],
  ...(env ? { env } : {})
})

/** Health, outlier detection, breakers, supervision, timeouts, drain and shutdown, with real processes. */
describe("operations end to end", () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    while (cleanups.length > 0) await cleanups.pop()!()
  })
  const gatewayWith = async (config: unknown, args: ReadonlyArray<string> = []) => {
    const configFile = path.join(tempDir(), "gateway.json")
    writeJson(configFile, config)
    const gateway = await startGateway({ configFile, args })
    cleanups.push(() => gateway.stop())
    return gateway
  }
  const call = (gateway: RunningGateway, template: string, name: string, args: Record<string, unknown> = {}) =>
    api(`${gateway.url}/mcp/${template}/tools/call`, { json: { name, arguments: args } })

  it("requests of an MCP session count in least_connections: slow calls pinned on one instance send REST calls to the other", async () => {
    const gateway = await gatewayWith({
      templates: { t: { instances: [everything("a"), everything("b")], load_balancer: { strategy: "least_connections" } } }
    })
    const client = new Client({ name: "e2e", version: "1" })
    await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp/t`)))
    cleanups.push(() => client.close())
    const slow = Array.from({ length: 3 }, () =>
      client.callTool({ name: "trigger-long-running-operation", arguments: { duration: 3, steps: 3 } }))
    let pinned = ""
    await waitUntil(async () => {
      const stats = (await api(`${gateway.url}/gateway/stats`)).body.templates.t.instances
      pinned = Object.keys(stats).find((id) => stats[id].active_requests === 3) ?? ""
      return pinned !== ""
    }, 5000, "three calls in flight on one instance")
    for (let i = 0; i < 4; i++) {
      const r = await call(gateway, "t", "echo", { message: "x" })
      expect(r.status).toBe(200)
      expect(r.headers.get("x-instance-id")).not.toBe(pinned)
    }
    await Promise.all(slow)
    // Everything the session did is in the stats too.
    expect((await api(`${gateway.url}/gateway/stats`)).body.templates.t.instances[pinned].requests).toBeGreaterThanOrEqual(4)
  })

  it("an instance failing every other probe does not flap out of rotation under the default thresholds", async () => {
    const gateway = await gatewayWith({
      templates: {
        t: {
          instances: [{ id: "flaky", transport: "stdio", command: ["node", misbehaving], env: { MISBEHAVE: "flaky-ping" } }],
          load_balancer: { health_check_interval: 0.2 }
        }
      }
    })
    // Watched until the checker has seen more failed probes than the default threshold (3): by
    // then a verdict that flapped would have shown.
    const seen = new Set<string>()
    const failures = async () => (await api(`${gateway.url}/gateway/stats`)).body.health_checker.failures as number
    await waitUntil(async () => {
      seen.add((await api(`${gateway.url}/mcp/t/health`)).body.instances.flaky.status)
      return (await failures()) > 3
    }, 15_000, "more than 3 failed probes")
    seen.add((await api(`${gateway.url}/mcp/t/health`)).body.instances.flaky.status)
    expect(Array.from(seen)).toEqual(["healthy"])
  })

  it("a tool that reports progress every second for longer than the timeout completes (REST and MCP endpoint)", async () => {
    const gateway = await gatewayWith({ templates: { t: { instances: [everything("s")], load_balancer: { timeout: 2 } } } })
    const rest = await call(gateway, "t", "trigger-long-running-operation", { duration: 4, steps: 4 })
    expect(rest.status).toBe(200)
    expect(JSON.stringify(rest.body)).toContain("Long running operation completed")

    const client = new Client({ name: "e2e", version: "1" })
    await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp/t`)))
    cleanups.push(() => client.close())
    const progress: Array<number> = []
    const result = await client.callTool(
      { name: "trigger-long-running-operation", arguments: { duration: 4, steps: 4 } },
      undefined,
      { onprogress: (p) => void progress.push(p.progress), timeout: 20_000 }
    )
    expect(JSON.stringify(result)).toContain("Long running operation completed")
    expect(progress).toEqual([1, 2, 3, 4])

    // Without progress, the timeout stands.
    const silent = await call(gateway, "t", "trigger-long-running-operation", { duration: 4, steps: 1 })
    expect(silent.status).toBe(504)
  })

  it("with every instance down: 503 at once with Retry-After, on the REST face and the MCP endpoint", async () => {
    const dead = await freePort()
    const gateway = await gatewayWith({
      templates: {
        t: {
          instances: [{ id: "dead", transport: "http", endpoint: `http://127.0.0.1:${dead}/mcp` }],
          load_balancer: { health_check_interval: 5 }
        }
      }
    })
    const started = Date.now()
    const rest = await call(gateway, "t", "echo", { message: "x" })
    expect(rest.status).toBe(503)
    expect(rest.body.error.type).toBe("no_healthy_instance")
    const retryAfter = Number(rest.headers.get("retry-after"))
    expect(retryAfter).toBeGreaterThanOrEqual(1)
    expect(retryAfter).toBeLessThanOrEqual(6)
    const mcp = await initializeRaw(`${gateway.url}/mcp/t`)
    expect(mcp.status).toBe(503)
    expect(Number(mcp.headers.get("retry-after"))).toBeGreaterThanOrEqual(1)
    expect(((await mcp.json()) as any).error.message).toContain("no healthy instance")
    expect(Date.now() - started).toBeLessThan(2000)
  })

  it("a crash-looping stdio server ends failed, with its stderr in the registry; a restart in progress shows as unhealthy", async () => {
    const gateway = await gatewayWith({
      templates: {
        t: {
          instances: [{ id: "crashy", transport: "stdio", command: ["node", misbehaving], env: { MISBEHAVE: "crash" } }],
          load_balancer: { max_restarts: 2, restart_backoff: { base_delay_ms: 300, max_delay_ms: 300, jitter: 0 } }
        }
      }
    })
    const instance = async () => (await api(`${gateway.url}/gateway/registry`)).body.templates.t.instances[0]
    // Right after start-up it is down and being restarted.
    expect(await instance()).toMatchObject({ status: "unhealthy", process: { state: "restarting" } })
    expect((await call(gateway, "t", "echo", { message: "x" })).status).toBe(503)
    await waitUntil(async () => (await instance()).status === "failed", 10_000, "the instance to be marked failed")
    const failed = await instance()
    expect(failed.process).toMatchObject({ state: "failed", restarts: 2, last_exit: "process exited (code 1)" })
    expect(failed.process.stderr_tail).toContain("fatal: MISBEHAVING_API_KEY is not set")
    expect(failed.last_error).toBe("process exited (code 1)")
    expect((await api(`${gateway.url}/mcp/t/health`)).body.instances.crashy.status).toBe("failed")
    expect(gateway.stderr()).toContain("not restarting it")
    expect(gateway.stderr()).toContain("MISBEHAVING_API_KEY")
  })

  it("a killed shared process shows as unhealthy until its restart succeeds", async () => {
    const gateway = await gatewayWith({
      templates: {
        t: {
          instances: [everything("s", { GATEWAY_TEST_INSTANCE: "shown" })],
          load_balancer: { restart_backoff: { base_delay_ms: 1500, max_delay_ms: 1500, jitter: 0 } }
        }
      }
    })
    const [child] = descendants(gateway.process.pid!)
    process.kill(child!, "SIGKILL")
    await waitUntil(async () => (await api(`${gateway.url}/mcp/t/health`)).body.instances.s.status === "unhealthy", 3000, "unhealthy")
    const down = (await api(`${gateway.url}/mcp/t/health`)).body.instances.s
    expect(down).toMatchObject({ healthy: false, process: { state: "restarting", restarts: 1 } })
    expect(down.last_error).toMatch(/process exited/)
    await waitUntil(async () => (await api(`${gateway.url}/mcp/t/health`)).body.instances.s.status === "healthy", 10_000, "healthy again")
    expect((await call(gateway, "t", "echo", { message: "back" })).body.content[0].text).toBe("Echo: back")
  })

  it("a 50 MB line and a flood of non-JSON on stdout leave the gateway healthy and its memory bounded", async () => {
    const gateway = await gatewayWith({
      templates: { t: { instances: [{ id: "m", transport: "stdio", command: ["node", misbehaving] }], load_balancer: { timeout: 60 } } }
    })
    const rss = () => {
      const status = fs.readFileSync(`/proc/${gateway.process.pid}/status`, "utf8")
      return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024
    }
    const before = rss()
    const huge = await call(gateway, "t", "huge-line", { mb: 50 })
    expect(huge.status).toBe(200)
    expect(huge.body.content[0].text).toBe("wrote 50 MiB")
    const flood = await call(gateway, "t", "flood", { lines: 200_000 })
    expect(flood.status).toBe(200)
    expect((await call(gateway, "t", "echo", { message: "still here" })).body.content[0].text).toBe("Echo: still here")
    expect((await api(`${gateway.url}/mcp/t/health`)).body.healthy_instances).toBe(1)
    // The line was dropped, not kept: the gateway grew by less than the line itself.
    expect(rss() - before).toBeLessThan(200)
    expect(gateway.stderr()).toMatch(/dropped a line of 52428800 characters/)
    // The flood is logged as a handful of lines and, at the end of the window, a count of the rest.
    await waitUntil(() => /\d+ more like it were not logged/.test(gateway.stderr()), 10_000, "the flood's summary")
    expect(gateway.stderr().split("\n").filter((l) => l.includes("not JSON-RPC")).length).toBeLessThanOrEqual(10)
  })

  it("deregistering an instance with a call in flight lets the call finish, then stops its process", async () => {
    const gateway = await gatewayWith({ gateway: { allow_stdio_registration: true }, templates: { t: { instances: [] } } })
    const registered = await api(`${gateway.url}/gateway/register`, {
      json: { template_name: "t", instance: { id: "busy", transport: "stdio", command: ["node", misbehaving] } }
    })
    expect(registered.status).toBe(201)
    expect((await call(gateway, "t", "echo", { message: "warm" })).status).toBe(200)
    const [child] = descendants(gateway.process.pid!)
    const inflight = call(gateway, "t", "slow", { seconds: 2 })
    await waitUntil(async () => (await api(`${gateway.url}/gateway/stats`)).body.templates.t.instances.busy?.active_requests === 1, 5_000, "the call in flight")
    expect((await api(`${gateway.url}/gateway/deregister/t/busy`, { method: "DELETE" })).status).toBe(200)
    // It takes no new requests (the template has no instance left)...
    const refused = await call(gateway, "t", "echo", { message: "x" })
    expect(refused.status).toBe(503)
    expect(refused.body.error.message).toContain("has no instances")
    // ...and the one in flight finishes.
    const finished = await inflight
    expect(finished.status).toBe(200)
    expect(finished.body.content[0].text).toBe("slept 2s")
    await waitUntil(() => !isAlive(child!), 10_000, "the process to stop after the drain")
    expect(gateway.stderr()).toContain("draining: 1 requests in flight")
  })

  it("SIGTERM: no descendant survives, not even a grandchild that ignores SIGTERM; an idle standing stream does not hold it up", async () => {
    const command = `trap '' TERM; sleep 1000 & exec node ${JSON.stringify(everythingServer)} stdio`
    const gateway = await startGateway({
      configFile: (() => {
        const f = path.join(tempDir(), "gateway.json")
        writeJson(f, { templates: { t: { instances: [{ id: "sh", transport: "stdio", command: ["sh", "-c", command] }] } } })
        return f
      })()
    })
    // (Stopped by the test itself; this only matters if an assertion fails first.)
    cleanups.push(() => gateway.stop())
    const opened = await initializeRaw(`${gateway.url}/mcp/t`)
    const session = opened.headers.get("mcp-session-id")!
    const standing = await fetch(`${gateway.url}/mcp/t`, { headers: { accept: "text/event-stream", "mcp-session-id": session } })
    expect(standing.status).toBe(200)
    const family = descendants(gateway.process.pid!)
    expect(family.length).toBeGreaterThanOrEqual(2)
    const started = Date.now()
    expect(await gateway.stop()).toBe(0)
    // Well within the 30 s drain: the idle stream ended at once.
    expect(Date.now() - started).toBeLessThan(10_000)
    for (const pid of family) expect(isAlive(pid), `process ${pid}`).toBe(false)
    expect(gateway.stderr()).toContain("shutting down")
  })

  it("an MCP session whose HTTP backend forgot it ends (404); a timeout does not end it", async () => {
    const first = await startEverythingHttp()
    cleanups.push(() => first.stop())
    const gateway = await gatewayWith({
      templates: { h: { instances: [{ id: "h1", transport: "http", endpoint: first.url }], load_balancer: { timeout: 1 } } }
    })
    const rpc = (session: string, id: number, method: string, params: unknown) =>
      fetch(`${gateway.url}/mcp/h`, {
        method: "POST",
        headers: { ...mcpPostHeaders, "mcp-session-id": session },
        body: JSON.stringify({ jsonrpc: "2.0", id, method, params })
      })
    const session = (await initializeRaw(`${gateway.url}/mcp/h`)).headers.get("mcp-session-id")!
    // A request that outlives the timeout is an error for that request only.
    const slow = await rpc(session, 2, "tools/call", { name: "trigger-long-running-operation", arguments: { duration: 3, steps: 1 } })
    expect(slow.status).toBe(200)
    expect(await slow.text()).toContain("did not answer")
    const echo = await rpc(session, 3, "tools/call", { name: "echo", arguments: { message: "still" } })
    expect(await echo.text()).toContain("Echo: still")
    // The backend restarts and forgets every session: the client's session is over.
    await first.stop()
    const second = await startEverythingHttp(first.port)
    cleanups.push(() => second.stop())
    expect((await rpc(session, 4, "tools/call", { name: "echo", arguments: { message: "x" } })).status).toBe(404)
    expect((await rpc(session, 5, "tools/call", { name: "echo", arguments: { message: "x" } })).status).toBe(404)
    const fresh = (await initializeRaw(`${gateway.url}/mcp/h`)).headers.get("mcp-session-id")!
    expect(await (await rpc(fresh, 7, "tools/call", { name: "echo", arguments: { message: "anew" } })).text()).toContain("Echo: anew")
  })

  it("a port already in use stops start-up before any server process is started", async () => {
    const dir = tempDir()
    const marker = path.join(dir, "started")
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, {
      templates: { t: { instances: [{ id: "s", transport: "stdio", command: ["sh", "-c", `touch ${marker}; exec node ${everythingServer} stdio`] }] } }
    })
    const blocker = net.createServer()
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve))
    cleanups.push(() => new Promise((resolve) => blocker.close(resolve)))
    const port = (blocker.address() as net.AddressInfo).port
    const result = await runGateway(["start", "--config", configFile, "--port", String(port)])
    expect(result.code).toBe(1)
    expect(result.stderr).toContain("already in use")
    expect(fs.existsSync(marker)).toBe(false)
  })

  it("chaos: processes killed under load, zero failed reads", async () => {
    const gateway = await gatewayWith({
      templates: {
        t: {
          instances: [everything("c1"), everything("c2"), everything("c3")],
          load_balancer: { restart_backoff: { base_delay_ms: 500, max_delay_ms: 1000 } }
        }
      }
    })
    let reads = 0
    const failures: Array<string> = []
    let running = true
    const reader = async () => {
      while (running) {
        const r = await api(`${gateway.url}/mcp/t/resources/read`, { json: { uri: "demo://resource/static/document/architecture.md" } })
        reads++
        if (r.status !== 200) failures.push(`${r.status} ${JSON.stringify(r.body).slice(0, 200)}`)
      }
    }
    const readers = Array.from({ length: 4 }, reader)
    let kills = 0
    const processes = descendants(gateway.process.pid!).length
    let victim: number | undefined
    // Between kills: the killed process has been replaced and reads went on meanwhile (50 of
    // them), so each kill lands on a template serving normally.
    const recovered = async () => {
      const readsBefore = reads
      await waitUntil(() => {
        const children = descendants(gateway.process.pid!)
        return reads - readsBefore >= 50 && children.length >= processes && (victim === undefined || !children.includes(victim))
      }, 20_000, `recovery after kill ${kills}`)
    }
    for (let i = 0; i < 5; i++) {
      await recovered()
      const children = descendants(gateway.process.pid!)
      victim = children[i % children.length]
      if (victim !== undefined) {
        process.kill(victim, "SIGKILL")
        kills++
      }
    }
    await recovered()
    running = false
    await Promise.all(readers)
    expect(kills).toBe(5)
    expect(reads).toBeGreaterThan(100)
    expect(failures).toEqual([])
    await waitUntil(async () => (await api(`${gateway.url}/gateway/health`)).body.healthy_instances === 3, 15_000, "all back")
  })
})
