import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js"
import { CreateMessageRequestSchema, ElicitRequestSchema, ListRootsRequestSchema } from "@modelcontextprotocol/sdk/types.js"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  api,
  descendants,
  everythingServer,
  initializeRaw,
  type RunningGateway,
  type RunningServer,
  startEverythingSse,
  startGateway,
  tempDir,
  waitUntil,
  writeJson
} from "../support/processes.js"

/** The result of a JSON-RPC answer, whether it came as JSON or as an SSE event. */
const readRpcResult = async (response: Response) => {
  const text = await response.text()
  const json = text.trimStart().startsWith("{") ? text : text.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).find((d) => d.trim() !== "")!
  return JSON.parse(json).result
}

/** What a full-featured client declares (as desktop clients do). */
const FULL = { sampling: {}, elicitation: {}, roots: { listChanged: true } }

/**
 * The default config (`session_process: "auto"`): through stdio and legacy SSE templates a client
 * sees what it sees talking to the server itself, whatever it declares; a process is shared
 * only among sessions for which sharing changes nothing.
 */
describe("fidelity under the default config", () => {
  let legacy: RunningServer
  let gateway: RunningGateway
  const clients: Array<Client> = []

  const connect = async (transport: Transport, capabilities: Record<string, unknown>) => {
    const client = new Client({ name: "fidelity", version: "1.0.0" }, { capabilities })
    if ("sampling" in capabilities) {
      client.setRequestHandler(CreateMessageRequestSchema, async (request) => ({
        model: "test-model",
        role: "assistant",
        content: { type: "text", text: `sampled: ${JSON.stringify(request.params.messages[0]?.content)}` }
      }))
    }
    if ("elicitation" in capabilities) client.setRequestHandler(ElicitRequestSchema, async () => ({ action: "decline" }))
    if ("roots" in capabilities) client.setRequestHandler(ListRootsRequestSchema, async () => ({ roots: [{ uri: "file:///mine", name: "mine" }] }))
    await client.connect(transport)
    clients.push(client)
    return client
  }
  const direct = {
    stdio: () => new StdioClientTransport({ command: process.execPath, args: [everythingServer, "stdio"], stderr: "ignore" }),
    legacy: () => new SSEClientTransport(new URL(legacy.url))
  }
  const through = (template: string) => () => new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp/${template}`))
  const toolNames = async (client: Client) => (await client.listTools()).tools.map((t) => t.name).sort()

  beforeAll(async () => {
    legacy = await startEverythingSse()
    const dir = tempDir()
    const configFile = path.join(dir, "gateway.json")
    // No load_balancer settings at all: what a new user gets.
    writeJson(configFile, {
      templates: {
        stdio: { instances: [{ id: "s1", transport: "stdio", command: ["node", everythingServer, "stdio"] }] },
        legacy: { instances: [{ id: "l1", transport: "sse", endpoint: legacy.url }] }
      }
    })
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => {})))
    await gateway?.stop()
    await legacy?.stop()
  })

  for (const template of ["stdio", "legacy"] as const) {
    it(`${template}: the same tools as the server itself, for a bare client and for a full one; sampling, elicitation and roots reach the client`, async () => {
      for (const capabilities of [{}, { sampling: {} }, FULL]) {
        const [own, server] = await Promise.all([connect(through(template)(), capabilities), connect(direct[template](), capabilities)])
        expect(await toolNames(own), JSON.stringify(capabilities)).toEqual(await toolNames(server))
      }
      const full = await connect(through(template)(), FULL)
      const sampled = await full.callTool({ name: "trigger-sampling-request", arguments: { prompt: "hello" } })
      expect(JSON.stringify(sampled.content)).toContain("sampled:")
      expect(JSON.stringify(sampled.content)).toContain("hello")
      const elicited = await full.callTool({ name: "trigger-elicitation-request", arguments: {} })
      expect(JSON.stringify(elicited.content)).toMatch(/decline/i)
      const roots = await full.callTool({ name: "get-roots-list", arguments: {} })
      expect(JSON.stringify(roots.content)).toContain("file:///mine")
    })
  }

  it("stdio: bare clients share the instance's process; a client that declares capabilities gets one of its own, stopped with its session", async () => {
    const bare = await connect(through("stdio")(), {})
    await bare.callTool({ name: "echo", arguments: { message: "warm" } })
    const base = descendants(gateway.process.pid!).length
    const another = await connect(through("stdio")(), {})
    expect((await another.callTool({ name: "echo", arguments: { message: "shared" } })).content).toEqual([{ type: "text", text: "Echo: shared" }])
    expect(descendants(gateway.process.pid!).length).toBe(base)

    const sessionProcesses = async () => (await api(`${gateway.url}/gateway/registry`)).body.templates.stdio.instances[0].session_processes as number
    const ownBefore = await sessionProcesses()
    const sampler = await connect(through("stdio")(), { sampling: {} })
    expect(await sessionProcesses()).toBe(ownBefore + 1)
    // Its own process (a warm one, when the instance had one: then another is started for the next session).
    const withSampler = descendants(gateway.process.pid!).length
    expect(withSampler).toBeGreaterThan(base)
    expect(JSON.stringify((await sampler.callTool({ name: "trigger-sampling-request", arguments: { prompt: "x" } })).content)).toContain("sampled:")
    await (sampler.transport as StreamableHTTPClientTransport).terminateSession()
    await waitUntil(async () => descendants(gateway.process.pid!).length === withSampler - 1 && await sessionProcesses() === ownBefore, 10_000, "the session's own process to stop")
  })

  it("stdio: a client asking for another protocol version than the shared process speaks gets its own process, and the server's own answer", async () => {
    const sessionProcesses = async () => (await api(`${gateway.url}/gateway/registry`)).body.templates.stdio.instances[0].session_processes as number
    const base = descendants(gateway.process.pid!).length
    const ownBefore = await sessionProcesses()
    const opened = await initializeRaw(`${gateway.url}/mcp/stdio`, 1, { protocolVersion: "2025-03-26" })
    expect(opened.status).toBe(200)
    expect(await readRpcResult(opened)).toMatchObject({ protocolVersion: "2025-03-26" })
    expect(await sessionProcesses()).toBe(ownBefore + 1)
    expect(descendants(gateway.process.pid!).length).toBeGreaterThan(base)
  })
})
