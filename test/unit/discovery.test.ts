import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Either, Exit, Layer, Schema, type Scope, Stream } from "effect"
import * as fs from "node:fs"
import { createServer } from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type { GatewayConfigShape } from "../../src/config/GatewayConfig.js"
import { Discovery } from "../../src/discovery/Discovery.js"
import { DiscoveryPlugin, type DiscoveryProvider } from "../../src/discovery/DiscoveryPlugin.js"
import { makePluginLoader } from "../../src/loader/PluginLoader.js"
import { defineInstance, discoverySource, type InstanceSpec } from "../../src/domain/Instance.js"
import { DEFAULT_LOAD_BALANCER, seconds } from "../../src/domain/LoadBalancer.js"
import { makeRegistry, Registry } from "../../src/registry/Registry.js"
import dnsPlugin from "../../plugins/discovery/dns.js"
import filePlugin from "../../plugins/discovery/file.js"
import commandPlugin from "../../plugins/discovery/command.js"
import { startDnsServer } from "../support/dnsServer.js"
import { testConfig } from "../support/testConfig.js"
import { testGateway } from "../support/testGateway.js"
import { waitFor } from "../support/waitFor.js"

const here = path.dirname(fileURLToPath(import.meta.url))
const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "gw-discovery-"))
const http = (id: string, port = 7000): InstanceSpec => ({ id, transport: "http", endpoint: `http://127.0.0.1:${port}/mcp` })
const found = (provider: string, template: string, specs: ReadonlyArray<InstanceSpec>, loadBalancer?: any) => ({
  name: template,
  loadBalancer,
  instances: specs.map((s) => defineInstance(template, s.id!, s, discoverySource(provider)))
})

/** Builds a plugin's provider as the gateway would, with its options decoded. */
const provider = (plugin: DiscoveryPlugin, options: unknown, baseDir = here) =>
  Effect.flatMap(Schema.decodeUnknown(plugin.options)(options), (decoded) =>
    plugin.make(decoded, { provider: "test", baseDir, configFile: undefined })) as Effect.Effect<DiscoveryProvider, any, Scope.Scope>

const instancesOf = (registry: { templates: () => ReadonlyArray<any> }) =>
  Object.fromEntries(registry.templates().map((t) => [t.name, Array.from(t.instances.values(), (i: any) => `${i.id}:${i.definition.source}`)]))

describe("Registry: a reload of the config", () => {
  it.scoped("adds, replaces and removes the config's instances, applies new settings, and leaves the API's alone", () =>
    Effect.gen(function*() {
      const file = path.join(tempDir(), "registry.json")
      const start = testConfig({ a: { instances: ["a1", "a2"] }, b: { instances: ["b1"] } }).templates
      const registry = yield* makeRegistry({ templates: start, defaults: DEFAULT_LOAD_BALANCER, file })
      yield* registry.register({ template: "b", spec: http("b-api", 7100) })
      const a1 = registry.template("a")!.instances.get("a1")!
      const settingsBefore = registry.template("a")!.settings

      const next = testConfig({
        a: { instances: ["a1", { id: "a2", endpoint: "http://127.0.0.1:9/changed" }, "a3"] },
        c: { instances: ["c1"], load_balancer: { strategy: "weighted" } }
      }).templates
      const diff = yield* registry.applyConfig(next)
      expect(diff).toMatchObject({
        added: ["a/a3", "c/c1"],
        replaced: ["a/a2"],
        removed: ["b/b1"],
        templatesAdded: ["c"],
        templatesRemoved: [],
        templatesChanged: []
      })
      // Unchanged: the same instance (its state kept) and the same settings object (its strategy kept).
      expect(registry.template("a")!.instances.get("a1")).toBe(a1)
      expect(registry.template("a")!.settings).toBe(settingsBefore)
      // "b" left the config but keeps its registered instance, now as a template of the API's (persisted).
      expect(registry.template("b")!.source).toBe("api")
      expect(instancesOf(registry)).toEqual({ a: ["a1:config", "a2:config", "a3:config"], b: ["b-api:api"], c: ["c1:config"] })
      expect(JSON.parse(fs.readFileSync(file, "utf8")).templates.b.instances[0].id).toBe("b-api")

      // New settings apply, as a new object; the template is reported changed.
      const changed = yield* registry.applyConfig(testConfig({
        a: { instances: ["a1", { id: "a2", endpoint: "http://127.0.0.1:9/changed" }, "a3"], load_balancer: { strategy: "random" } },
        c: { instances: ["c1"], load_balancer: { strategy: "weighted" } }
      }).templates)
      expect(changed.templatesChanged).toEqual(["a"])
      expect(changed.added.length + changed.removed.length + changed.replaced.length).toBe(0)
      expect(registry.template("a")!.settings.strategy).toBe("random")

      // A template gone from the config with nothing else in it is gone.
      const dropped = yield* registry.applyConfig(testConfig({ a: { instances: ["a1"] } }).templates)
      expect(dropped.templatesRemoved).toEqual(["c"])
      expect(registry.template("c")).toBeUndefined()
      expect(registry.template("b")).toBeDefined()
    }))

  it.scoped("publishes a removal before the addition of a replaced instance, and marks the old one draining", () =>
    Effect.gen(function*() {
      const registry = yield* makeRegistry({ templates: testConfig({ a: { instances: ["a1"] } }).templates, defaults: DEFAULT_LOAD_BALANCER })
      const changes = yield* registry.changes
      const old = registry.template("a")!.instances.get("a1")!
      yield* registry.applyConfig(testConfig({ a: { instances: [{ id: "a1", endpoint: "http://127.0.0.1:9/new" }] } }).templates)
      const events = Chunk.toReadonlyArray(yield* Stream.runCollect(Stream.take(changes, 2)))
      expect(events.map((e) => e._tag)).toEqual(["InstanceRemoved", "InstanceAdded"])
      expect(old.draining).toBe(true)
    }))
})

