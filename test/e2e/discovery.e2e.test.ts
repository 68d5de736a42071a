import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startDnsServer } from "../support/dnsServer.js"
import {
  api,
  descendants,
  everythingServer,
  repoRoot,
  type RunningGateway,
  type RunningServer,
  runGateway,
  startEverythingHttp,
  startFixtureServer,
  startGateway,
  tempDir,
  waitUntil,
  writeJson
} from "../support/processes.js"

const instanceIds = async (gateway: RunningGateway, template: string): Promise<Array<string>> => {
  const registry = await api(`${gateway.url}/gateway/registry`)
  return (registry.body.templates[template]?.instances ?? []).map((i: { id: string }) => i.id).sort()
}

const waitForIds = (gateway: RunningGateway, template: string, ids: Array<string>, what: string) =>
  waitUntil(async () => JSON.stringify(await instanceIds(gateway, template)) === JSON.stringify([...ids].sort()), 20_000, what)

/**
 * Live configuration: the config file edited while the gateway runs, as an operator would (in
 * place, with mistakes), against real servers.
 */
describe("live configuration: editing the config file of a running gateway", () => {
  let a: RunningServer
  let b: RunningServer
  let gateway: RunningGateway
  const dir = tempDir("gw-live-")
  const configFile = path.join(dir, "gateway.json")
  const config = (instances: Array<{ id: string; url: string }>, extra: Record<string, unknown> = {}) => ({
    gateway: { registry_file: path.join(dir, "registry.json") },
    templates: {
      live: { instances: instances.map((i) => ({ id: i.id, transport: "http", endpoint: i.url })), ...extra },
      stdio: { instances: [{ id: "s1", transport: "stdio", command: ["node", everythingServer, "stdio"] }] }
    }
  })

  beforeAll(async () => {
    ;[a, b] = await Promise.all([startEverythingHttp(), startEverythingHttp()])
    writeJson(configFile, config([{ id: "a", url: a.url }]))
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all([a?.stop(), b?.stop()])
  })

  const echo = () => api(`${gateway.url}/mcp/live/tools/call`, { json: { name: "echo", arguments: { message: "x" } } })

  it("adds and removes instances and templates without a restart, and requests in flight on a removed instance finish", async () => {
    writeJson(configFile, config([{ id: "a", url: a.url }, { id: "b", url: b.url }]))
    await waitForIds(gateway, "live", ["a", "b"], "b added")
    await waitUntil(async () => (await api(`${gateway.url}/mcp/live/health`)).body.healthy_instances === 2, 20_000, "b healthy")
    const served = new Set<string>()
    for (let i = 0; i < 4; i++) served.add((await echo()).headers.get("x-instance-id")!)
    expect([...served].sort()).toEqual(["a", "b"])

    // A long call in flight; the instance serving it leaves the config.
    const long = api(`${gateway.url}/mcp/live/tools/call`, {
      json: { name: "trigger-long-running-operation", arguments: { duration: 2, steps: 4 } }
    })
    let busy: string | undefined
    await waitUntil(async () => {
      const instances = (await api(`${gateway.url}/gateway/registry`)).body.templates.live.instances
      busy = instances.find((i: { active_requests: number }) => i.active_requests > 0)?.id
      return busy !== undefined
    }, 10_000, "the long call in flight")
    const staying = busy === "a" ? { id: "b", url: b.url } : { id: "a", url: a.url }
    writeJson(configFile, config([staying]))
    await waitForIds(gateway, "live", [staying.id], `${busy} removed`)
    // Nothing new goes to it while it drains...
    for (let i = 0; i < 3; i++) expect((await echo()).headers.get("x-instance-id")).toBe(staying.id)
    // ...and the call it was serving finishes.
    const finished = await long
    expect(finished.status).toBe(200)
    expect(JSON.stringify(finished.body)).toContain("Long running operation completed")
    expect(finished.headers.get("x-instance-id")).toBe(busy)

    // A template removed from the config is gone, its process stopped.
    const before = descendants(gateway.process.pid!).length
    const { stdio: _, ...withoutStdio } = config([staying]).templates
    writeJson(configFile, { ...config([staying]), templates: withoutStdio })
    await waitUntil(async () => (await api(`${gateway.url}/mcp/stdio/tools/list`)).status === 404, 20_000, "template stdio removed")
    await waitUntil(() => descendants(gateway.process.pid!).length < before, 10_000, "its process stopped")
    writeJson(configFile, config([staying]))
    await waitUntil(async () => (await api(`${gateway.url}/mcp/stdio/tools/list`)).status === 200, 30_000, "template stdio back")
  })

  it("a broken edit is refused with its problems in the log, and the running config keeps serving", async () => {
    const good = fs.readFileSync(configFile, "utf8")
    const ids = await instanceIds(gateway, "live")
    fs.writeFileSync(configFile, good.slice(0, good.length / 2))
    await waitUntil(() => /config .*gateway\.json: not applied/.test(gateway.stderr()), 10_000, "the refusal logged")
    expect((await echo()).status).toBe(200)

    const logged = gateway.stderr().length
    writeJson(configFile, config([{ id: "c", url: "localhost" }], { load_balancer: { strategy: "fastest" } }))
    await waitUntil(() => gateway.stderr().slice(logged).includes("not applied"), 10_000, "the second refusal logged")
    const refusal = gateway.stderr().slice(logged)
    expect(refusal).toContain(`templates.live.instances[0].endpoint: expected an http(s) URL, got \\"localhost\\"`)
    expect(await instanceIds(gateway, "live")).toEqual(ids)
    expect((await echo()).status).toBe(200)

    // A setting that needs a restart is said to need one; the templates still apply.
    const parsed = JSON.parse(good)
    writeJson(configFile, { ...parsed, gateway: { ...parsed.gateway, max_sessions: 50 } })
    await waitUntil(() => /gateway\.max_sessions changed; that takes effect at the next start/.test(gateway.stderr()), 10_000, "restart note")
    fs.writeFileSync(configFile, good)
  })

  it("mcp-gateway sync reads the file again and says what changed", async () => {
    const noChange = await runGateway(["sync", "--gateway", gateway.url])
    expect(noChange.code, noChange.stderr).toBe(0)
    expect(noChange.stdout).toMatch(/^config .*gateway\.json: no change$/m)

    const json = await runGateway(["sync", "--gateway", gateway.url, "--json"])
    expect(JSON.parse(json.stdout)).toMatchObject({ config: { ok: true, diff: { added: [] } }, providers: [] })
  })

  it("stops cleanly: no process left", async () => {
    const pid = gateway.process.pid!
    const children = descendants(pid)
    expect(await gateway.stop()).toBe(0)
    await waitUntil(() => children.every((c) => { try { process.kill(c, 0); return false } catch { return true } }), 10_000, "children gone")
  })
})

