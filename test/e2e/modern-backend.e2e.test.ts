import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from "@modelcontextprotocol/client"
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
  ResourceUpdatedNotificationSchema,
  ToolListChangedNotificationSchema
} from "@modelcontextprotocol/sdk/types.js"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { api, type RunningGateway, type RunningServer, startFixtureServer, startGateway, tempDir, waitUntil, writeJson } from "../support/processes.js"

const MODERN = "2026-07-28"
const text = (result: unknown) => (((result as { content: Array<{ text?: string }> }).content)[0]?.text ?? "")

/**
 * Backends of the MCP 2026-07-28 revision behind the gateway, written with the SDK v2 server
 * package (test/fixtures/modern-server.mjs): a modern-only one (`legacy: "reject"`, no
 * `initialize`, no sessions) and a dual-era one, each reached by an old client (SDK 1.x, which
 * gets a session of the gateway's) and a modern one (SDK v2), through the REST face, and probed
 * for health with `server/discover`.
 */
describe("modern (2026-07-28) backends", () => {
  let strict: RunningServer
  let dual: RunningServer
  let gateway: RunningGateway
  const closers: Array<() => Promise<unknown>> = []

  const capabilities = { sampling: {}, elicitation: { form: {} }, roots: { listChanged: true } }

  const old = async (template: string) => {
    const client = new Client({ name: "old-e2e", version: "1.0.0" }, { capabilities })
    client.setRequestHandler(ElicitRequestSchema, async () => ({ action: "accept", content: { name: "Ada" } }))
    client.setRequestHandler(CreateMessageRequestSchema, async () => ({
      role: "assistant",
      content: { type: "text", text: "Paris" },
      model: "fake",
      stopReason: "endTurn"
    }))
    client.setRequestHandler(ListRootsRequestSchema, async () => ({ roots: [{ uri: "file:///work", name: "work" }] }))
    await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp/${template}`)))
    closers.push(() => client.close())
    return client
  }
  const modern = async (url: string) => {
    const client = new ModernClient({ name: "modern-e2e", version: "1.0.0" }, { capabilities, versionNegotiation: { mode: "auto" } })
    client.setRequestHandler("elicitation/create", async () => ({ action: "accept", content: { name: "Grace" } }))
    client.setRequestHandler("sampling/createMessage", async () => ({
      role: "assistant",
      content: { type: "text", text: "Rome" },
      model: "fake",
      stopReason: "endTurn"
    }))
    client.setRequestHandler("roots/list", async () => ({ roots: [{ uri: "file:///modern", name: "modern" }] }))
    await client.connect(new ModernTransport(new URL(url)))
    closers.push(() => client.close())
    return client
  }
  /** What the fixture saw (calls, cancelled calls, the last envelope and headers). */
  const serverStats = async (client: { callTool: (...args: Array<any>) => Promise<unknown> }) =>
    JSON.parse(text(await client.callTool({ name: "stats", arguments: {} })))

  /** Starts a slow call, aborts it once it runs, and waits until the server saw it cancelled. */
  const cancelsAtServer = async (client: { callTool: (...args: Array<any>) => Promise<unknown> }, start: (signal: AbortSignal) => Promise<unknown>) => {
    const before = await serverStats(client)
    const controller = new AbortController()
    const call = start(controller.signal)
    await waitUntil(async () => (await serverStats(client)).calls > before.calls, 5_000, "the call running at the server")
    controller.abort()
    await expect(call).rejects.toThrow()
    await waitUntil(async () => (await serverStats(client)).aborted > before.aborted, 5_000, "the server saw the cancellation")
  }

  beforeAll(async () => {
    strict = await startFixtureServer("modern-server.mjs", { LEGACY: "reject", NAME: "strict" })
    dual = await startFixtureServer("modern-server.mjs", { NAME: "dual" })
    const dir = tempDir()
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, {
      templates: {
        strict: { instances: [{ id: "m1", transport: "http", endpoint: strict.url }] },
        dual: { instances: [{ id: "d1", transport: "http", endpoint: dual.url }] }
      }
    })
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await Promise.all(closers.map((close) => close().catch(() => {})))
    await gateway?.stop()
    await strict?.stop()
    await dual?.stop()
  })

  it("the gateway tells the generation apart (server/discover) and probes health with it", async () => {
    await waitUntil(async () => {
      const { body } = await api(`${gateway.url}/gateway/stats`)
      return body.templates.strict.instances.m1.status === "healthy" && body.templates.dual.instances.d1.status === "healthy"
    }, 20_000, "both modern instances healthy")
    expect(gateway.stderr()).toMatch(/speaks MCP 2026-07-28/)
  })

  for (const template of ["strict", "dual"]) {
    it(`${template}: an old client gets a session and everything the server offers: lists, calls with progress, resources, prompts, completion`, async () => {
      const client = await old(template)
      expect(client.getServerVersion()?.name).toBe(template)
      expect(client.getInstructions()).toBe("A modern fixture.")
      const direct = await modern(template === "strict" ? strict.url : dual.url)
      const names = (tools: Array<{ name: string }>) => tools.map((t) => t.name).sort()
      expect(names((await client.listTools()).tools)).toEqual(names((await direct.listTools()).tools))

      expect(text(await client.callTool({ name: "echo", arguments: { text: "hi" } }))).toBe(`${template}: hi`)
      const progress: Array<number> = []
      const slow = await client.callTool({ name: "slow", arguments: { steps: 3 } }, undefined, {
        onprogress: (p) => void progress.push(p.progress)
      })
      expect(text(slow)).toBe("done 3")
      expect(progress).toEqual([1, 2, 3])
      // An old client sees results shaped as an old server's: without the revision's own fields.
      expect(slow).not.toHaveProperty("resultType")
      expect(slow._meta?.["io.modelcontextprotocol/serverInfo"]).toBeUndefined()

      const read = await client.readResource({ uri: "fixture://greeting" })
      expect(read.contents[0]).toMatchObject({ text: `hello from ${template}` })
      const prompt = await client.getPrompt({ name: "greet", arguments: { who: "Ada" } })
      expect(JSON.stringify(prompt.messages)).toContain("Say hello to Ada")
      const completion = await client.complete({ ref: { type: "ref/prompt", name: "greet" }, argument: { name: "who", value: "A" } })
      expect(completion.completion.values).toEqual(["Ada", "Alan"])

      // Each request carried the envelope of the client the gateway speaks for.
      const seen = await serverStats(client)
      expect(seen.envelope["io.modelcontextprotocol/protocolVersion"]).toBe(MODERN)
      expect(seen.envelope["io.modelcontextprotocol/clientInfo"].name).toBe("old-e2e")
      expect(seen.envelope["io.modelcontextprotocol/clientCapabilities"].sampling).toEqual({})
      expect(seen.headers["mcp-method"]).toBe("tools/call")
      expect(seen.headers["mcp-name"]).toBe("slow")
    })
  }

  it("an old client: the server's input requests become server→client requests (elicitation, sampling, roots); requestState goes back untouched", async () => {
    const client = await old("strict")
    expect(text(await client.callTool({ name: "ask", arguments: { q: "Your name?" } }))).toBe("hello Ada; state=state-from-the-server")
    expect(text(await client.callTool({ name: "sample", arguments: { prompt: "Capital of France?" } }))).toBe("the model said: Paris")
    expect(text(await client.callTool({ name: "roots", arguments: {} }))).toBe("roots: file:///work")
  })

  it("an old client: arguments the server mirrors in headers (x-mcp-header) get their Mcp-Param-* header", async () => {
    const client = await old("strict")
    expect(text(await client.callTool({ name: "region", arguments: { region: "Zürich " } }))).toBe("region=Zürich ")
    expect((await serverStats(client)).headers["mcp-param-region"]).toBe("=?base64?WsO8cmljaCA=?=")
  })

  it("an old client: resource subscriptions and list changes arrive on its standing stream (the server's subscriptions/listen)", async () => {
    const client = await old("strict")
    const updates: Array<string> = []
    let listChanged = 0
    client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => void updates.push(n.params.uri))
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => void listChanged++)
    await client.subscribeResource({ uri: "fixture://greeting" })
    await client.callTool({ name: "touch", arguments: {} })
    await waitUntil(() => updates.length > 0, 5_000, "resources/updated")
    expect(updates).toEqual(["fixture://greeting"])
    await client.callTool({ name: "poke", arguments: {} })
    await waitUntil(() => listChanged > 0, 5_000, "tools/list_changed")
  })

  it("an old client: logging/setLevel becomes the envelope's log level; log messages come only once it is set", async () => {
    const client = await old("strict")
    const messages: Array<unknown> = []
    client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => void messages.push(n.params.data))
    await client.callTool({ name: "log", arguments: {} })
    expect(messages).toEqual([])
    await client.setLoggingLevel("info")
    await client.callTool({ name: "log", arguments: {} })
    await waitUntil(() => messages.length > 0, 5_000, "the log message")
    expect(messages).toEqual(["a message from the tool"])
    expect((await serverStats(client)).envelope["io.modelcontextprotocol/logLevel"]).toBe("info")
  })

  it("an old client: cancelling a call closes it at the server", async () => {
    const client = await old("strict")
    await cancelsAtServer(client, (signal) => client.callTool({ name: "slow", arguments: { steps: 20, ms: 100 } }, undefined, { signal }))
  })

  it("a modern client: discover is the server's own; calls, progress, input_required with the server's requestState untouched", async () => {
    const client = await modern(`${gateway.url}/mcp/strict`)
    expect(client.getProtocolEra()).toBe("modern")
    expect(client.getServerVersion()?.name).toBe("strict")
    expect(client.getDiscoverResult()?.supportedVersions).toEqual([MODERN])
    expect(client.getInstructions()).toBe("A modern fixture.")

    expect(text(await client.callTool({ name: "echo", arguments: { text: "yo" } }))).toBe("strict: yo")
    const progress: Array<number> = []
    const slow = await client.callTool({ name: "slow", arguments: { steps: 2 } }, { onprogress: (p: { progress: number }) => void progress.push(p.progress) })
    expect(text(slow)).toBe("done 2")
    expect(progress).toEqual([1, 2])
    expect(text(await client.callTool({ name: "ask", arguments: { q: "Name?" } }))).toBe("hello Grace; state=state-from-the-server")
    expect(text(await client.callTool({ name: "sample", arguments: { prompt: "Capital of Italy?" } }))).toBe("the model said: Rome")
    expect(text(await client.callTool({ name: "roots", arguments: {} }))).toBe("roots: file:///modern")
    expect(text(await client.callTool({ name: "region", arguments: { region: "eu" } }))).toBe("region=eu")
    const read = await client.readResource({ uri: "fixture://greeting" })
    expect(read.contents[0]).toMatchObject({ text: "hello from strict" })
    const prompt = await client.getPrompt({ name: "greet", arguments: { who: "Grace" } })
    expect(JSON.stringify(prompt.messages)).toContain("Say hello to Grace")
    const completion = await client.complete({ ref: { type: "ref/prompt", name: "greet" }, argument: { name: "who", value: "G" } })
    expect(completion.completion.values).toEqual(["Grace"])
    const seen = await serverStats(client)
    expect(seen.envelope["io.modelcontextprotocol/clientInfo"].name).toBe("modern-e2e")
    expect(seen.envelope["io.modelcontextprotocol/clientCapabilities"].elicitation).toEqual({ form: {} })
  })

  /** A modern tools/call sent by hand (a client that declares no capabilities), with headers of the test's choosing. */
  const rawToolCall = (name: string, args: Record<string, unknown>, headers: Record<string, string> = {}) =>
    fetch(`${gateway.url}/mcp/strict`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": name,
        ...headers
      },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 3,
        method: "tools/call",
        params: {
          name,
          arguments: args,
          _meta: {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": { name: "raw", version: "1" },
            "io.modelcontextprotocol/clientCapabilities": {}
          }
        }
      })
    })

  it("a modern client's own Mcp-Param-* headers reach the server, which refuses one that disagrees with the body (400/-32020)", async () => {
    expect((await rawToolCall("region", { region: "eu" }, { "mcp-param-region": "eu" })).status).toBe(200)
    const lying = await rawToolCall("region", { region: "eu" }, { "mcp-param-region": "us" })
    expect(lying.status).toBe(400)
    expect(await lying.json()).toMatchObject({ id: 3, error: { code: -32020 } })
    expect((await rawToolCall("region", { region: "eu" })).status).toBe(400)
  })

  it("a modern client that did not declare a capability the server needs gets the server's -32021 as a 400", async () => {
    const response = await rawToolCall("ask", { q: "?" })
    expect(response.status).toBe(400)
    expect(await response.json()).toMatchObject({ id: 3, error: { code: -32021, data: { requiredCapabilities: { elicitation: {} } } } })
  })

  it("a modern client: subscriptions/listen carries the server's resource updates and list changes", async () => {
    const client = await modern(`${gateway.url}/mcp/strict`)
    const updates: Array<string> = []
    let listChanged = 0
    client.setNotificationHandler("notifications/resources/updated", (n: { params: { uri: string } }) => void updates.push(n.params.uri))
    client.setNotificationHandler("notifications/tools/list_changed", () => void listChanged++)
    const sub = await client.listen({ toolsListChanged: true, resourceSubscriptions: ["fixture://greeting"] })
    expect(sub.honoredFilter).toEqual({ toolsListChanged: true, resourceSubscriptions: ["fixture://greeting"] })
    await client.callTool({ name: "touch", arguments: {} })
    await waitUntil(() => updates.length > 0, 5_000, "resources/updated on the listen stream")
    await client.callTool({ name: "poke", arguments: {} })
    await waitUntil(() => listChanged > 0, 5_000, "tools/list_changed on the listen stream")
    await sub.close()
  })

  it("a modern client: aborting a call (closing its stream) cancels it at the server", async () => {
    const client = await modern(`${gateway.url}/mcp/strict`)
    await cancelsAtServer(client, (signal) => client.callTool({ name: "slow", arguments: { steps: 20, ms: 100 } }, { signal }))
  })

  it("a server that restarts: health follows it, and the listen stream the gateway keeps comes back (list changes still arrive)", async () => {
    const client = await modern(`${gateway.url}/mcp/dual`)
    let listChanged = 0
    client.setNotificationHandler("notifications/tools/list_changed", () => void listChanged++)
    const sub = await client.listen({ toolsListChanged: true })
    const port = dual.port
    await dual.stop()
    dual = await startFixtureServer("modern-server.mjs", { NAME: "dual", PORT: String(port) })
    // The gateway's listen stream comes back on its own schedule: poke until a change arrives (a
    // poke before the stream is back changes the list unheard).
    await waitUntil(async () => {
      // (A poke the gateway cannot pass on yet, while it finds the server again, is tried again.)
      await client.callTool({ name: "poke", arguments: {} }).catch(() => undefined)
      const heard = Date.now() + 500
      while (listChanged === 0 && Date.now() < heard) await new Promise((r) => setTimeout(r, 20))
      return listChanged > 0
    }, 20_000, "tools/list_changed after the server restarted")
    await sub.close()
  })

  it("the REST face works against a modern backend (it declares no client capabilities: a tool that needs input is refused by the server)", async () => {
    const echo = await api(`${gateway.url}/mcp/strict/tools/call`, { json: { name: "echo", arguments: { text: "rest" } } })
    expect(echo.status).toBe(200)
    expect(echo.body.content[0].text).toBe("strict: rest")
    const list = await api(`${gateway.url}/mcp/strict/tools/list`)
    expect(list.body.tools.map((t: { name: string }) => t.name)).toContain("region")
    const region = await api(`${gateway.url}/mcp/strict/tools/call`, { json: { name: "region", arguments: { region: "ap" } } })
    expect(region.body.content[0].text).toBe("region=ap")
    const ask = await api(`${gateway.url}/mcp/strict/tools/call`, { json: { name: "ask", arguments: { q: "Name?" } } })
    expect(ask.status).toBe(400)
    expect(JSON.stringify(ask.body)).toContain("client capabilities do not declare")
  })
})
