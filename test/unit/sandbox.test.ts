import { ConfigProvider, Effect, Exit } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { DEFAULT_SANDBOX, loadGatewayConfig } from "../../src/config/GatewayConfig.js"
import { resolveSandbox, type SandboxSettings } from "../../src/domain/Sandbox.js"
import { sandboxedSpawn } from "../../src/transport/sandbox.js"

const limits = DEFAULT_SANDBOX.presetLimits
const spec = { command: "node", args: ["server.js"], cwd: "/srv/app", env: { PATH: "/usr/bin", HOME: "/root" }, asRoot: true, ownUserNamespace: true }

/** The pairs or triples of bwrap's options, as one string each, for membership checks. */
const options = (args: ReadonlyArray<string>) => args.join(" ")

describe("resolveSandbox", () => {
  it("is none for off or nothing; a preset names its network; the working directory is writable", () => {
    expect(resolveSandbox(undefined, "/w", limits)).toBeUndefined()
    expect(resolveSandbox("off", "/w", limits)).toBeUndefined()
    expect(resolveSandbox("strict", "/w", limits)).toEqual({ preset: "strict", network: "none", read: [], write: ["/w"], limits })
    expect(resolveSandbox("network", "/w", limits)).toMatchObject({ preset: "network", network: "host", write: ["/w"] })
  })

  it("the object form starts from a preset (strict by default), paths relative to the working directory, limits one by one", () => {
    expect(resolveSandbox({}, "/w", limits)).toMatchObject({ preset: "strict", network: "none" })
    expect(resolveSandbox({ preset: "network" }, "/w", limits)).toMatchObject({ preset: "network", network: "host" })
    const custom = resolveSandbox({ network: "host", read: ["venv", "/opt/x"], write: ["out"], limits: { processes: 10 } }, "/w", limits)!
    expect(custom).toEqual({
      preset: "custom",
      network: "host",
      read: ["/w/venv", "/opt/x"],
      write: ["/w", "/w/out"],
      limits: { ...limits, processes: 10 }
    })
  })
})

