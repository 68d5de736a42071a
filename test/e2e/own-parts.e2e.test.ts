import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  api,
  initializeRaw,
  isAlive,
  mcpPostHeaders,
  type RunningGateway,
  type RunningServer,
  runGateway,
  startFixtureServer,
  startGateway,
  tempDir,
  waitUntil,
  writeJson
} from "../support/processes.js"

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024
const openFds = (pid: number) => fs.readdirSync(`/proc/${pid}/fd`).length

/** The gateway's own parts failing or abused: metric labels a client invents, a hung trace collector, stale pid files. */
describe("metric labels a client invents", () => {
  let backend: RunningServer
  let gateway: RunningGateway
  const dir = tempDir("gw-labels-")

  beforeAll(async () => {
    backend = await startFixtureServer("header-echo-server.mjs")
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, { templates: { echo: { instances: [{ id: "e1", transport: "http", endpoint: backend.url }] } } })
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await gateway?.stop()
    await backend?.stop()
  })

  it("3,000 invented 4 KB method names through the MCP endpoint and REST: /metrics stays under 1 MB, the gateway under 150 MB", async () => {
    const opened = await initializeRaw(`${gateway.url}/mcp/echo`)
    const session = opened.headers.get("mcp-session-id")!
    await opened.text()
    const headers = { ...mcpPostHeaders, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25" }
    const name = (i: number) => `${i}-${"m".repeat(4096)}`
    const statuses = new Map<number, number>()
    const count = (status: number) => statuses.set(status, (statuses.get(status) ?? 0) + 1)
    for (let batch = 0; batch < 3_000; batch += 20) {
      await Promise.all(Array.from({ length: 20 }, async (_, k) => {
        const i = batch + k
        const mcp = await fetch(`${gateway.url}/mcp/echo`, { method: "POST", headers, body: JSON.stringify({ jsonrpc: "2.0", id: i, method: name(i), params: {} }) })
        count(mcp.status)
        await mcp.text()
        const rest = await fetch(`${gateway.url}/mcp/echo/${name(i)}`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" })
        count(rest.status)
        await rest.text()
      }))
    }
    const metrics = await (await fetch(`${gateway.url}/metrics`)).text()
    const rss = rssMb(gateway.process.pid!)
    console.log(`answers by status: ${JSON.stringify(Object.fromEntries(statuses))}; /metrics ${(metrics.length / 1024).toFixed(1)} KB; RSS ${rss.toFixed(1)} MB`)
    expect(metrics.length).toBeLessThan(1024 * 1024)
    expect(metrics).not.toContain("mmmm")
    expect(metrics).toMatch(/mcp_gateway_requests_total\{[^}]*operation="other"/)
    expect(rss).toBeLessThan(150)
  }, 120_000)
})

describe("what clients send, in text logs", () => {
  let backend: RunningServer
  let gateway: RunningGateway

  beforeAll(async () => {
    backend = await startFixtureServer("header-echo-server.mjs")
    const configFile = path.join(tempDir("gw-escape-"), "gateway.json")
    writeJson(configFile, { templates: { echo: { instances: [{ id: "e1", transport: "http", endpoint: backend.url }] } } })
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await gateway?.stop()
    await backend?.stop()
  })

  it("control characters in a tool name, a prompt name and a URI are escaped, never written raw", async () => {
    await api(`${gateway.url}/mcp/echo/tools/call`, { json: { name: "clear\x1b[2J\x1b[31mred", arguments: {} }, headers: { "x-request-id": "esc-1" } })
    await api(`${gateway.url}/mcp/echo/prompts/get`, { json: { name: "bell\x07\u009b31m" }, headers: { "x-request-id": "esc-2" } })
    await api(`${gateway.url}/mcp/echo/resources/read`, { json: { uri: "file:///x\x1b]0;title\x07" }, headers: { "x-request-id": "esc-3" } })
    await waitUntil(() => gateway.stderr().includes("esc-3"), 5_000, "the request lines")
    expect(gateway.stderr()).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/)
    expect(gateway.stderr()).toContain("clear\\u001b[2J\\u001b[31mred")
  })
})