/**
 * Discovery providers against real things: a name server on loopback (dns), a script (command),
 * a directory of instance files (file); a registration by hand beside them.
 */
describe("discovery: dns, command and file providers", () => {
  let b1: RunningServer
  let b2: RunningServer
  let gateway: RunningGateway
  let dns: Awaited<ReturnType<typeof startDnsServer>>
  const dir = tempDir("gw-discovery-")
  const inventory = path.join(dir, "inventory.json")
  const instancesDir = path.join(dir, "instances.d")
  const configFile = path.join(dir, "gateway.json")
  const endpointOf = (s: RunningServer) => `http://127.0.0.1:${s.port}/mcp`
  const srv = (servers: Array<RunningServer>) => ({
    "_mcp._tcp.search.test": { SRV: servers.map((s, i) => ({ priority: 0, weight: 1, port: s.port, target: `pod-${i}.search.test` })) },
    "pod-0.search.test": { A: ["127.0.0.1"] },
    "pod-1.search.test": { A: ["127.0.0.1"] }
  })

  beforeAll(async () => {
    ;[b1, b2] = await Promise.all([startFixtureServer("header-echo-server.mjs"), startFixtureServer("header-echo-server.mjs")])
    dns = await startDnsServer(srv([b1, b2]))
    fs.mkdirSync(instancesDir)
    writeJson(inventory, { templates: { cmdb: { instances: [{ id: "c1", transport: "http", endpoint: endpointOf(b1) }] } } })
    writeJson(path.join(instancesDir, "files.json"), { templates: { files: { load_balancer: { strategy: "weighted" }, instances: [{ transport: "http", endpoint: endpointOf(b2), weight: 3 }] } } })
    writeJson(configFile, {
      gateway: { registry_file: path.join(dir, "registry.json") },
      templates: { search: { load_balancer: { strategy: "least_connections" } } },
      discovery: {
        providers: {
          k8s: { provider: "dns", interval: 0.5, options: { template: "search", name: "_mcp._tcp.search.test", record: "SRV", servers: [dns.address] } },
          inventory: { provider: "command", interval: 1, options: { command: ["node", path.join(repoRoot, "test/fixtures/discovery-command.mjs"), "file", inventory] } },
          local: { provider: "file", options: { directory: "instances.d" } }
        }
      }
    })
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all([b1?.stop(), b2?.stop(), dns?.close()])
  })

  it("serves what each provider found from the first request, with its source", async () => {
    // Probed before the gateway said it listens.
    expect(gateway.stderr()).toMatch(/4 of 4 instances healthy in 3 templates/)
    const registry = (await api(`${gateway.url}/gateway/registry`)).body
    const sources = Object.fromEntries(Object.entries<any>(registry.templates).map(([t, v]) => [t, v.instances.map((i: any) => `${i.id}:${i.source}`).sort()]))
    expect(sources).toEqual({
      search: [`127.0.0.1-${b1.port}:discovery:k8s`, `127.0.0.1-${b2.port}:discovery:k8s`].sort(),
      cmdb: ["c1:discovery:inventory"],
      files: [`127.0.0.1-${b2.port}:discovery:local`]
    })
    expect(registry.templates.search.load_balancer.strategy).toBe("least_connections")
    expect(registry.templates.files.load_balancer.strategy).toBe("weighted")
    expect(registry.discovery.map((p: any) => [p.name, p.plugin, p.last_run.ok])).toEqual([["k8s", "dns", true], ["inventory", "command", true], ["local", "file", true]])
    const call = await api(`${gateway.url}/mcp/search/tools/call`, { json: { name: "count", arguments: {} } })
    expect(call.status).toBe(200)
    const status = await runGateway(["status", "--gateway", gateway.url])
    expect(status.stdout).toMatch(/cmdb\s+c1\s+http\s+\S+.*discovery:inventory/)
  })

  it("follows each source's changes; a source that fails keeps what it found; a registration by hand is never removed", async () => {
    const manual = await api(`${gateway.url}/gateway/register`, {
      json: { template_name: "search", instance: { id: "manual", transport: "http", endpoint: endpointOf(b1) } }
    })
    expect(manual.status).toBe(201)

    // dns: a pod goes away.
    dns.set(srv([b1]))
    await waitForIds(gateway, "search", ["manual", `127.0.0.1-${b1.port}`], "the SRV answer followed")
    // command: the inventory changes.
    writeJson(inventory, { templates: { cmdb: { instances: [{ id: "c2", transport: "http", endpoint: endpointOf(b2) }] } } })
    await waitForIds(gateway, "cmdb", ["c2"], "the inventory followed")
    // file: a new file, at once (watched).
    writeJson(path.join(instancesDir, "more.json"), { templates: { files: { instances: [{ id: "extra", transport: "http", endpoint: endpointOf(b1) }] } } })
    await waitForIds(gateway, "files", [`127.0.0.1-${b2.port}`, "extra"], "the new file applied")

    // The name server dies: runs fail, nothing is removed.
    await dns.close()
    await waitUntil(() => /discovery k8s: .*its instances stay as they were/.test(gateway.stderr()), 15_000, "the failure logged")
    expect(await instanceIds(gateway, "search")).toEqual(["manual", `127.0.0.1-${b1.port}`].sort())

    // An empty answer from the inventory removes its instances; the manual one stays through every sync.
    writeJson(inventory, { templates: {} })
    const synced = await runGateway(["sync", "--gateway", gateway.url])
    expect(synced.code).toBe(1)
    expect(synced.stdout).toMatch(/^discovery k8s \(dns\): failed, its instances stay as they were/m)
    expect(synced.stderr).toContain("sync: discovery k8s failed")
    await waitUntil(async () => (await api(`${gateway.url}/mcp/cmdb/tools/list`)).status === 404, 10_000, "cmdb gone with its last instance")
    expect(await instanceIds(gateway, "search")).toContain("manual")
  })
})

