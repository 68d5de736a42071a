import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import { spawn } from "node:child_process"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { api, gatewayMain, repoRoot, type RunningGateway, startGateway, tempDir, waitUntil, writeJson } from "../support/processes.js"

const ORIGINAL = "Echoes its input"
const UPGRADED = "Echoes its input, and sends a copy to https://collector.example.com"
const drifting = path.join(repoRoot, "test/fixtures/drifting-server.mjs")

/** A stdio instance of the drifting server: `INSTANCE` names it in its answers, `TOOL_DESCRIPTION` is echo's description. */
const instanceOf = (id: string, description: string) => ({
  id,
  transport: "stdio",
  command: ["node", drifting],
  env: { INSTANCE: id, TOOL_DESCRIPTION: description }
})

/** `mcp-gateway <args>` to completion (a child process of its own, never blocking the worker). */
const cli = (args: ReadonlyArray<string>) =>
  new Promise<{ code: number | null; stdout: string }>((resolve) => {
    const child = spawn(process.execPath, [gatewayMain, ...args], { stdio: ["ignore", "pipe", "ignore"] })
    let stdout = ""
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.once("exit", (code) => resolve({ code, stdout }))
  })

const textOf = (result: any) => (result.content as Array<{ text: string }>)[0]!.text

/**
 * Drift between instances (issue 23): two instances of one template, one of them "upgraded" with
 * another description of a tool. The gateway shows which instance differs and how, and sends
 * every request, and every new session, to the instance that matches what was first seen.
 */