describe("Registry: a reload beside registrations by hand", () => {
  it.scoped("a config instance whose id an API registration holds waits: the registration is neither replaced nor lost", () =>
    Effect.gen(function*() {
      const file = path.join(tempDir(), "registry.json")
      const registry = yield* makeRegistry({ templates: testConfig({ t: { instances: ["c1"] } }).templates, defaults: DEFAULT_LOAD_BALANCER, file })
      yield* registry.register({ template: "t", spec: http("x1", 7150) })
      const diff = yield* registry.applyConfig(testConfig({ t: { instances: ["c1", "x1"] } }).templates)
      expect(diff.replaced).toEqual([])
      expect(diff.skipped).toEqual(["t/x1: the id is taken by an instance registered through the API; deregister it to let the config's in"])
      expect(registry.template("t")!.instances.get("x1")!.definition.source).toBe("api")
      expect(JSON.parse(fs.readFileSync(file, "utf8")).templates.t.instances.map((i: any) => i.id)).toEqual(["x1"])
    }))
})

describe("Registry: what discovery finds", () => {
  it.scoped("only the provider's own instances change; ids of the config and the API are never displaced", () =>
    Effect.gen(function*() {
      const registry = yield* makeRegistry({ templates: testConfig({ a: { instances: ["a1"] } }).templates, defaults: DEFAULT_LOAD_BALANCER })
      yield* registry.register({ template: "a", spec: http("manual", 7200) })

      const first = yield* registry.applyDiscovered("k8s", [
        found("k8s", "a", [http("p1", 7301), http("p2", 7302), http("manual", 7399), http("a1", 7398)]),
        found("k8s", "fresh", [http("f1", 7401)], { strategy: "least_connections" })
      ])
      expect(first.added).toEqual(["a/p1", "a/p2", "fresh/f1"])
      expect(first.skipped).toEqual([
        "a/manual: the id is taken by an instance from api",
        "a/a1: the id is taken by an instance from config"
      ])
      expect(first.templatesAdded).toEqual(["fresh"])
      expect(registry.template("fresh")!.source).toBe("discovery:k8s")
      expect(registry.template("fresh")!.settings.strategy).toBe("least_connections")
      const p1 = registry.template("a")!.instances.get("p1")!

      // Found again unchanged: nothing moves. Gone: drained. The hand-made one stays, always.
      const second = yield* registry.applyDiscovered("k8s", [found("k8s", "a", [http("p1", 7301)])])
      expect(second.removed).toEqual(["a/p2", "fresh/f1"])
      expect(second.templatesRemoved).toEqual(["fresh"])
      expect(registry.template("a")!.instances.get("p1")).toBe(p1)
      expect(instancesOf(registry)).toEqual({ a: ["a1:config", "manual:api", "p1:discovery:k8s"] })

      // A provider's load_balancer does not override a template of the config.
      const third = yield* registry.applyDiscovered("k8s", [found("k8s", "a", [http("p1", 7301)], { strategy: "random" })])
      expect(third.skipped).toEqual(["a: load_balancer not applied (the template's settings belong to config)"])
      expect(registry.template("a")!.settings.strategy).toBe("round_robin")

      // Another provider's instances are not this one's to remove.
      yield* registry.applyDiscovered("files", [found("files", "a", [http("x1", 7501)])])
      const fourth = yield* registry.applyDiscovered("k8s", [])
      expect(fourth.removed).toEqual(["a/p1"])
      expect(instancesOf(registry)).toEqual({ a: ["a1:config", "manual:api", "x1:discovery:files"] })
    }))
})

