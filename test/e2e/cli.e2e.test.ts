import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { descendants, everythingServer, isAlive, type RunningServer, runGateway, startFixtureServer, tempDir, waitUntil, writeJson } from "../support/processes.js"

/**
 * The command line as an operator drives it: start --background → register → status --json →
 * deregister → stop, the registry file checked at each step, offline edits refused while the
 * gateway runs and taken when it is stopped, no process left behind.
 */
describe("the CLI against a running gateway", () => {
  let backend: RunningServer
  const dir = tempDir("gw-cli-")
  const env = { XDG_STATE_HOME: path.join(dir, "state"), MCP_GATEWAY_URL: "" }
  const configFile = path.join(dir, "gateway.json")
  const registryFile = path.join(dir, "registry.json")
  const pidFile = path.join(dir, "state", "mcp-gateway", "gateway.pid")
  const cli = (...args: Array<string>) => runGateway(args, env)
  const registry = () => JSON.parse(fs.readFileSync(registryFile, "utf8"))

  beforeAll(async () => {
    backend = await startFixtureServer("header-echo-server.mjs")
    writeJson(configFile, {
      gateway: { port: 0, registry_file: registryFile, allow_stdio_registration: true },
      templates: { echo: { instances: [{ id: "e1", transport: "http", endpoint: backend.url }] } }
    })
  })

  afterAll(async () => {
    // Whatever a failed test left running.
    const left = fs.existsSync(pidFile) ? JSON.parse(fs.readFileSync(pidFile, "utf8")).pid : undefined
    if (left !== undefined && isAlive(left)) process.kill(left, "SIGKILL")
    await backend?.stop()
  })

  it("start --background, register, status --json, deregister, stop", async () => {
    const started = await cli("start", "--config", configFile, "--background")
    expect(started.code, started.stderr).toBe(0)
    expect(started.stdout).toMatch(/started in the background: pid \d+, http:\/\/127\.0\.0\.1:\d+/)
    const record = JSON.parse(fs.readFileSync(pidFile, "utf8"))
    expect(isAlive(record.pid)).toBe(true)

    const again = await cli("start", "--config", configFile, "--background")
    expect(again.code).toBe(1)
    expect(again.stderr).toContain("already running")

    const http = await cli("register", "remote", "--endpoint", backend.url, "--id", "r1", "--weight", "3")
    expect(http.code, http.stderr).toBe(0)
    expect(http.stdout).toContain("registered remote/r1")
    expect(registry().templates.remote.instances).toEqual([{ id: "r1", transport: "http", endpoint: backend.url, weight: 3 }])

    const stdio = await cli("register", "tools", "--command", `node ${everythingServer} stdio`, "--env", "A=1")
    expect(stdio.code, stdio.stderr).toBe(0)
    expect(stdio.stdout).toContain("registered tools/tools-1")

    const status = await cli("status", "--json")
    expect(status.code, status.stderr).toBe(0)
    const shown = JSON.parse(status.stdout)
    expect(shown.instances.map((i: { template: string; id: string }) => `${i.template}/${i.id}`).sort()).toEqual(["echo/e1", "remote/r1", "tools/tools-1"])
    await waitUntil(async () => JSON.parse((await cli("status", "--json")).stdout).instances.every((i: { status: string }) => i.status === "healthy"), 20_000, "all healthy")
    const table = await cli("status")
    expect(table.stdout).toMatch(/^TEMPLATE\s+INSTANCE\s+TRANSPORT\s+STATUS/m)

    const duplicate = await cli("register", "remote", "--endpoint", backend.url, "--id", "r1")
    expect(duplicate.code).toBe(2)
    expect(duplicate.stderr).toMatch(/r1/)
    const neither = await cli("register", "remote")
    expect(neither.code).toBe(2)

    const offline = await cli("register", "later", "--endpoint", backend.url, "--offline", "--config", configFile)
    expect(offline.code).toBe(1)
    expect(offline.stderr).toContain("a gateway is running")
    // Whatever pid file or address it was started with: the registry file says it is held.
    expect(fs.readFileSync(`${registryFile}.lock`, "utf8").trim()).toBe(String(record.pid))
    const mixed = await cli("register", "x", "--endpoint", backend.url, "--env", "A=1")
    expect(mixed.code).toBe(2)
    const notUrl = await cli("status", "--gateway", "foo")
    expect(notUrl.code).toBe(2)

    const removed = await cli("deregister", "remote", "r1")
    expect(removed.code, removed.stderr).toBe(0)
    expect(registry().templates.remote).toBeUndefined()
    const unknown = await cli("deregister", "remote", "r1")
    expect(unknown.code).toBe(1)

    const children = descendants(record.pid)
    expect(children.length).toBeGreaterThan(0)
    const stopped = await cli("stop")
    expect(stopped.code, stopped.stderr).toBe(0)
    expect(isAlive(record.pid)).toBe(false)
    for (const child of children) expect(isAlive(child), `process ${child}`).toBe(false)
    expect(fs.existsSync(pidFile)).toBe(false)

    const unreachable = await cli("status", "--gateway", record.url)
    expect(unreachable.code).toBe(1)
    expect(unreachable.stderr).toContain("cannot reach the gateway")
    const nothing = await cli("stop")
    expect(nothing.code).toBe(1)
  }, 120_000)

  it("--offline edits a stopped gateway's registry file, which it serves when started", async () => {
    const added = await cli("register", "later", "--endpoint", backend.url, "--id", "l1", "--offline", "--config", configFile)
    expect(added.code, added.stderr).toBe(0)
    expect(registry().templates.later.instances).toEqual([{ id: "l1", transport: "http", endpoint: backend.url }])

    const started = await cli("start", "--config", configFile, "--background")
    expect(started.code, started.stderr).toBe(0)
    const status = JSON.parse((await cli("status", "--json")).stdout)
    expect(status.instances.some((i: { template: string; id: string }) => i.template === "later" && i.id === "l1")).toBe(true)
    // `stop --config` as `status --config`: it stops the gateway only if that is the config it runs.
    const other = path.join(dir, "other.json")
    writeJson(other, { templates: {} })
    const wrong = await cli("stop", "--config", other)
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toContain("nothing stopped")
    const stopped = await cli("stop", "--config", configFile)
    expect(stopped.code, stopped.stderr).toBe(0)
    expect(stopped.stdout).toContain("mcp-gateway stopped")

    const dropped = await cli("deregister", "later", "l1", "--offline", "--config", configFile)
    expect(dropped.code, dropped.stderr).toBe(0)
    expect(registry().templates.later?.instances ?? []).toEqual([])
  }, 120_000)

  it("start --background works whatever the log level (the URL does not come from the log)", async () => {
    const pid = path.join(dir, "quiet.pid")
    const started = await cli("start", "--config", configFile, "--background", "--log-level", "none", "--pid-file", pid)
    expect(started.code, started.stderr).toBe(0)
    expect((await cli("status", "--pid-file", pid)).code).toBe(0)
    expect((await cli("stop", "--pid-file", pid)).code).toBe(0)
    const stale = await cli("status", "--pid-file", pid)
    expect(stale.code).toBe(1)
    expect(stale.stderr).toContain("no gateway recorded")
  }, 60_000)

  it("a config that does not validate: start --background exits 2 with the log's last lines", async () => {
    const bad = path.join(dir, "bad.json")
    writeJson(bad, { templates: { t: { instances: [{ id: "x", transport: "http" }] } } })
    const started = await cli("start", "--config", bad, "--background", "--pid-file", path.join(dir, "bad.pid"))
    expect(started.code).toBe(2)
    expect(started.stderr).toContain("endpoint")
  }, 60_000)

  it("version, openapi", async () => {
    const version = await cli("version", "--json")
    expect(JSON.parse(version.stdout)).toMatchObject({ version: expect.any(String), mcp_protocol_versions: expect.arrayContaining(["2026-07-28", "2025-11-25"]) })
    const openapi = await cli("openapi")
    expect(JSON.parse(openapi.stdout).paths["/gateway/register"]).toBeDefined()
  })
})
