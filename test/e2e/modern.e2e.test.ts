import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from "@modelcontextprotocol/client"
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  api,
  everythingServer,
  type RunningGateway,
  type RunningServer,
  startEverythingHttp,
  startEverythingSse,
  startGateway,
  tempDir,
  waitUntil,
  writeJson
} from "../support/processes.js"

const MODERN = "2026-07-28"

/** A modern request sent by hand, with the envelope and headers the revision requires (overridable). */
const modernPost = (url: string, method: string, params: Record<string, unknown> = {}, headers: Record<string, string> = {}, signal?: AbortSignal) =>
  fetch(url, {
    method: "POST",
    signal,
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": MODERN,
      "mcp-method": method,
      ...headers
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method,
      params: {
        ...params,
        _meta: {
          "io.modelcontextprotocol/protocolVersion": MODERN,
          "io.modelcontextprotocol/clientInfo": { name: "raw", version: "1" },
          "io.modelcontextprotocol/clientCapabilities": {},
          ...(params._meta as object | undefined)
        }
      }
    })
  })

/**
 * Clients of the MCP 2026-07-28 revision (SDK v2 in version negotiation) on the same
 * `/mcp/{template}` URL as old clients, in front of old backends (server-everything over stdio
 * and Streamable HTTP).
 */