describe("dns discovery against a name server on loopback", () => {
  it.scoped("A records become instances; a change of the answer, NXDOMAIN and SRV records are followed; a dead server is an error", () =>
    Effect.gen(function*() {
      const dns = yield* Effect.acquireRelease(
        Effect.promise(() => startDnsServer({ "search.test": { A: ["127.0.0.2", "127.0.0.3"] } })),
        (server) => Effect.promise(() => server.close())
      )
      const a = yield* provider(dnsPlugin, { template: "search", name: "search.test", port: 3001, servers: [dns.address] })
      const endpoints = (doc: any) => doc.templates.search.instances.map((i: any) => i.endpoint)
      expect(endpoints(yield* a.discover)).toEqual(["http://127.0.0.2:3001/mcp", "http://127.0.0.3:3001/mcp"])

      dns.set({ "search.test": { A: ["127.0.0.4"] } })
      expect(endpoints(yield* a.discover)).toEqual(["http://127.0.0.4:3001/mcp"])
      dns.set({})
      expect(endpoints(yield* a.discover)).toEqual([])

      dns.set({
        "_mcp._tcp.search.test": { SRV: [{ priority: 0, weight: 3, port: 4001, target: "pod-a.search.test" }, { priority: 0, weight: 1, port: 4002, target: "pod-b.search.test" }] },
        "pod-a.search.test": { A: ["127.0.0.5"] },
        "pod-b.search.test": { A: ["127.0.0.6"] }
      })
      const srv = yield* provider(dnsPlugin, { template: "search", name: "_mcp._tcp.search.test", record: "SRV", path: "/v1/mcp", servers: [dns.address] })
      const doc: any = yield* srv.discover
      expect(doc.templates.search.instances).toEqual([
        { transport: "http", endpoint: "http://127.0.0.5:4001/v1/mcp", weight: 3 },
        { transport: "http", endpoint: "http://127.0.0.6:4002/v1/mcp", weight: 1 }
      ])

      // A resolver that does not answer is a failure (the instances stay as they were), not "no instances".
      const silent = yield* provider(dnsPlugin, { template: "search", name: "search.test", port: 3001, servers: ["127.0.0.1:9"] })
      const failure = yield* Effect.flip(silent.discover)
      expect(failure.message).toMatch(/^A search\.test: E/)
    }), 20_000)

  it.scoped("options are checked when the provider is made: a missing port, a template name no URL can carry", () =>
    Effect.gen(function*() {
      const noPort = Schema.decodeUnknownEither(dnsPlugin.options)({ template: "t", name: "x.test" })
      expect(Either.isLeft(noPort)).toBe(true)
      const badName = yield* Effect.flip(provider(dnsPlugin, { template: "no spaces", name: "x.test", port: 1 }))
      expect(badName.message).toContain("options: templates")
      const badServer = Schema.decodeUnknownEither(dnsPlugin.options)({ template: "t", name: "x.test", port: 1, servers: ["not-an-ip"] })
      expect(Either.isLeft(badServer) && String(badServer.left)).toContain(`expected a DNS server's address (ip, ip:port or [ipv6]:port), got "not-an-ip"`)
      const badPort = Schema.decodeUnknownEither(dnsPlugin.options)({ template: "t", name: "x.test", port: 1, servers: ["127.0.0.1:99999"] })
      expect(Either.isLeft(badPort)).toBe(true)
      expect(Either.isRight(Schema.decodeUnknownEither(dnsPlugin.options)({ template: "t", name: "x.test", port: 1, servers: ["127.0.0.1:5353", "[::1]:53", "::1"] }))).toBe(true)
    }))
})