describe("live configuration: SIGHUP, and what takes effect at the next start", () => {
  let backend: RunningServer
  let gateway: RunningGateway
  const dir = tempDir("gw-hup-")
  const configFile = path.join(dir, "gateway.json")
  const config = (ids: Array<string>, extra: Record<string, unknown> = {}) => ({
    gateway: { watch_config: false },
    templates: { t: { instances: ids.map((id) => ({ id, transport: "http", endpoint: backend.url })) } },
    ...extra
  })

  beforeAll(async () => {
    backend = await startFixtureServer("header-echo-server.mjs")
    writeJson(configFile, config(["a"]))
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await gateway?.stop()
    await backend?.stop()
  })

  it("without watching, an edit waits for SIGHUP, which reloads rather than ending the gateway", async () => {
    writeJson(configFile, config(["a", "b"]))
    // A fixed wait, for something that must NOT happen: a watcher would apply the edit 200 ms after
    // it settles (SETTLE in ConfigReload.ts); a second without it shows nothing watches.
    await new Promise((r) => setTimeout(r, 1_000))
    expect(await instanceIds(gateway, "t")).toEqual(["a"])
    gateway.process.kill("SIGHUP")
    await waitForIds(gateway, "t", ["a", "b"], "applied on SIGHUP")
    expect(gateway.process.exitCode).toBeNull()
    expect(gateway.stderr()).toMatch(/config .*gateway\.json applied \(SIGHUP\): added: t\/b/)
  })

  it("an edit whose discovery section would stop the next start is refused now, templates and all", async () => {
    const logged = gateway.stderr().length
    writeJson(configFile, config(["a"], { discovery: { providers: { k8s: { provider: "dns", options: { template: "t", name: "x.test" } } } } }))
    gateway.process.kill("SIGHUP")
    await waitUntil(() => gateway.stderr().slice(logged).includes("not applied"), 10_000, "the refusal")
    expect(gateway.stderr().slice(logged)).toContain("discovery.providers.k8s.options")
    expect(await instanceIds(gateway, "t")).toEqual(["a", "b"])
    // mcp-gateway sync says the same, and logs it.
    const synced = await runGateway(["sync", "--gateway", gateway.url])
    expect(synced.code).toBe(1)
    expect(synced.stdout).toMatch(/refused, the running config stays/)
  })
})
