import { execFile } from "node:child_process"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as path from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { api, descendants, type RunningGateway, repoRoot, startGateway, tempDir, waitUntil, writeJson } from "../support/processes.js"

const run = promisify(execFile)

/** The system's Python (a venv of it links to it, under /usr, which every sandbox shows); scripts/test-deps.sh installs it. */
const python = ["/usr/bin/python3", "/usr/local/bin/python3"].find((p) => fs.existsSync(p))
const asRoot = process.getuid?.() === 0

/** chown -R to nobody: what a server runs as under a root gateway must own what it writes in place. */
const chownToNobody = async (dir: string) => {
  if (asRoot) await run("chown", ["-hR", "65534:65534", dir])
}

/**
 * The three examples of docs/security.md ("Sandbox", "Examples"), each through a real gateway
 * in real bubblewrap: the config below is the docs' with its paths under a temporary directory.
 * Beside each, the same server with less than the example gives, to show what the example's
 * paths are for.
 */
describe.skipIf(python === undefined)("the sandbox examples of docs/security.md (bubblewrap, through the gateway)", () => {
  const modules = fs.realpathSync(path.join(repoRoot, "node_modules"))
  const everythingPackage = JSON.parse(fs.readFileSync(path.join(modules, "@modelcontextprotocol/server-everything/package.json"), "utf8"))
  const everythingSpec = `${everythingPackage.name}@${everythingPackage.version}`
  let root: string
  let gateway: RunningGateway
  let before: Array<number>
  // The docs' paths: /srv/shared-docs, /srv/reference, /opt/venvs/weather, /var/cache/mcp-npm, /var/lib/mcp/*.
  const paths = {} as { sharedDocs: string; reference: string; venv: string; npmCache: string; work: (name: string) => string }

  /**
   * A private npm cache that holds what a first `npx -y SPEC` with the network leaves there: the
   * package's registry document (from a stub registry the test serves, so that no network is
   * needed) and the npx tree (linked to the checkout's node_modules, which hold that package).
   */
  const fillNpmCache = async (cache: string) => {
    const lock = JSON.parse(fs.readFileSync(path.join(repoRoot, "package-lock.json"), "utf8")).packages[`node_modules/${everythingPackage.name}`]
    const document = {
      name: everythingPackage.name,
      "dist-tags": { latest: everythingPackage.version },
      versions: { [everythingPackage.version]: { ...everythingPackage, _id: everythingSpec, dist: { tarball: lock.resolved, integrity: lock.integrity } } }
    }
    const registry = http.createServer((request, response) => {
      const known = decodeURIComponent(request.url ?? "") === `/${everythingPackage.name}`
      response.writeHead(known ? 200 : 404, { "content-type": "application/json", "cache-control": "max-age=300" })
      response.end(JSON.stringify(known ? document : {}))
    })
    await new Promise<void>((resolve) => registry.listen(0, "127.0.0.1", resolve))
    const registryUrl = `http://127.0.0.1:${(registry.address() as AddressInfo).port}/`
    // npx's directory for a spec: the first 16 hex digits of the spec's sha512 (npm's libnpmexec).
    const tree = path.join(cache, "_npx", crypto.createHash("sha512").update(everythingSpec).digest("hex").slice(0, 16))
    fs.mkdirSync(tree, { recursive: true })
    fs.writeFileSync(path.join(tree, "package.json"), JSON.stringify({ dependencies: { [everythingPackage.name]: everythingPackage.version } }))
    fs.symlinkSync(modules, path.join(tree, "node_modules"))
    try {
      await run("npx", ["--yes", `--package=${everythingSpec}`, "--registry", registryUrl, "--cache", cache, "--", "true"], { cwd: paths.work("everything"), timeout: 60_000 })
    } finally {
      await new Promise((resolve) => registry.close(resolve))
    }
    return registryUrl
  }

  beforeAll(async () => {
    before = descendants(process.pid)
    root = tempDir("gw-sandbox-examples-")
    paths.sharedDocs = path.join(root, "srv/shared-docs")
    paths.reference = path.join(root, "srv/reference")
    paths.venv = path.join(root, "opt/venvs/weather")
    paths.npmCache = path.join(root, "var/cache/mcp-npm")
    paths.work = (name) => path.join(root, "var/lib/mcp", name)
    for (const dir of [paths.sharedDocs, paths.reference, paths.npmCache, ...["files", "weather", "everything"].map(paths.work)]) fs.mkdirSync(dir, { recursive: true })
    fs.writeFileSync(path.join(paths.reference, "guide.txt"), "the reference guide")
    for (const dir of [paths.sharedDocs, ...["files", "weather", "everything"].map(paths.work)]) await chownToNobody(dir)

    // A virtualenv (no pip needed) with the server in its site-packages: it starts only where the venv is readable.
    await run(python!, ["-m", "venv", "--without-pip", paths.venv])
    const sitePackages = (await run(path.join(paths.venv, "bin/python"), ["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])).stdout.trim()
    fs.copyFileSync(path.join(repoRoot, "test/fixtures/python-server.py"), path.join(sitePackages, "weather_server.py"))

    const registryUrl = await fillNpmCache(paths.npmCache)
    await chownToNobody(paths.npmCache)

    const npx = (sandbox: unknown) => ({
      sandbox,
      instances: [{
        transport: "stdio",
        command: ["npx", "-y", everythingSpec, "stdio"],
        working_dir: paths.work("everything"),
        // (npm_config_registry: the stub the cache was filled from, whose name is in the cache's keys; it is gone now.)
        env: { npm_config_cache: paths.npmCache, npm_config_offline: "true", npm_config_registry: registryUrl }
      }]
    })
    const weather = (sandbox: unknown) => ({
      sandbox,
      instances: [{ transport: "stdio", command: [path.join(paths.venv, "bin/python"), "-m", "weather_server"], working_dir: paths.work("weather") }]
    })
    const file = path.join(root, "gateway.json")
    writeJson(file, {
      templates: {
        files: {
          sandbox: { read: [modules, paths.reference], write: [paths.sharedDocs] },
          instances: [{
            transport: "stdio",
            command: ["node", path.join(modules, "@modelcontextprotocol/server-filesystem/dist/index.js"), paths.sharedDocs, paths.reference],
            working_dir: paths.work("files")
          }]
        },
        weather: weather({ read: [paths.venv] }),
        // The npx tree links to the checkout's node_modules (fillNpmCache): readable too, here only.
        everything: npx({ read: [paths.npmCache, modules], write: [path.join(paths.npmCache, "_cacache"), path.join(paths.npmCache, "_npx")] }),
        // Less than each example gives.
        weather_without_venv: weather("strict"),
        everything_cache_read_only: npx({ read: [paths.npmCache, modules] })
      }
    })
    gateway = await startGateway({ configFile: file })
  }, 120_000)

  afterAll(async () => {
    if (gateway !== undefined) expect(await gateway.stop()).toBe(0)
    expect(descendants(process.pid).filter((p) => !before.includes(p))).toEqual([])
    fs.rmSync(root, { recursive: true, force: true })
  })

  const call = (template: string, name: string, args: Record<string, unknown> = {}) =>
    api(`${gateway.url}/mcp/${template}/tools/call`, { json: { name, arguments: args } })
  const processOf = async (template: string) => (await api(`${gateway.url}/gateway/registry`)).body.templates[template].instances[0].process

  it("server-filesystem: serves and writes its allowed directory, reads the reference one, writes nothing else", async () => {
    const written = await call("files", "write_file", { path: path.join(paths.sharedDocs, "notes.md"), content: "# notes" })
    expect(written.body.isError ?? false).toBe(false)
    expect(fs.readFileSync(path.join(paths.sharedDocs, "notes.md"), "utf8")).toBe("# notes")
    const read = await call("files", "read_text_file", { path: path.join(paths.reference, "guide.txt") })
    expect(read.body.content[0].text).toBe("the reference guide")
    // Allowed by the server (its second directory), refused by the sandbox (readable only).
    const refused = await call("files", "write_file", { path: path.join(paths.reference, "guide.txt"), content: "overwritten" })
    expect(refused.body.isError).toBe(true)
    expect(refused.body.content[0].text).toMatch(/EROFS|read-only/)
    expect(fs.readFileSync(path.join(paths.reference, "guide.txt"), "utf8")).toBe("the reference guide")
  }, 60_000)

  it("a Python server in a virtualenv: serves with the venv readable, and cannot write it", async () => {
    const forecast = await call("weather", "forecast", { city: "Lyon" })
    expect(JSON.parse(forecast.body.content[0].text)).toEqual({ city: "Lyon", sky: "clear" })
    const where = JSON.parse((await call("weather", "where", { path: path.join(paths.venv, "planted.py") })).body.content[0].text)
    expect(where.prefix).toBe(paths.venv)
    expect(where.file).toContain(paths.venv)
    expect(where.write.ok).toBe(false)
    expect(fs.existsSync(path.join(paths.venv, "planted.py"))).toBe(false)
    if (asRoot) expect(where.uid).toBe(65534)
  }, 60_000)

  it("the same Python server under plain strict: its venv is not there, so it does not start", async () => {
    const failed = await call("weather_without_venv", "forecast", { city: "Lyon" })
    expect(failed.status).toBeGreaterThanOrEqual(500)
    await waitUntil(async () => ((await processOf("weather_without_venv"))?.stderr_tail ?? []).join("\n").includes("No module named weather_server"), 20_000, "python's complaint in the stderr tail")
  }, 60_000)

  it("an npx server, offline from its npm cache with the cache's index and npx directory writable", async () => {
    const echo = await call("everything", "echo", { message: "from the cache" })
    expect(echo.body.content[0].text).toBe("Echo: from the cache")
    expect((await processOf("everything")).state).toBe("running")
  }, 60_000)

  it("the same npx server with its cache only readable does not start: npm writes its cache to read it", async () => {
    const failed = await call("everything_cache_read_only", "echo", { message: "hi" })
    expect(failed.status).toBeGreaterThanOrEqual(500)
    await waitUntil(async () => /ENOTCACHED|EROFS/.test(((await processOf("everything_cache_read_only"))?.stderr_tail ?? []).join("\n")), 20_000, "npm's error in the stderr tail")
  }, 60_000)
})