describe("sandboxedSpawn (bwrap's command line)", () => {
  const strict = resolveSandbox("strict", "/srv/app", limits)!
  const network = resolveSandbox("network", "/srv/app", limits)!

  it("strict: system dirs read-only, private /tmp, new /proc and /dev, own PID namespace, no network, dies with the gateway, cwd writable", () => {
    const s = sandboxedSpawn(strict, spec)
    expect(s.command).toBe("bwrap")
    const o = options(s.args)
    expect(o).toContain("--ro-bind /usr /usr")
    expect(o).toContain("--ro-bind /etc /etc")
    expect(o).toContain("--ro-bind-try /lib64 /lib64")
    expect(o).toContain("--tmpfs /tmp")
    expect(o).toContain("--proc /proc")
    expect(o).toContain("--dev /dev")
    expect(o).toContain("--unshare-pid")
    expect(o).toContain("--unshare-net")
    expect(o).toContain("--die-with-parent")
    expect(o).toContain("--bind /srv/app /srv/app")
    expect(o).toContain("--chdir /srv/app")
    // Home directories are never bound; no new session (the gateway signals the process group).
    expect(s.args.filter((a) => a.startsWith("/root") || a.startsWith("/home"))).toEqual([])
    expect(s.args).not.toContain("--new-session")
    // The writable cwd comes after /tmp's tmpfs (a cwd under /tmp shows through).
    expect(s.args.indexOf("--bind")).toBeGreaterThan(s.args.indexOf("--tmpfs"))
    // The command last, after the drop to nobody (root ignores RLIMIT_NPROC), a user namespace
    // of its own (its processes limit counts its own processes only), then the limits.
    const tail = s.args.slice(s.args.indexOf("--") + 1)
    expect(tail).toEqual([
      "setpriv",
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "--inh-caps=-all",
      "--bounding-set=-all",
      "--no-new-privs",
      "--",
      "unshare",
      "--user",
      "--",
      "prlimit",
      `--data=${2048 * 1024 * 1024}`,
      "--nofile=1024",
      "--nproc=512",
      "--",
      "node",
      "server.js"
    ])
    // Where nobody cannot make a user namespace: the same without one (the budget is shared then).
    const shared = sandboxedSpawn(strict, { ...spec, ownUserNamespace: false })
    expect(shared.args).not.toContain("unshare")
    expect(shared.args.slice(shared.args.indexOf("--") + 1, shared.args.indexOf("prlimit"))).toEqual(tail.slice(0, 8))
    // HOME (/root) is not there: the private /tmp instead.
    expect(s.env).toEqual({ PATH: "/usr/bin", HOME: "/tmp" })
  })

  it("network: the same with the host's network", () => {
    const s = sandboxedSpawn(network, spec)
    expect(s.args).not.toContain("--unshare-net")
    expect(options(s.args)).toContain("--ro-bind-try /run/systemd/resolve /run/systemd/resolve")
    expect(s.args).toContain("--unshare-pid")
  })

  it("read and write lists, the command's directory, hidden files, limits and a non-root gateway", () => {
    const custom: SandboxSettings = {
      preset: "custom",
      network: "none",
      read: ["/opt/venv"],
      write: ["/srv/app", "/data"],
      limits: { cpuSeconds: 60, memoryMb: 100 },
      hide: ["/srv/app/gateway.json", "/etc/elsewhere/../x", "/var/registry.json"]
    }
    const s = sandboxedSpawn(custom, {
      ...spec,
      env: { HOME: "/data/home" },
      commandDir: "/root/.nvm/bin",
      asRoot: false,
      bwrap: "/usr/local/bin/bwrap"
    })
    expect(s.command).toBe("/usr/local/bin/bwrap")
    const o = options(s.args)
    expect(o).toContain("--ro-bind /opt/venv /opt/venv")
    expect(o).toContain("--bind /data /data")
    expect(o).toContain("--ro-bind-try /root/.nvm/bin /root/.nvm/bin")
    expect(o).toContain("--ro-bind-try /dev/null /srv/app/gateway.json")
    // The directories leading to bound paths are made traversable (0755), never one inside a bound path.
    expect(o).toContain("--perms 0755 --dir /opt")
    expect(o).toContain("--perms 0755 --dir /root/.nvm")
    expect(o).toContain("--perms 0755 --dir /srv")
    expect(o).not.toContain("--dir /srv/app")
    expect(s.args.indexOf("--dir")).toBeLessThan(s.args.indexOf("--bind"))
    expect(o).not.toContain("/var/registry.json")
    expect(s.args).not.toContain("setpriv")
    expect(s.args).not.toContain("unshare")
    expect(s.args.slice(s.args.indexOf("--") + 1)).toEqual(["prlimit", `--data=${100 * 1024 * 1024}`, "--cpu=60", "--", "node", "server.js"])
    // A HOME inside a writable path stays.
    expect(s.env.HOME).toBe("/data/home")
  })

  it("no limits: no prlimit; a command dir under /usr is not bound twice", () => {
    const none: SandboxSettings = { ...strict, limits: {} }
    const s = sandboxedSpawn(none, { ...spec, commandDir: "/usr/bin", asRoot: false })
    expect(s.args.slice(s.args.indexOf("--") + 1)).toEqual(["node", "server.js"])
    expect(options(s.args)).not.toContain("--ro-bind-try /usr/bin")
  })
})

describe("sandbox in the config", () => {
  const load = async (content: unknown) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-sandbox-"))
    const file = path.join(dir, "gateway.json")
    fs.writeFileSync(file, JSON.stringify(content))
    try {
      return await Effect.runPromiseExit(loadGatewayConfig({ configFile: file }).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map()))))
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }

  it("is read at each level (gateway default: off)", async () => {
    const none = await load({})
    expect(Exit.isSuccess(none) && none.value.gateway.sandbox).toBe("off")
    const given = await load({
      gateway: { sandbox: "network" },
      templates: { t: { sandbox: { network: "none", write: ["out"], limits: { memory_mb: 512 } }, instances: [{ id: "a", transport: "stdio", command: "node s.js", sandbox: "strict" }] } }
    })
    expect(Exit.isSuccess(given)).toBe(true)
    if (Exit.isSuccess(given)) {
      expect(given.value.gateway.sandbox).toBe("network")
      expect(given.value.templates[0]!.sandbox).toEqual({ network: "none", write: ["out"], limits: { memory_mb: 512 } })
      expect(given.value.templates[0]!.instances[0]).toMatchObject({ sandbox: "strict" })
    }
  })

  it("invalid values are config errors naming the field", async () => {
    const bad = await load({
      gateway: { sandbox: "strcit" },
      templates: { t: { sandbox: { network: "lan", limits: { processes: 0 } } } }
    })
    expect(Exit.isFailure(bad)).toBe(true)
    const problems = (Exit.isFailure(bad) ? (bad.cause as any).error.problems : []).join("\n")
    expect(problems).toContain("gateway.sandbox")
    expect(problems).toContain("templates.t.sandbox")
    expect(problems).toMatch(/"strict"/)
  })
})