describe("a trace collector that accepts connections and never answers", () => {
  let backend: RunningServer
  let gateway: RunningGateway
  let collector: net.Server
  const held: Array<net.Socket> = []
  let accepted = 0

  beforeAll(async () => {
    backend = await startFixtureServer("header-echo-server.mjs")
    collector = net.createServer((socket) => {
      accepted++
      held.push(socket)
      socket.on("error", () => undefined)
      socket.resume()
    })
    await new Promise<void>((r) => collector.listen(0, "127.0.0.1", r))
    const dir = tempDir("gw-otlp-hung-")
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, {
      templates: { echo: { instances: [{ id: "e1", transport: "http", endpoint: backend.url }] } },
      tracing: { otlp_endpoint: `http://127.0.0.1:${(collector.address() as net.AddressInfo).port}/v1/traces`, export_interval_ms: 200, export_timeout_ms: 1000, max_queued_spans: 200 }
    })
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await gateway?.stop()
    for (const socket of held) socket.destroy()
    await new Promise((r) => collector?.close(r))
    await backend?.stop()
  })

  it("keeps its open files flat over 15 s of exports every 200 ms, warns once, and counts the spans it drops", async () => {
    let running = true
    const traffic = (async () => {
      while (running) {
        await api(`${gateway.url}/mcp/echo/tools/call`, { json: { name: "count", arguments: {} } })
        await new Promise((r) => setTimeout(r, 20))
      }
    })()
    await new Promise((r) => setTimeout(r, 2_000))
    const fds: Array<number> = []
    const open: Array<number> = []
    for (let i = 0; i < 15; i++) {
      fds.push(openFds(gateway.process.pid!))
      open.push(held.filter((s) => !s.destroyed).length)
      await new Promise((r) => setTimeout(r, 1_000))
    }
    running = false
    await traffic
    console.log(`open fds each second: ${fds.join(" ")}; connections open at the collector: ${open.join(" ")}; accepted in all: ${accepted}`)
    expect(Math.max(...fds) - Math.min(...fds)).toBeLessThanOrEqual(3)
    // One export at a time, each given up after 1 s: never more than one connection waits.
    expect(Math.max(...open)).toBeLessThanOrEqual(2)
    const warnings = gateway.stderr().split("\n").filter((l) => l.includes("tracing:"))
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toMatch(/level=WARN .*did not answer within 1000 ms/)
    const metrics = await (await fetch(`${gateway.url}/metrics`)).text()
    const dropped = Number(/mcp_gateway_tracing_spans_dropped_total (\d+)/.exec(metrics)?.[1] ?? 0)
    expect(dropped).toBeGreaterThan(0)
  }, 60_000)
})