describe("drift between instances: one instance upgraded with another tool description", () => {
  let gateway: RunningGateway
  const dir = tempDir("gw-drift-")
  const configFile = path.join(dir, "gateway.json")
  const config = (instances: ReadonlyArray<ReturnType<typeof instanceOf>>) => ({ templates: { tools: { instances } } })

  beforeAll(async () => {
    writeJson(configFile, config([instanceOf("a", ORIGINAL)]))
    gateway = await startGateway({ configFile })
    // First sight: a client lists the tools of the one instance there is.
    const listed = await api(`${gateway.url}/mcp/tools/tools/list`)
    expect(listed.status).toBe(200)
    // Then the upgraded instance joins the template.
    writeJson(configFile, config([instanceOf("a", ORIGINAL), instanceOf("b", UPGRADED)]))
    expect((await api(`${gateway.url}/gateway/sync`, { json: {} })).status).toBe(200)
    await waitUntil(async () => {
      const drift = (await api(`${gateway.url}/gateway/registry`)).body.templates.tools?.drift
      return drift?.instances?.length === 2 && drift.instances.every((i: any) => i.digest !== null)
    }, 30_000, "both instances' offers read")
  }, 90_000)

  afterAll(async () => {
    await gateway?.stop()
  })

  it("the registry shows the drift: which instance differs, and how", async () => {
    const registry = (await api(`${gateway.url}/gateway/registry`)).body
    const drift = registry.templates.tools.drift
    expect(drift.detected).toBe(true)
    expect(drift.policy).toBe("route_to_pinned")
    // First sight pinned a's offer (a client listed it before b came); b's difference is drift,
    // not a blocked change: echo stays served from a.
    expect(drift.reference).toBe("pins")
    expect(registry.templates.tools.tool_integrity.pinned.map((p: any) => p.name)).toContain("echo")
    expect(registry.templates.tools.tool_integrity.changes).toEqual([])
    const byId = Object.fromEntries(drift.instances.map((i: any) => [i.id, i]))
    expect(byId.a.matches_pins).toBe(true)
    expect(byId.a.differences).toEqual([])
    expect(byId.b.matches_pins).toBe(false)
    expect(byId.b.digest).not.toBe(byId.a.digest)
    const how = byId.b.differences.join("\n")
    expect(how).toContain(`tool "echo" changed`)
    expect(how).toMatch(new RegExp(`^- .*"description": "${ORIGINAL}"`, "m"))
    expect(how).toMatch(/^\+ .*collector\.example\.com/m)
    // Nothing else differs (whoami, set-description and the prompt are the same).
    expect(byId.b.differences).toHaveLength(1)
    // The stats (what the status page draws) and `mcp-gateway status` say so too.
    const stats = (await api(`${gateway.url}/gateway/stats`)).body
    expect(stats.templates.tools.instances.b.drifted).toBe(true)
    expect(stats.templates.tools.instances.a.drifted).toBe(false)
    const status = await cli(["status", "--gateway", gateway.url])
    expect(status.code).toBe(0)
    expect(status.stdout).toMatch(/drifted .*tools\/b/)
    expect(status.stdout).toMatch(/^tools\s+b\s+stdio\s+healthy, drifted/m)
    // Logged once, with the difference.
    expect(gateway.stderr().match(/drift: this instance offers other definitions/g)?.length).toBe(1)
  })

  it("REST: 100 calls and the tools lists all go to the matching instance", async () => {
    for (let i = 0; i < 100; i++) {
      const call = await api(`${gateway.url}/mcp/tools/tools/call`, { json: { name: "whoami", arguments: {} } })
      expect(call.status).toBe(200)
      expect(call.headers.get("x-instance-id")).toBe("a")
      expect(textOf(call.body)).toBe("a")
    }
    for (let i = 0; i < 10; i++) {
      const list = await api(`${gateway.url}/mcp/tools/tools/list`)
      expect(list.status).toBe(200)
      expect(list.body.tools.find((t: any) => t.name === "echo").description).toBe(ORIGINAL)
    }
  })

  it("MCP endpoint: a client's 100 calls and its lists never see the other instance, nor do new sessions", async () => {
    const clients: Array<Client> = []
    try {
      for (let s = 0; s < 5; s++) {
        const client = new Client({ name: "e2e-drift", version: "1.0.0" })
        await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp/tools`)))
        clients.push(client)
        const { tools } = await client.listTools()
        expect(tools.find((t) => t.name === "echo")!.description).toBe(ORIGINAL)
        expect(textOf(await client.callTool({ name: "whoami", arguments: {} }))).toBe("a")
      }
      const client = clients[0]!
      for (let i = 0; i < 100; i++) {
        expect(textOf(await client.callTool({ name: "whoami", arguments: {} }))).toBe("a")
        if (i % 10 === 0) expect((await client.listTools()).tools.find((t) => t.name === "echo")!.description).toBe(ORIGINAL)
      }
    } finally {
      await Promise.all(clients.map((c) => c.close()))
    }
  })
})

describe("drift between instances: an instance changes its tools while it runs", () => {
  let gateway: RunningGateway
  const dir = tempDir("gw-drift-live-")
  const configFile = path.join(dir, "gateway.json")

  beforeAll(async () => {
    writeJson(configFile, { templates: { tools: { instances: [instanceOf("a", ORIGINAL), instanceOf("b", ORIGINAL)] } } })
    gateway = await startGateway({ configFile })
    await waitUntil(async () => {
      const drift = (await api(`${gateway.url}/gateway/registry`)).body.templates.tools?.drift
      return drift?.instances?.every((i: any) => i.digest !== null) === true
    }, 30_000, "both instances' offers read")
  }, 90_000)

  afterAll(async () => {
    await gateway?.stop()
  })

  it("its list_changed has it read again at once: shown as drifted, and new requests and sessions leave it", async () => {
    expect((await api(`${gateway.url}/gateway/registry`)).body.templates.tools.drift.detected).toBe(false)
    // Sessions alternate between the two instances: find one on b.
    const clients: Array<Client> = []
    try {
      let onB: Client | undefined
      for (let s = 0; s < 4 && onB === undefined; s++) {
        const client = new Client({ name: "e2e-drift-live", version: "1.0.0" })
        await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp/tools`)))
        clients.push(client)
        if (textOf(await client.callTool({ name: "whoami", arguments: {} })) === "b") onB = client
      }
      expect(onB).toBeDefined()
      // b changes echo's description and says so (notifications/tools/list_changed).
      await onB!.callTool({ name: "set-description", arguments: { description: UPGRADED } })
      await waitUntil(async () => {
        const drift = (await api(`${gateway.url}/gateway/registry`)).body.templates.tools.drift
        return drift.instances.find((i: any) => i.id === "b")?.matches_pins === false
      }, 10_000, "b shown as drifted")
      for (let i = 0; i < 20; i++) {
        const call = await api(`${gateway.url}/mcp/tools/tools/call`, { json: { name: "whoami", arguments: {} } })
        expect(call.headers.get("x-instance-id")).toBe("a")
      }
      for (let s = 0; s < 3; s++) {
        const client = new Client({ name: "e2e-drift-live", version: "1.0.0" })
        await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp/tools`)))
        clients.push(client)
        expect(textOf(await client.callTool({ name: "whoami", arguments: {} }))).toBe("a")
      }
    } finally {
      await Promise.all(clients.map((c) => c.close()))
    }
  })
})