describe("modern (2026-07-28) clients on the MCP endpoint", () => {
  let backend: RunningServer
  let sseBackend: RunningServer
  let gateway: RunningGateway
  const closers: Array<() => Promise<unknown>> = []

  const modern = async (template: string) => {
    const client = new ModernClient({ name: "modern-e2e", version: "1.0.0" }, { versionNegotiation: { mode: "auto" } })
    await client.connect(new ModernTransport(new URL(`${gateway.url}/mcp/${template}`)))
    closers.push(() => client.close())
    return client
  }
  const legacy = async (url: string) => {
    const client = new Client({ name: "legacy-e2e", version: "1.0.0" })
    await client.connect(new StreamableHTTPClientTransport(new URL(url)))
    closers.push(() => client.close())
    return client
  }

  beforeAll(async () => {
    backend = await startEverythingHttp()
    sseBackend = await startEverythingSse()
    const dir = tempDir()
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, {
      templates: {
        stdio: { instances: [{ id: "s1", transport: "stdio", command: ["node", everythingServer, "stdio"] }] },
        http: { instances: [{ id: "h1", transport: "http", endpoint: backend.url }] },
        sse: { instances: [{ id: "l1", transport: "sse", endpoint: sseBackend.url }] }
      }
    })
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await Promise.all(closers.map((close) => close().catch(() => {})))
    await gateway?.stop()
    await backend?.stop()
    await sseBackend?.stop()
  })

  for (const template of ["stdio", "http", "sse"]) {
    it(`${template}: the SDK v2 client negotiates the modern revision, discovers the server, lists and calls tools with progress`, async () => {
      const client = await modern(template)
      expect(client.getProtocolEra()).toBe("modern")
      expect(client.getNegotiatedProtocolVersion()).toBe(MODERN)
      expect(client.getServerVersion()?.name).toBe("mcp-servers/everything")
      expect(client.getServerCapabilities()?.tools).toBeDefined()

      const direct = await legacy(backend.url)
      const names = (tools: Array<{ name: string }>) => tools.map((t) => t.name).sort()
      expect(names((await client.listTools()).tools)).toEqual(names((await direct.listTools()).tools))

      expect((await client.callTool({ name: "echo", arguments: { message: "modern" } })).content).toEqual([
        { type: "text", text: "Echo: modern" }
      ])
      const progress: Array<number> = []
      const long = await client.callTool(
        { name: "trigger-long-running-operation", arguments: { duration: 1, steps: 3 } },
        { onprogress: (p: { progress: number }) => void progress.push(p.progress) }
      )
      expect(JSON.stringify(long.content)).toContain("completed")
      expect(progress.length).toBe(3)

      const resource = await client.readResource({ uri: "demo://resource/static/document/architecture.md" })
      expect(resource.contents[0]?.uri).toBe("demo://resource/static/document/architecture.md")
      const prompt = await client.getPrompt({ name: "simple-prompt" })
      expect(prompt.messages.length).toBeGreaterThan(0)
      const completion = await client.complete({ ref: { type: "ref/prompt", name: "completable-prompt" }, argument: { name: "department", value: "S" } })
      expect(completion.completion.values).toEqual(["Sales", "Support"])
    })
  }

  for (const template of ["stdio", "http", "sse"]) {
    it(`${template}: what the server asks mid-call (sampling, elicitation) reaches the modern client as input_required, and its answers go back`, async () => {
      const client = new ModernClient(
        { name: "modern-asked", version: "1.0.0" },
        { versionNegotiation: { mode: "auto" }, capabilities: { sampling: {}, elicitation: { form: {} } } }
      )
      const asked: Array<string> = []
      client.setRequestHandler("sampling/createMessage", async (request: { params: { messages: Array<{ content: unknown }> } }) => {
        asked.push("sampling")
        return { role: "assistant", content: { type: "text", text: `sampled ${JSON.stringify(request.params.messages[0]?.content)}` }, model: "m", stopReason: "endTurn" }
      })
      client.setRequestHandler("elicitation/create", async () => {
        asked.push("elicitation")
        return { action: "decline" }
      })
      await client.connect(new ModernTransport(new URL(`${gateway.url}/mcp/${template}`)))
      closers.push(() => client.close())
      expect(client.getProtocolEra()).toBe("modern")
      const tools = (await client.listTools()).tools.map((t: { name: string }) => t.name)
      expect(tools).toContain("trigger-sampling-request")

      const sampled = await client.callTool({ name: "trigger-sampling-request", arguments: { prompt: "hello" } })
      expect(JSON.stringify(sampled.content)).toContain("sampled")
      expect(JSON.stringify(sampled.content)).toContain("hello")
      const elicited = await client.callTool({ name: "trigger-elicitation-request", arguments: {} })
      expect(JSON.stringify(elicited.content)).toMatch(/decline/i)
      expect(asked).toEqual(["sampling", "elicitation"])
    })
  }

  for (const template of ["stdio", "http", "sse"]) {
    it(`${template}: subscriptions/listen carries resource updates of the resources listened to, and ends when the client closes it`, async () => {
      const client = await modern(template)
      const uri = "demo://resource/static/document/architecture.md"
      const updates: Array<string> = []
      client.setNotificationHandler("notifications/resources/updated", (n: { params: { uri: string } }) => void updates.push(n.params.uri))
      const subscription = await client.listen({ resourceSubscriptions: [uri], promptsListChanged: true })
      expect(subscription.honoredFilter).toMatchObject({ resourceSubscriptions: [uri] })
      await client.callTool({ name: "toggle-subscriber-updates", arguments: {} })
      await waitUntil(() => updates.length > 0, 10_000, "a resource update on the listen stream")
      expect(updates[0]).toBe(uri)
      await client.callTool({ name: "toggle-subscriber-updates", arguments: {} })
      await subscription.close()
      expect(await subscription.closed).toBe("local")
    })
  }

  it("discover offers neither logging nor the old revision's tasks; a task parameter runs the call as an ordinary one", async () => {
    const url = `${gateway.url}/mcp/stdio`
    const discovered = (await (await modernPost(url, "server/discover")).json()) as { result: { capabilities: Record<string, unknown> } }
    expect(discovered.result.capabilities.tools).toBeDefined()
    expect(discovered.result.capabilities.logging).toBeUndefined()
    expect(discovered.result.capabilities.tasks).toBeUndefined()
    const called = await modernPost(url, "tools/call", { name: "echo", arguments: { message: "no task" }, task: { ttl: 60000 } }, { "mcp-name": "echo" })
    expect(((await called.json()) as { result: unknown }).result).toMatchObject({ content: [{ type: "text", text: "Echo: no task" }], resultType: "complete" })
  })

  it("a requestState the gateway did not give is refused, in-band", async () => {
    const response = await modernPost(`${gateway.url}/mcp/stdio`, "tools/call", {
      name: "echo",
      arguments: { message: "x" },
      requestState: "forged",
      inputResponses: { "input-1": { action: "accept" } }
    }, { "mcp-name": "echo" })
    expect(response.status).toBe(200)
    expect(((await response.json()) as { error: { code: number; message: string } }).error).toMatchObject({ code: -32602, message: "Invalid or expired requestState" })
  })

  it("an old client and a modern one on the same URL, at the same time", async () => {
    const [old, fresh] = await Promise.all([legacy(`${gateway.url}/mcp/stdio`), modern("stdio")])
    const [a, b] = await Promise.all([
      old.callTool({ name: "echo", arguments: { message: "old" } }),
      fresh.callTool({ name: "echo", arguments: { message: "new" } })
    ])
    expect(a.content).toEqual([{ type: "text", text: "Echo: old" }])
    expect(b.content).toEqual([{ type: "text", text: "Echo: new" }])
  })

  it("headers that disagree with the body are a 400 with -32020; unknown and removed methods 404 with -32601; an unknown version -32022", async () => {
    const url = `${gateway.url}/mcp/stdio`
    const expectError = async (response: Response, status: number, code: number) => {
      expect(response.status).toBe(status)
      expect(((await response.json()) as { error: { code: number } }).error.code).toBe(code)
    }
    await expectError(await modernPost(url, "tools/call", { name: "echo", arguments: { message: "x" } }, { "mcp-name": "get-sum" }), 400, -32020)
    await expectError(await modernPost(url, "tools/call", { name: "echo", arguments: { message: "x" } }), 400, -32020)
    await expectError(await modernPost(url, "tools/list", {}, { "mcp-method": "prompts/list" }), 400, -32020)
    await expectError(await modernPost(url, "tools/list", {}, { "mcp-protocol-version": "2025-11-25" }), 400, -32020)
    // A version header over a body without the envelope: a malformed envelope.
    const bare = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream", "mcp-protocol-version": MODERN, "mcp-method": "tools/list" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list", params: {} })
    })
    expect(bare.status).toBe(400)
    expect(await bare.json()).toMatchObject({ error: { code: -32602, data: { envelope: { missing: ["_meta"] } } } })
    await expectError(await modernPost(url, "nothing/here"), 404, -32601)
    await expectError(await modernPost(url, "ping"), 404, -32601)
    await expectError(await modernPost(url, "initialize"), 404, -32601)
    await expectError(
      await modernPost(url, "tools/list", { _meta: { "io.modelcontextprotocol/protocolVersion": "2027-01-01" } }, { "mcp-protocol-version": "2027-01-01" }),
      400,
      -32022
    )
    // A name that plain ASCII cannot carry comes Base64-wrapped, and matches.
    const wrapped = await modernPost(url, "tools/call", { name: "echo", arguments: { message: "x" } }, {
      "mcp-name": `=?base64?${Buffer.from("echo").toString("base64")}?=`
    })
    expect(wrapped.status).toBe(200)
  })

  it("closing the response stream cancels the backend call", async () => {
    const controller = new AbortController()
    const url = `${gateway.url}/mcp/http`
    const longCall = (progressToken: string, signal: AbortSignal) =>
      modernPost(url, "tools/call", {
        name: "trigger-long-running-operation",
        arguments: { duration: 20, steps: 20 },
        _meta: { progressToken }
      }, { "mcp-name": "trigger-long-running-operation" }, signal).catch(() => undefined)
    // Another call that stays: only the aborted one may end.
    const staying = new AbortController()
    const pending = longCall("q", staying.signal)
    const inflight = async () => (await api(`${gateway.url}/gateway/stats`)).body.templates.http.instances.h1.active_requests as number
    const aborting = longCall("p", controller.signal)
    await waitUntil(async () => (await inflight()) === 2, 10_000, "both calls in flight")
    controller.abort()
    await aborting
    await waitUntil(async () => (await inflight()) === 1, 5_000, "the aborted call to end at the backend")
    staying.abort()
    await pending
    await waitUntil(async () => (await inflight()) === 0, 5_000, "the other call to end")
  })
})
