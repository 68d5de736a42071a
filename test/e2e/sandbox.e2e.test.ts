import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import { Effect, Exit, Runtime, Scope } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { DEFAULT_SANDBOX } from "../../src/config/GatewayConfig.js"
import { defineInstance } from "../../src/domain/Instance.js"
import { resolveSandbox, type SandboxInput, type SandboxSettings } from "../../src/domain/Sandbox.js"
import type { ConnectionLog } from "../../src/transport/Connection.js"
import { makeStdioConnection } from "../../src/transport/stdio.js"
import { api, children, descendants, everythingServer, filesystemServer, repoRoot, runGateway, startGateway, tempDir, waitUntil, writeJson } from "../support/processes.js"

const fixtures = path.join(repoRoot, "test/fixtures")
const hostile = path.join(fixtures, "hostile-server.mjs")

/**
 * A real server (test/fixtures/hostile-server.mjs) in a real bubblewrap sandbox, through the
 * stdio transport the gateway uses; the same server unsandboxed proves each attempt can succeed.
 */
describe("sandboxed stdio servers (bubblewrap)", () => {
  // The server's working directory (writable by nobody, whom it runs as under a root gateway),
  // a "home" with a secret beside it, a config file of the gateway's in the working directory,
  // a directory outside every writable path, and a TCP port on loopback.
  let work: string
  let home: string
  let outside: string
  let configFile: string
  let listener: net.Server
  let port: number

  beforeAll(async () => {
    work = tempDir("gw-sandbox-work-")
    home = tempDir("gw-sandbox-home-")
    outside = tempDir("gw-sandbox-outside-")
    // Readable and writable by anyone: what stops the server must be the sandbox, not permissions.
    for (const dir of [work, home, outside]) fs.chmodSync(dir, 0o777)
    fs.writeFileSync(path.join(home, "secret.txt"), "the secret", { mode: 0o644 })
    configFile = path.join(work, "gateway.json")
    fs.writeFileSync(configFile, JSON.stringify({ gateway: { session_keys: ["a key"] } }), { mode: 0o644 })
    listener = net.createServer((socket) => socket.destroy())
    await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve))
    port = (listener.address() as net.AddressInfo).port
  })

  afterAll(async () => {
    await new Promise((resolve) => listener.close(resolve))
    for (const dir of [work, home, outside]) fs.rmSync(dir, { recursive: true, force: true })
  })

  const quiet: ConnectionLog = { debug: () => {}, info: () => {}, warn: () => {} }

  /** Runs `use` with a connection to the hostile server (in `sandbox`, or none), stopped afterwards; no process left. */
  const withServer = async <A>(
    sandbox: SandboxSettings | undefined,
    use: (call: (name: string, args?: Record<string, unknown>) => Promise<any>) => Promise<A>,
    options: { env?: Record<string, string>; log?: ConnectionLog } = {}
  ) => {
    const before = descendants(process.pid)
    const instance = defineInstance("t", "h", { transport: "stdio", command: ["node", hostile], working_dir: work, env: options.env }, "config") as any
    const scope = Effect.runSync(Scope.make())
    const connection = makeStdioConnection(instance, { log: options.log ?? quiet, scope, runtime: Runtime.defaultRuntime, sandbox: () => sandbox })
    const call = async (name: string, args: Record<string, unknown> = {}) => {
      const answer = await Effect.runPromise(Effect.either(connection.request("tools/call", { name, arguments: args })))
      // (The transport's own error as it is, not wrapped.)
      if (answer._tag === "Left") throw answer.left
      return JSON.parse((answer.right as any).result.content[0].text)
    }
    try {
      return await use(call)
    } finally {
      await Effect.runPromise(connection.close)
      await Effect.runPromise(Scope.close(scope, Exit.void))
      expect(descendants(process.pid).filter((p) => !before.includes(p))).toEqual([])
    }
  }

  const settings = (input: SandboxInput): SandboxSettings => ({
    ...resolveSandbox(input, work, DEFAULT_SANDBOX.presetLimits)!,
    hide: [configFile]
  })
  // strict, and the fixture's own directory readable (the server's code lies outside its working directory).
  const strict = () => settings({ preset: "strict", read: [fixtures] })

  /** Every attempt of the hostile server, with what each outcome must be. */
  const attempts = (call: (name: string, args?: Record<string, unknown>) => Promise<any>) => ({
    secret: () => call("read_file", { path: path.join(home, "secret.txt") }),
    config: () => call("read_file", { path: configFile }),
    writeOutside: () => call("write_file", { path: path.join(outside, "written.txt") }),
    writeInside: () => call("write_file", { path: path.join(work, "written.txt") }),
    connect: () => call("connect", { port }),
    processes: () => call("list_processes"),
    spawnMany: (count: number) => call("spawn_many", { count })
  })
  // What the strict preset allows (processes, 512) and what a fork bomb tries: it is refused near
  // the limit (the server's own threads count too), after a few hundred processes, not 10,000.
  const processLimit = DEFAULT_SANDBOX.presetLimits.processes!
  const expectRefusedAtLimit = (spawned: any, limit = processLimit) => {
    expect(spawned.ok).toBe(false)
    expect(spawned.error).toMatch(/^after \d+ processes: .*EAGAIN/)
    const started = Number(spawned.error.match(/^after (\d+)/)[1])
    expect(started).toBeLessThan(limit)
    expect(started).toBeGreaterThan(limit - 32)
  }

  it("unsandboxed, the server does each of those things (the fixture works)", async () => {
    await withServer(undefined, async (call) => {
      const a = attempts(call)
      expect(await a.secret()).toEqual({ ok: true, text: "the secret" })
      expect((await a.config()).ok).toBe(true)
      expect(await a.writeOutside()).toEqual({ ok: true })
      expect(await a.connect()).toEqual({ ok: true })
      const processes = await a.processes()
      expect(processes.pids).toContain(process.pid)
      // Past the strict limit (512), not 10,000: that many real processes is too heavy for a CI box
      // of two cores; past the limit is what proves the limit, not the fixture, refuses them.
      expect(await a.spawnMany(600)).toEqual({ ok: true, started: 600 })
    })
    expect(fs.existsSync(path.join(outside, "written.txt"))).toBe(true)
    fs.rmSync(path.join(outside, "written.txt"))
  }, 120_000)

  it("strict: each attempt fails, the tool says why, and the server keeps serving", async () => {
    await withServer(strict(), async (call) => {
      const a = attempts(call)
      const secret = await a.secret()
      expect(secret).toMatchObject({ ok: false })
      expect(secret.error).toContain("ENOENT")
      // The config file lies in its working directory: covered (a device node on a nodev mount: unreadable).
      const config = await a.config()
      expect(config.ok).toBe(false)
      expect(config.error).toMatch(/EACCES|ENOENT/)
      expect((await a.writeOutside()).ok).toBe(false)
      expect(await a.writeInside()).toEqual({ ok: true })
      const connect = await a.connect()
      expect(connect.ok).toBe(false)
      expect(connect.error).toMatch(/ECONNREFUSED|ENETUNREACH/)
      const processes = await a.processes()
      expect(processes.pids).not.toContain(process.pid)
      expect(processes.pids.length).toBeLessThan(5)
      expectRefusedAtLimit(await a.spawnMany(10_000))
      // 4 GiB, past the preset's 2048 MiB of private memory: refused, not killed.
      const allocated = await call("allocate", { mb: 4096 })
      expect(allocated.ok).toBe(false)
      // Still serving after every refusal.
      expect((await a.writeInside()).ok).toBe(true)
    })
    expect(fs.existsSync(path.join(outside, "written.txt"))).toBe(false)
    expect(fs.readFileSync(configFile, "utf8")).toContain("session_keys")
    expect(fs.readFileSync(path.join(work, "written.txt"), "utf8")).toBe("written by the server")
  }, 120_000)

  it("the network preset reaches the loopback port; a memory limit stops a large allocation", async () => {
    await withServer(settings({ preset: "network", read: [fixtures], limits: { memory_mb: 256 } }), async (call) => {
      expect(await call("connect", { port })).toEqual({ ok: true })
      const allocated = await call("allocate", { mb: 512 })
      expect(allocated.ok).toBe(false)
      expect(await call("allocate", { mb: 64 })).toEqual({ ok: true, allocated: 64 })
    })
    await withServer(undefined, async (call) => {
      expect(await call("allocate", { mb: 512 })).toEqual({ ok: true, allocated: 512 })
    })
  }, 60_000)

  it("without bwrap on PATH the server does not start (never unsandboxed), and says so once", async () => {
    const warnings: Array<string> = []
    const log: ConnectionLog = { ...quiet, warn: (m) => warnings.push(m) }
    await withServer(strict(), async (call) => {
      for (let i = 0; i < 2; i++) {
        const failed = await call("list_processes").then(() => undefined, (e) => e)
        expect(failed).toMatchObject({ _tag: "TransportError", reachedBackend: false })
        expect(failed.message).toContain("bubblewrap")
      }
    }, { env: { PATH: "/nonexistent" }, log })
    expect(warnings.filter((w) => w.includes("apt-get install bubblewrap"))).toHaveLength(1)
  }, 60_000)

  it("through the gateway: server-everything and server-filesystem under strict serve, the registry shows each sandbox, other templates are unaffected", async () => {
    // The reference servers' code (node_modules may be a link, absent inside: its real directory, and the servers named by it).
    const modules = fs.realpathSync(path.join(repoRoot, "node_modules"))
    const files = tempDir("gw-sandbox-files-")
    fs.chmodSync(files, 0o777)
    const dir = tempDir("gw-sandbox-gateway-")
    const file = path.join(dir, "gateway.json")
    writeJson(file, {
      gateway: { sandbox: { read: [modules] }, allow_stdio_registration: true },
      templates: {
        everything: { instances: [{ id: "e", transport: "stdio", command: ["node", fs.realpathSync(everythingServer), "stdio"], working_dir: work }] },
        filesystem: {
          sandbox: { read: [modules], write: [files] },
          instances: [{ id: "f", transport: "stdio", command: ["node", fs.realpathSync(filesystemServer), files], working_dir: work }]
        },
        hostile: { instances: [{ id: "h", transport: "stdio", command: ["node", hostile], working_dir: work, sandbox: { read: [fixtures] } }] },
        plain: { instances: [{ id: "p", transport: "stdio", command: ["node", hostile], working_dir: work, sandbox: "off" }] }
      }
    })
    const gateway = await startGateway({ configFile: file })
    try {
      const base = gateway.url
      const echo = await api(`${base}/mcp/everything/tools/call`, { json: { name: "echo", arguments: { message: "hi" } } })
      expect(echo.body.content[0].text).toBe("Echo: hi")
      const written = await api(`${base}/mcp/filesystem/tools/call`, { json: { name: "write_file", arguments: { path: path.join(files, "a.txt"), content: "A" } } })
      expect(written.body.isError ?? false).toBe(false)
      expect(fs.readFileSync(path.join(files, "a.txt"), "utf8")).toBe("A")
      const refused = await api(`${base}/mcp/filesystem/tools/call`, { json: { name: "write_file", arguments: { path: path.join(outside, "b.txt"), content: "B" } } })
      expect(refused.body.isError).toBe(true)
      expect(fs.existsSync(path.join(outside, "b.txt"))).toBe(false)
      // The hostile server is refused; the same one unsandboxed, beside it, is not.
      const secret = (t: string) => api(`${base}/mcp/${t}/tools/call`, { json: { name: "read_file", arguments: { path: path.join(home, "secret.txt") } } })
      expect(JSON.parse((await secret("hostile")).body.content[0].text).ok).toBe(false)
      expect(JSON.parse((await secret("plain")).body.content[0].text)).toEqual({ ok: true, text: "the secret" })
      const registry = (await api(`${base}/gateway/registry`)).body
      expect(registry.templates.everything.instances[0].sandbox).toMatchObject({ preset: "custom", network: "none", write: [work], read: [modules] })
      expect(registry.templates.filesystem.instances[0].sandbox).toMatchObject({ preset: "custom", network: "none", write: [work, files] })
      expect(registry.templates.plain.instances[0].sandbox).toEqual({ preset: "off" })
      // A registration may choose a preset, never "off" or paths of its own.
      const register = (sandbox: unknown) =>
        api(`${base}/gateway/register`, { json: { template_name: "registered", instance: { transport: "stdio", command: ["node", hostile], sandbox } } })
      for (const sandbox of ["off", { read: ["/root"] }]) {
        const refused = await register(sandbox)
        expect(refused.status).toBe(403)
        expect(refused.body.error.message).toContain(`"sandbox" only to "strict" or "network"`)
      }
      expect((await register("strict")).status).toBeLessThan(300)
      const after = (await api(`${base}/gateway/registry`)).body
      expect(after.templates.registered.instances[0].sandbox).toMatchObject({ preset: "strict", network: "none" })
    } finally {
      expect(await gateway.stop()).toBe(0)
      fs.rmSync(dir, { recursive: true, force: true })
      fs.rmSync(files, { recursive: true, force: true })
    }
  }, 120_000)

  it("through the gateway: warm processes start in the sandbox too, and a session takes one", async () => {
    const modules = fs.realpathSync(path.join(repoRoot, "node_modules"))
    const dir = tempDir("gw-sandbox-warm-")
    const file = path.join(dir, "gateway.json")
    writeJson(file, {
      templates: {
        own: {
          sandbox: { read: [modules] },
          instances: [{ id: "o", transport: "stdio", command: ["node", fs.realpathSync(everythingServer), "stdio"], working_dir: work }],
          load_balancer: { session_process: "per_session", max_sessions_per_instance: 3, warm_processes: 1, health_check_interval: 600 }
        }
      }
    })
    const gateway = await startGateway({ configFile: file })
    const clients: Array<Client> = []
    try {
      const connect = async () => {
        const client = new Client({ name: "warm", version: "1.0.0" })
        await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp/own`)))
        clients.push(client)
        return client
      }
      const base = children(gateway.process.pid!).length
      await connect()
      // Its own process, then one warm for the next session, once the sandbox's probe has spoken: each a bwrap.
      await waitUntil(() => children(gateway.process.pid!).length === base + 2, 20_000, "a warm process")
      const waiting = children(gateway.process.pid!)
      expect(waiting.map((pid) => fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim())).toEqual(waiting.map(() => "bwrap"))
      const second = await connect()
      expect((await second.callTool({ name: "echo", arguments: { message: "warm" } })).content).toEqual([{ type: "text", text: "Echo: warm" }])
      // It took the warm process: the only new one is the next warm one.
      await waitUntil(() => children(gateway.process.pid!).length === base + 3, 20_000, "the next warm process")
      expect(children(gateway.process.pid!).filter((pid) => !waiting.includes(pid))).toHaveLength(1)
    } finally {
      await Promise.all(clients.map((c) => c.close().catch(() => {})))
      expect(await gateway.stop()).toBe(0)
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 90_000)

  it("through the gateway, without bwrap on PATH: the instance does not start, one line says why, the others serve", async () => {
    const dir = tempDir("gw-sandbox-missing-")
    const file = path.join(dir, "gateway.json")
    writeJson(file, {
      templates: {
        hostile: { sandbox: "strict", instances: [{ id: "h", transport: "stdio", command: [process.execPath, hostile], working_dir: work }] },
        plain: { instances: [{ id: "p", transport: "stdio", command: [process.execPath, hostile], working_dir: work }] }
      }
    })
    const gateway = await startGateway({ configFile: file, env: { PATH: "/nonexistent" } })
    try {
      const base = gateway.url
      const refused = await api(`${base}/mcp/hostile/tools/call`, { json: { name: "list_processes" } })
      expect(refused.status).toBeGreaterThanOrEqual(500)
      const plain = await api(`${base}/mcp/plain/tools/call`, { json: { name: "list_processes" } })
      expect(JSON.parse(plain.body.content[0].text).ok).toBe(true)
      await waitUntil(() => gateway.stderr().includes("apt-get install bubblewrap"), 10_000, "the line saying what to install")
      expect(gateway.stderr().split("\n").filter((l) => l.includes("apt-get install bubblewrap") && l.includes("never runs unsandboxed"))).toHaveLength(1)
    } finally {
      expect(await gateway.stop()).toBe(0)
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 60_000)

  it("through the gateway: a server killed by its CPU-time limit is restarted and serves again", async () => {
    const dir = tempDir("gw-sandbox-cpu-")
    const file = path.join(dir, "gateway.json")
    writeJson(file, {
      templates: {
        hostile: {
          sandbox: { read: [fixtures], limits: { cpu_seconds: 1 } },
          instances: [{ id: "h", transport: "stdio", command: ["node", hostile], working_dir: work }]
        }
      }
    })
    const gateway = await startGateway({ configFile: file })
    try {
      const base = gateway.url
      const call = (name: string, args: Record<string, unknown> = {}) => api(`${base}/mcp/hostile/tools/call`, { json: { name, arguments: args } })
      const burnt = await call("burn", { seconds: 5 })
      expect(burnt.status).toBeGreaterThanOrEqual(500)
      const processOf = async () => (await api(`${base}/gateway/registry`)).body.templates.hostile.instances[0].process
      await waitUntil(async () => {
        const p = await processOf()
        return p?.restarts >= 1 && p?.state === "running"
      }, 30_000, "the restart after the CPU limit")
      // (bwrap exits 128 + the signal that killed the server: 137 for the kernel's SIGKILL past the hard limit.)
      expect((await processOf()).last_exit).toMatch(/code 137|SIGKILL|SIGXCPU/)
      const after = await call("list_processes")
      expect(JSON.parse(after.body.content[0].text).ok).toBe(true)
    } finally {
      expect(await gateway.stop()).toBe(0)
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 90_000)

  it("through the gateway: a fork bomb under strict is refused at its own limit; another strict server still starts processes; other templates and the gateway serve", async () => {
    const dir = tempDir("gw-sandbox-forks-")
    const file = path.join(dir, "gateway.json")
    const hostileInstance = (id: string) => ({ id, transport: "stdio", command: ["node", hostile], working_dir: work })
    writeJson(file, {
      gateway: { sandbox: { read: [fixtures] } },
      templates: {
        bomb: { instances: [hostileInstance("b")] },
        neighbour: { instances: [hostileInstance("n")] },
        plain: { sandbox: "off", instances: [hostileInstance("p")] }
      }
    })
    const gateway = await startGateway({ configFile: file })
    try {
      const call = async (template: string, name: string, args: Record<string, unknown> = {}) => {
        const answer = await api(`${gateway.url}/mcp/${template}/tools/call`, { json: { name, arguments: args } })
        expect(answer.status).toBe(200)
        return JSON.parse(answer.body.content[0].text)
      }
      // 10,000 tried, refused at the limit; it keeps what it got, using up its whole budget.
      expectRefusedAtLimit(await call("bomb", "spawn_many", { count: 10_000, hold: true }))
      // Meanwhile another strict server starts (its first process starts now) and starts its own
      // processes: each counts against its own limit (a user namespace of its own), not one
      // budget of the unprivileged user all sandboxed servers run as.
      expect(await call("neighbour", "spawn_many", { count: 100 })).toEqual({ ok: true, started: 100 })
      expect((await call("plain", "list_processes")).ok).toBe(true)
      expect((await api(`${gateway.url}/gateway/health`)).status).toBe(200)
      // The bomb's server serves on, and once it lets go, starts processes again.
      expect((await call("bomb", "list_processes")).ok).toBe(true)
      expect((await call("bomb", "release")).released).toBeGreaterThan(processLimit - 64)
      expect(await call("bomb", "spawn_many", { count: 10 })).toEqual({ ok: true, started: 10 })
    } finally {
      expect(await gateway.stop()).toBe(0)
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 120_000)

  // (Switching to another user needs root, as CI runs the tests.)
  it.skipIf(process.getuid?.() !== 0)("a gateway that is not root (uid 65534): strict still holds (bwrap's own user namespace), each server with its own processes limit", async () => {
    const dir = tempDir("gw-sandbox-nonroot-")
    // Its config readable, its state (pid file) writable by the gateway's user.
    fs.chmodSync(dir, 0o755)
    const state = path.join(dir, "state")
    fs.mkdirSync(state)
    fs.chownSync(state, 65534, 65534)
    const file = path.join(dir, "gateway.json")
    const hostileInstance = (id: string) => ({ id, transport: "stdio", command: ["node", hostile], working_dir: work })
    // (A smaller processes limit than strict's: the 512 is proven as root above, and forks are slow on a busy box.)
    const limit = 64
    writeJson(file, {
      gateway: { sandbox: { read: [fixtures], limits: { processes: limit } } },
      templates: { bomb: { instances: [hostileInstance("b")] }, neighbour: { instances: [hostileInstance("n")] } }
    })
    fs.chmodSync(file, 0o644)
    const gateway = await startGateway({ configFile: file, asUser: 65534, env: { HOME: state, XDG_STATE_HOME: state } })
    try {
      const call = async (template: string, name: string, args: Record<string, unknown> = {}) => {
        const answer = await api(`${gateway.url}/mcp/${template}/tools/call`, { json: { name, arguments: args } })
        expect(answer.status).toBe(200)
        return JSON.parse(answer.body.content[0].text)
      }
      // What uid 65534 could read and write unsandboxed (the directories are open to all) it cannot.
      expect((await call("bomb", "read_file", { path: path.join(home, "secret.txt") })).error).toContain("ENOENT")
      expect((await call("bomb", "read_file", { path: file })).ok).toBe(false)
      expect((await call("bomb", "write_file", { path: path.join(outside, "nonroot.txt") })).ok).toBe(false)
      expect(await call("bomb", "write_file", { path: path.join(work, "nonroot.txt") })).toEqual({ ok: true })
      expect((await call("bomb", "connect", { port })).ok).toBe(false)
      expect((await call("bomb", "list_processes")).pids.length).toBeLessThan(5)
      // The server runs as the gateway's user, in a user namespace bwrap made (not the gateway's).
      const server = descendants(gateway.process.pid!).filter((pid) => {
        try {
          return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(hostile)
        } catch {
          return false
        }
      }).at(-1)!
      expect(fs.readFileSync(`/proc/${server}/status`, "utf8")).toMatch(/^Uid:\s+65534\s/m)
      expect(fs.readlinkSync(`/proc/${server}/ns/user`)).not.toBe(fs.readlinkSync(`/proc/${gateway.process.pid}/ns/user`))
      // A fork bomb is refused at its limit; the other server's processes count apart.
      expectRefusedAtLimit(await call("bomb", "spawn_many", { count: 10_000, hold: true }), limit)
      expect(await call("neighbour", "spawn_many", { count: 40 })).toEqual({ ok: true, started: 40 })
      expect((await call("bomb", "release")).ok).toBe(true)
    } finally {
      expect(await gateway.stop()).toBe(0)
      fs.rmSync(dir, { recursive: true, force: true })
      fs.rmSync(path.join(work, "nonroot.txt"), { force: true })
    }
    expect(fs.existsSync(path.join(outside, "nonroot.txt"))).toBe(false)
  }, 120_000)

  it("config validate: exit 2 and one line when a sandboxed instance cannot get its sandbox", async () => {
    const dir = tempDir("gw-sandbox-validate-")
    const file = path.join(dir, "gateway.json")
    writeJson(file, { templates: { t: { sandbox: "strict", instances: [{ id: "a", transport: "stdio", command: "node s.js" }] } } })
    const missing = await runGateway(["config", "validate", file], { PATH: "/nonexistent" })
    expect(missing.code).toBe(2)
    expect(missing.stderr.trim().split("\n")).toEqual([
      expect.stringMatching(/templates\.t\.instances\.a: the sandbox cannot be set up: bwrap \(bubblewrap\) is not on PATH; install bubblewrap \(apt-get install bubblewrap/)
    ])
    const present = await runGateway(["config", "validate", file])
    expect(present.code).toBe(0)
    fs.rmSync(dir, { recursive: true, force: true })
  }, 60_000)
})