describe("pid files", () => {
  let backend: RunningServer
  const dir = tempDir("gw-pid-")
  const configFile = path.join(dir, "gateway.json")
  const cli = (...args: Array<string>) => runGateway(args, { XDG_STATE_HOME: path.join(dir, "state"), MCP_GATEWAY_URL: "" })
  const started: Array<number> = []

  beforeAll(async () => {
    backend = await startFixtureServer("header-echo-server.mjs")
    writeJson(configFile, { gateway: { port: 0 }, templates: { echo: { instances: [{ id: "e1", transport: "http", endpoint: backend.url }] } } })
  })

  afterAll(async () => {
    for (const pid of started) if (isAlive(pid)) process.kill(pid, "SIGKILL")
    await backend?.stop()
  })

  it("a pid file naming an unrelated live process: stop refuses to signal it, says why, and removes the stale file", async () => {
    const unrelated = spawn("sleep", ["60"], { stdio: "ignore" })
    started.push(unrelated.pid!)
    const pidFile = path.join(dir, "unrelated.pid")
    // As a gateway that crashed long ago would have left it, its pid since taken by `sleep`.
    writeJson(pidFile, { pid: unrelated.pid, url: "http://127.0.0.1:1", log_file: "/dev/null", config: null, started_at: "2026-01-01T00:00:00.000Z", process_start: "1", command: "node dist/main.js start" })
    const stopped = await cli("stop", "--pid-file", pidFile)
    expect(stopped.code).toBe(1)
    expect(stopped.stderr).toContain(`not stopping pid ${unrelated.pid}`)
    expect(stopped.stderr).toContain("is now another process (sleep 60)")
    expect(fs.existsSync(pidFile)).toBe(false)
    expect(isAlive(unrelated.pid!)).toBe(true)

    // A pid file of the old format (no process identity) naming it: not this program, so not signalled either.
    writeJson(pidFile, { pid: unrelated.pid, url: "http://127.0.0.1:1", log_file: "/dev/null", config: null, started_at: "2026-01-01T00:00:00.000Z" })
    expect((await cli("stop", "--pid-file", pidFile)).code).toBe(1)
    expect(isAlive(unrelated.pid!)).toBe(true)
    // Nor does it keep start --background from starting.
    writeJson(pidFile, { pid: unrelated.pid, url: "http://127.0.0.1:1", log_file: "/dev/null", config: null, started_at: "2026-01-01T00:00:00.000Z", process_start: "1" })
    const fresh = await cli("start", "--config", configFile, "--background", "--pid-file", pidFile)
    expect(fresh.code, fresh.stderr).toBe(0)
    expect(fresh.stderr).toContain(`removed the stale pid file ${pidFile} (pid ${unrelated.pid} is now another process`)
    const record = JSON.parse(fs.readFileSync(pidFile, "utf8"))
    started.push(record.pid)
    expect(record.process_start).toMatch(/^\d+$/)
    expect(record.command).toContain("main.js start")
    expect((await cli("stop", "--pid-file", pidFile)).code).toBe(0)
    expect(isAlive(record.pid)).toBe(false)
    unrelated.kill("SIGKILL")
  }, 60_000)

  it("after kill -9 of a background gateway, start --background starts a new one", async () => {
    const pidFile = path.join(dir, "crash.pid")
    const first = await cli("start", "--config", configFile, "--background", "--pid-file", pidFile)
    expect(first.code, first.stderr).toBe(0)
    const crashed = JSON.parse(fs.readFileSync(pidFile, "utf8"))
    started.push(crashed.pid)
    process.kill(crashed.pid, "SIGKILL")
    await waitUntil(() => !isAlive(crashed.pid), 5_000, "the gateway gone")
    const second = await cli("start", "--config", configFile, "--background", "--pid-file", pidFile)
    expect(second.code, second.stderr).toBe(0)
    expect(second.stderr).toContain(`pid ${crashed.pid} is not running`)
    const record = JSON.parse(fs.readFileSync(pidFile, "utf8"))
    started.push(record.pid)
    expect(record.pid).not.toBe(crashed.pid)
    expect((await api(`${record.url}/gateway/health`)).status).toBe(200)
    expect((await cli("stop", "--pid-file", pidFile)).code).toBe(0)
  }, 60_000)

  it("two start --background at once on one pid file: one starts, the other is refused, and no gateway is left without a pid file", async () => {
    const pidFile = path.join(dir, "race.pid")
    const [a, b] = await Promise.all([
      cli("start", "--config", configFile, "--background", "--pid-file", pidFile),
      cli("start", "--config", configFile, "--background", "--pid-file", pidFile)
    ])
    const record = JSON.parse(fs.readFileSync(pidFile, "utf8"))
    started.push(record.pid)
    for (const run of [a, b]) {
      const pid = /pid (\d+)/.exec(run.stdout)?.[1]
      if (pid !== undefined) started.push(Number(pid))
    }
    expect([a.code, b.code].sort(), `${a.stderr}\n${b.stderr}`).toEqual([0, 1])
    const refused = a.code === 1 ? a : b
    expect(refused.stderr).toContain(pidFile)
    // The one recorded answers at the URL recorded, and stopping it leaves nothing running.
    expect((await api(`${record.url}/gateway/health`)).status).toBe(200)
    expect((await cli("stop", "--pid-file", pidFile)).code).toBe(0)
    await waitUntil(() => started.every((pid) => !isAlive(pid) || pid !== record.pid), 5_000, "the recorded gateway gone")
    const running = started.filter((pid) => isAlive(pid))
    expect(running).toEqual([])
  }, 60_000)

  it("the pid file is written through a file of its own: a symlink put in its place is replaced, never followed", async () => {
    const pidFile = path.join(dir, "link.pid")
    const victim = path.join(dir, "victim.txt")
    fs.writeFileSync(victim, "keep me\n")
    fs.symlinkSync(victim, pidFile)
    const run = await cli("start", "--config", configFile, "--background", "--pid-file", pidFile)
    expect(run.code, run.stderr).toBe(0)
    expect(fs.readFileSync(victim, "utf8")).toBe("keep me\n")
    expect(fs.lstatSync(pidFile).isSymbolicLink()).toBe(false)
    const record = JSON.parse(fs.readFileSync(pidFile, "utf8"))
    started.push(record.pid)
    expect((await cli("stop", "--pid-file", pidFile)).code).toBe(0)
    expect(fs.readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([])
  }, 60_000)

  it("the log file is not appended through a symlink put in its place", async () => {
    const pidFile = path.join(dir, "loglink.pid")
    const victim = path.join(dir, "victim-log.txt")
    fs.writeFileSync(victim, "keep me\n")
    fs.symlinkSync(victim, path.join(dir, "loglink.log"))
    const run = await cli("start", "--config", configFile, "--background", "--pid-file", pidFile)
    if (fs.existsSync(pidFile)) started.push(JSON.parse(fs.readFileSync(pidFile, "utf8")).pid)
    expect(run.code).toBe(1)
    expect(run.stderr).toContain("is a symbolic link")
    expect(fs.readFileSync(victim, "utf8")).toBe("keep me\n")
    expect(fs.existsSync(pidFile)).toBe(false)
  }, 60_000)
})
