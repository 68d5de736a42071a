import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, repoRoot, type RunningGateway, startGateway, tempDir, waitUntil, writeJson } from "../support/processes.js"

/**
 * The public MCP conformance suite (server scenarios) run against a fixture server directly,
 * then through the gateway's MCP endpoint with the same server behind it over HTTP and over
 * stdio: scenario by scenario, the gateway passes at least every check the server passes.
 * The suite needs Node 22, installed from npm into .tmp/ (not a devDependency: the `node`
 * package would shadow Node 20 in npm scripts).
 */
const CONFORMANCE_VERSION = "0.1.16"
const tools = path.join(repoRoot, ".tmp/conformance-tools")
const node22 = path.join(tools, "node_modules/.bin/node")
const suite = path.join(tools, "node_modules/@modelcontextprotocol/conformance/dist/index.js")
const fixture = path.join(repoRoot, "test/fixtures/conformance-server.mjs")

type Results = Record<string, { readonly passed: number; readonly failed: number }>

/** Runs every server scenario against `url`; per scenario, the checks passed and failed. */
const runSuite = (url: string) =>
  new Promise<Results>((resolve, reject) => {
    const child = spawn(node22, [suite, "server", "--url", url], { stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (output += d))
    child.stderr.setEncoding("utf8").on("data", (d: string) => (output += d))
    const timer = setTimeout(() => child.kill("SIGKILL"), 240_000)
    child.once("error", reject)
    child.once("exit", () => {
      clearTimeout(timer)
      const results: Results = {}
      for (const match of output.matchAll(/^[✓✗] ([\w-]+): (\d+) passed, (\d+) failed$/gm)) {
        results[match[1]!] = { passed: Number(match[2]), failed: Number(match[3]) }
      }
      if (Object.keys(results).length === 0) reject(new Error(`the conformance suite reported nothing:\n${output.slice(-2000)}`))
      else resolve(results)
    })
  })

describe("MCP conformance suite through the gateway", () => {
  let server: ReturnType<typeof spawn> | undefined
  let gateway: RunningGateway | undefined
  let serverUrl: string

  beforeAll(async () => {
    if (!fs.existsSync(suite) || !fs.existsSync(node22)) {
      execFileSync("npm", [
        "install", "--no-audit", "--no-fund", "--prefix", tools,
        "node@22", `@modelcontextprotocol/conformance@${CONFORMANCE_VERSION}`
      ], { stdio: "ignore", timeout: 300_000 })
    }
    const port = await freePort()
    serverUrl = `http://127.0.0.1:${port}/mcp`
    server = spawn(process.execPath, [fixture], { env: { ...process.env, PORT: String(port) }, stdio: ["ignore", "ignore", "pipe"] })
    let log = ""
    server.stderr!.setEncoding("utf8").on("data", (d: string) => (log += d))
    await waitUntil(() => log.includes("listening on"), 30_000, "the fixture server")

    const dir = tempDir()
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, {
      templates: {
        "over-http": { instances: [{ id: "h", transport: "http", endpoint: serverUrl }] },
        // A process per client session: the suite's sampling and elicitation scenarios need the
        // server to see the client's capabilities. It opens a session per scenario and never ends them.
        "over-stdio": {
          instances: [{ id: "s", transport: "stdio", command: ["node", fixture, "stdio"] }],
          load_balancer: { session_process: "per_session", max_sessions_per_instance: 64 }
        }
      }
    })
    gateway = await startGateway({ configFile })
  }, 600_000)

  afterAll(async () => {
    await gateway?.stop()
    server?.kill("SIGTERM")
  })

  it("passes, scenario by scenario, at least every check the server passes directly", async () => {
    const direct = await runSuite(serverUrl)
    const throughGateway = {
      "over-http": await runSuite(`${gateway!.url}/mcp/over-http`),
      "over-stdio": await runSuite(`${gateway!.url}/mcp/over-stdio`)
    }
    expect(Object.keys(direct).length).toBeGreaterThanOrEqual(30)
    for (const [template, results] of Object.entries(throughGateway)) {
      for (const [scenario, expected] of Object.entries(direct)) {
        expect(results[scenario]?.passed ?? 0, `${template}: ${scenario}`).toBeGreaterThanOrEqual(expected.passed)
        expect(results[scenario]?.failed ?? 0, `${template}: ${scenario}`).toBeLessThanOrEqual(expected.failed)
      }
    }
  }, 900_000)
})