describe("file discovery", () => {
  it.scoped("merges the directory's documents; a broken file fails the run, naming the file", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      fs.writeFileSync(path.join(dir, "a.json"), JSON.stringify({ templates: { t: { instances: [http("one", 7601)] } } }))
      fs.writeFileSync(
        path.join(dir, "b.json"),
        JSON.stringify({ templates: { t: { instances: [{ id: "two", transport: "stdio", command: "node server.js", working_dir: "srv" }] } } })
      )
      fs.writeFileSync(path.join(dir, ".swap.json"), "{ half")
      fs.writeFileSync(path.join(dir, "notes.txt"), "ignored")
      const files = yield* provider(filePlugin, { directory: dir })
      const doc: any = yield* files.discover
      expect(doc.templates.t.instances).toEqual([
        http("one", 7601),
        { id: "two", transport: "stdio", command: ["node", "server.js"], working_dir: path.join(dir, "srv") }
      ])

      fs.writeFileSync(path.join(dir, "c.json"), JSON.stringify({ templates: { t: { instances: [{ transport: "http", endpoint: "localhost" }] } } }))
      const failure = yield* Effect.flip(files.discover)
      expect(failure.message).toBe(`c.json: templates.t.instances[0].endpoint: expected an http(s) URL, got "localhost"`)
      fs.writeFileSync(path.join(dir, "c.json"), "{ not json")
      expect((yield* Effect.flip(files.discover)).message).toMatch(/^c\.json: not valid JSON/)

      const missing = yield* Effect.flip(provider(filePlugin, { directory: path.join(dir, "nope") }))
      expect(missing.message).toContain("does not exist")
    }))
})

describe("command discovery", () => {
  const script = path.join(here, "../fixtures/discovery-command.mjs")

  it.scoped("reads the instances a command prints; a failing command or bad output is an error with its stderr", () =>
    Effect.gen(function*() {
      const ok = yield* provider(commandPlugin, { command: ["node", script, "ok"] })
      const doc: any = yield* ok.discover
      expect(doc.templates.cmdb.instances.map((i: any) => i.id)).toEqual(["cmdb-a", "cmdb-b"])
      const failing = yield* provider(commandPlugin, { command: `node ${script} fail` })
      expect((yield* Effect.flip(failing.discover)).message).toBe("node exited with code 3: inventory service unreachable")
      const garbage = yield* provider(commandPlugin, { command: ["node", script, "garbage"] })
      expect((yield* Effect.flip(garbage.discover)).message).toMatch(/^node: its output is not JSON/)
    }))

  it.live("a command cut short by the provider's timeout is killed, process group and all", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const pidFile = path.join(dir, "pid")
      const slow = yield* provider(commandPlugin, { command: ["node", script, "hang", pidFile] })
      const outcome = yield* slow.discover.pipe(Effect.timeout("1500 millis"), Effect.exit)
      expect(Exit.isFailure(outcome)).toBe(true)
      const pid = Number(fs.readFileSync(pidFile, "utf8"))
      const gone = () => {
        try {
          process.kill(pid, 0)
          return false
        } catch {
          return true
        }
      }
      yield* Effect.promise(() => waitFor(gone, { timeout: 5_000, what: "the cut-short command's process to be gone" }))
      expect(() => process.kill(pid, 0)).toThrow()
    }).pipe(Effect.scoped))
})

describe("the Discovery service", () => {
  const withProviders = (providers: GatewayConfigShape["discovery"], templates = testConfig({ t: { instances: ["t1"] } })) =>
    testGateway({ ...templates, discovery: providers, gateway: { ...templates.gateway, baseDir: here } })

  it.scoped("runs each provider at start; sync applies what changed; a failed run keeps what it found before", () => {
    const dir = tempDir()
    fs.writeFileSync(path.join(dir, "x.json"), JSON.stringify({ templates: { t: { instances: [http("d1", 7701)] }, other: { instances: [http("o1", 7702)] } } }))
    const { layer } = withProviders({
      sync: false,
      providers: [{ name: "local", provider: "file", interval: undefined, timeout: seconds(5), options: { directory: dir } }]
    })
    return Effect.gen(function*() {
      const registry = yield* Registry
      const discovery = yield* Discovery
      // sync: false: nothing at start.
      expect(instancesOf(registry)).toEqual({ t: ["t1:config"] })
      const [run] = yield* discovery.sync
      expect(run).toMatchObject({ provider: "local", plugin: "file", ok: true, diff: { added: ["t/d1", "other/o1"], templatesAdded: ["other"] } })
      expect(instancesOf(registry)).toEqual({ t: ["t1:config", "d1:discovery:local"], other: ["o1:discovery:local"] })

      fs.writeFileSync(path.join(dir, "x.json"), "{")
      const [broken] = yield* discovery.sync
      expect(broken!.ok).toBe(false)
      expect(broken!.error).toMatch(/^x\.json: not valid JSON/)
      expect(instancesOf(registry)).toEqual({ t: ["t1:config", "d1:discovery:local"], other: ["o1:discovery:local"] })

      fs.rmSync(path.join(dir, "x.json"))
      const [emptied] = yield* discovery.sync
      expect(emptied!.diff).toMatchObject({ removed: ["t/d1", "other/o1"], templatesRemoved: ["other"] })
      expect(discovery.status()[0]).toMatchObject({ name: "local", plugin: "file", automatic: false, last_run: { ok: true } })
    }).pipe(Effect.provide(layer))
  })

  it.scoped("a provider that throws has a failed run like any other (its instances stay), and runs again", () => {
    const { layer } = withProviders({
      sync: false,
      providers: [{ name: "flaky", provider: "../fixtures/plugins/throwing-discovery.mjs", interval: undefined, timeout: seconds(5), options: {} }]
    })
    return Effect.gen(function*() {
      const discovery = yield* Discovery
      const [first] = yield* discovery.sync
      expect(first).toMatchObject({ ok: false, error: "the provider threw: bug on run 1" })
      const [second] = yield* discovery.sync
      expect(second).toMatchObject({ ok: true, diff: { added: ["flaky/f1"] } })
      const [third] = yield* discovery.sync
      expect(third!.ok).toBe(false)
      expect((yield* Registry).template("flaky")!.instances.has("f1")).toBe(true)
    }).pipe(Effect.provide(layer))
  })

  it.effect("a provider that does not load stops start-up with one line naming it", () =>
    Effect.gen(function*() {
      const bad = withProviders({ sync: true, providers: [{ name: "k8s", provider: "dnss", interval: undefined, timeout: seconds(5), options: {} }] })
      const error = yield* Effect.flip(Layer.build(bad.layer).pipe(Effect.scoped))
      expect(error.message).toMatch(/^discovery\.providers\.k8s\.provider: discovery provider plugin "dnss": no built-in discovery provider of that name \(built-ins: command, dns, file\)/)
      const badOptions = withProviders({ sync: true, providers: [{ name: "k8s", provider: "dns", interval: undefined, timeout: seconds(5), options: { name: "x" } }] })
      const optionsError = yield* Effect.flip(Layer.build(badOptions.layer).pipe(Effect.scoped))
      expect(optionsError.message).toContain("discovery.providers.k8s.options: ")
      expect(optionsError.message).toContain("options.template")
    }))

  it.scoped("a discovered template's load_balancer must name plugins that load; a plugin by path is refused", () => {
    const dir = tempDir()
    const { layer } = withProviders({
      sync: false,
      providers: [{ name: "local", provider: "file", interval: undefined, timeout: seconds(5), options: { directory: dir } }]
    })
    return Effect.gen(function*() {
      const discovery = yield* Discovery
      fs.writeFileSync(path.join(dir, "x.json"), JSON.stringify({ templates: { n: { load_balancer: { strategy: "fastest" }, instances: [http("n1", 7801)] } } }))
      const [unknown] = yield* discovery.sync
      expect(unknown!.error).toContain(`templates.n.load_balancer: strategy plugin "fastest": no built-in strategy of that name`)
      fs.writeFileSync(path.join(dir, "x.json"), JSON.stringify({ templates: { n: { load_balancer: { strategy: "./evil.js" }, instances: [http("n1", 7801)] } } }))
      const [byPath] = yield* discovery.sync
      expect(byPath!.error).toContain("may name only built-in plugins")
      expect((yield* Registry).template("n")).toBeUndefined()
    }).pipe(Effect.provide(layer))
  })
})

describe("the example discovery plugin (plugins/examples/http_inventory.ts), loaded by path", () => {
  it.scoped("reads an inventory over HTTP; an error status is a failed run", () =>
    Effect.gen(function*() {
      let status = 200
      const server = createServer((_, res) => {
        res.writeHead(status, { "content-type": "application/json" })
        res.end(JSON.stringify({ templates: { inv: { instances: [http("i1", 7991)] } } }))
      })
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))),
        () => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
      )
      const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/instances.json`
      const plugin = yield* makePluginLoader(path.join(here, "../..")).load(DiscoveryPlugin.kind, "./plugins/examples/http_inventory.ts")
      const inventory = yield* provider(plugin, { url })
      expect(((yield* inventory.discover) as any).templates.inv.instances).toEqual([http("i1", 7991)])
      status = 503
      expect((yield* Effect.flip(inventory.discover)).message).toBe(`GET ${url} answered 503`)
      const noToken = yield* Effect.flip(provider(plugin, { url, token_env: "NO_SUCH_VARIABLE_SET" }))
      expect(noToken.message).toContain("NO_SUCH_VARIABLE_SET is not set")
    }))
})
