import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import {
  CreateMessageRequestSchema,
  ListRootsRequestSchema,
  ResourceUpdatedNotificationSchema
} from "@modelcontextprotocol/sdk/types.js"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  api,
  children,
  descendants,
  everythingServer,
  initializeRaw,
  isAlive,
  repoRoot,
  mcpPostHeaders,
  type RunningGateway,
  type RunningServer,
  startEverythingHttp,
  startEverythingSse,
  startGateway,
  tempDir,
  waitUntil,
  writeJson
} from "../support/processes.js"

const rawHeaders = mcpPostHeaders

/** An MCP session opened by hand (for what the SDK client does not let a test do). */
const openRawSession = async (url: string) => {
  const opened = await initializeRaw(url)
  expect(opened.status).toBe(200)
  return { headers: rawHeaders, session: opened.headers.get("mcp-session-id")! }
}

/**
 * How the suite's stdio servers run: as the gateway starts them, or each in a strict sandbox
 * (bubblewrap; its code readable, its working directory writable). Under the sandbox only what
 * involves a stdio server runs (HTTP and legacy SSE backends are not sandboxed).
 */
type Variant = { readonly name: string; readonly sandboxed: boolean }

/**
 * The official MCP SDK client, connected to the gateway's `/mcp/{template}` endpoint, does what
 * it does when connected to the server directly.
 */
const endpointSuite = ({ sandboxed }: Variant) => {
  let backend: RunningServer
  let legacy: RunningServer | undefined
  let gateway: RunningGateway
  let work: string | undefined
  const clients: Array<Client> = []
  // Under the sandbox, the tests of HTTP and legacy SSE backends are not registered again
  // (nothing of theirs runs in a sandbox: a second run would test nothing new).
  const stdioOnly = (templates: ReadonlyArray<string>) => sandboxed ? templates.filter((t) => t === "stdio") : templates
  const notSandboxed = (name: string, test: () => Promise<void>, timeout?: number) => {
    if (!sandboxed) it(name, test, timeout)
  }

  const connect = async (url: string) => {
    const client = new Client({ name: "e2e", version: "1.0.0" })
    await client.connect(new StreamableHTTPClientTransport(new URL(url)))
    clients.push(client)
    return client
  }

  beforeAll(async () => {
    ;[backend, legacy] = await Promise.all([startEverythingHttp(), sandboxed ? undefined : startEverythingSse()])
    const dir = tempDir()
    const configFile = path.join(dir, "gateway.json")
    // The strict preset, and the reference server's code readable (node_modules may be a link: its real directory).
    const sandbox = sandboxed ? { preset: "strict", read: [fs.realpathSync(path.join(repoRoot, "node_modules"))] } : undefined
    if (sandboxed) {
      // Its working directory, writable by the unprivileged user a root gateway runs it as.
      work = tempDir("gw-e2e-sandboxed-")
      fs.chmodSync(work, 0o777)
    }
    const server = sandboxed
      ? { command: ["node", fs.realpathSync(everythingServer), "stdio"], working_dir: work }
      : { command: ["node", everythingServer, "stdio"] }
    writeJson(configFile, {
      gateway: { max_body_bytes: 16384, ...(sandboxed ? { sandbox } : {}) },
      templates: {
        stdio: {
          instances: [
            { id: "s1", transport: "stdio", ...server },
            { id: "s2", transport: "stdio", ...server }
          ]
        },
        http: { instances: [{ id: "h1", transport: "http", endpoint: backend.url }] },
        ...(legacy === undefined ? {} : {
          legacy: { instances: [{ id: "l1", transport: "sse", endpoint: legacy.url }] },
          "legacy-own": {
            instances: [{ id: "lo1", transport: "sse", endpoint: legacy.url }],
            load_balancer: { session_process: "per_session" }
          }
        }),
        victims: {
          instances: ["v1", "v2"].map((id) => ({
            id,
            transport: "stdio",
            ...server,
            env: { GATEWAY_TEST_INSTANCE: id }
          })),
          load_balancer: { health_check_interval: 600 }
        },
        own: {
          instances: [{ id: "p1", transport: "stdio", ...server }],
          load_balancer: { session_process: "per_session", max_sessions_per_instance: 2, warm_processes: 0 }
        },
        single: { instances: [{ id: "only", transport: "stdio", ...server }] },
        stateless: {
          instances: [
            { id: "a", transport: "stdio", ...server },
            { id: "b", transport: "http", endpoint: backend.url }
          ],
          load_balancer: { session_affinity: "none" }
        }
      }
    })
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => {})))
    await gateway?.stop()
    await Promise.all([backend?.stop(), legacy?.stop()])
    if (work !== undefined) fs.rmSync(work, { recursive: true, force: true })
  })

  if (sandboxed) {
    it("the stdio servers run in the sandbox (so that what follows proves it)", async () => {
      const client = await connect(`${gateway.url}/mcp/stdio`)
      await client.ping()
      const registry = (await api(`${gateway.url}/gateway/registry`)).body
      expect(registry.templates.stdio.instances[0].sandbox).toMatchObject({ network: "none", write: [work] })
      const started = children(gateway.process.pid!).map((pid) => fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim())
      expect(started.length).toBeGreaterThan(0)
      expect(started.every((comm) => comm === "bwrap")).toBe(true)
    })
  }

  for (const template of stdioOnly(["stdio", "http", "legacy"])) {
    it(`${template} backend: tools, resources, prompts, completion, logging, ping, termination`, async () => {
      const direct = await connect(backend.url)
      const client = await connect(`${gateway.url}/mcp/${template}`)
      expect(client.getServerVersion()?.name).toBe("mcp-servers/everything")
      expect(client.getServerCapabilities()?.tools).toBeDefined()

      const tools = await client.listTools()
      expect(tools.tools.map((t) => t.name)).toEqual((await direct.listTools()).tools.map((t) => t.name))

      const echo = await client.callTool({ name: "echo", arguments: { message: "through the gateway" } })
      expect(echo.content).toEqual([{ type: "text", text: "Echo: through the gateway" }])
      const sum = await client.callTool({ name: "get-sum", arguments: { a: 20, b: 22 } })
      expect(JSON.stringify(sum.content)).toContain("42")

      const resources = await client.listResources()
      expect(resources.resources.map((r) => r.uri)).toContain("demo://resource/static/document/architecture.md")
      const read = await client.readResource({ uri: "demo://resource/static/document/architecture.md" })
      expect(read.contents[0]?.uri).toBe("demo://resource/static/document/architecture.md")

      const prompts = await client.listPrompts()
      expect(prompts.prompts.map((p) => p.name)).toEqual(expect.arrayContaining(["simple-prompt", "args-prompt"]))
      const prompt = await client.getPrompt({ name: "args-prompt", arguments: { city: "Oslo" } })
      expect(JSON.stringify(prompt.messages)).toContain("Oslo")

      const completion = await client.complete({
        ref: { type: "ref/prompt", name: "completable-prompt" },
        argument: { name: "department", value: "Eng" }
      })
      expect(completion.completion.values).toEqual(["Engineering"])

      await client.setLoggingLevel("debug")
      expect(await client.ping()).toEqual({})

      // A JSON-RPC error of the server reaches the client as such.
      await expect(client.readResource({ uri: "demo://nope" })).rejects.toThrow(/not found/i)

      const transport = client.transport as StreamableHTTPClientTransport
      const sessionId = transport.sessionId!
      expect(sessionId).toMatch(/^s2\.[0-9a-f]{8}\.[A-Za-z0-9_-]{40,}$/)
      await transport.terminateSession()
      const after = await fetch(`${gateway.url}/mcp/${template}`, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream", "mcp-session-id": sessionId },
        body: JSON.stringify({ jsonrpc: "2.0", id: 9, method: "ping" })
      })
      expect(after.status).toBe(404)
    })
  }

  for (const template of stdioOnly(["stdio", "http", "legacy"])) {
    it(`${template} backend: progress notifications reach the client while a long tool runs`, async () => {
      const client = await connect(`${gateway.url}/mcp/${template}`)
      const progressAt: Array<number> = []
      const result = await client.callTool(
        { name: "trigger-long-running-operation", arguments: { duration: 2, steps: 4 } },
        undefined,
        { onprogress: () => void progressAt.push(Date.now()), timeout: 20_000 }
      )
      const doneAt = Date.now()
      expect(JSON.stringify(result.content)).toContain("completed")
      expect(progressAt.length).toBe(4)
      // Streamed as they happened, not all at the end.
      expect(doneAt - progressAt[0]!).toBeGreaterThan(900)
    })
  }

  for (const template of stdioOnly(["http", "legacy-own"])) {
    it(`${template} backend: the server's sampling request is answered by the client's own handler`, async () => {
      const client = new Client({ name: "sampler", version: "1.0.0" }, { capabilities: { sampling: {} } })
      const asked: Array<string> = []
      client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
        asked.push(JSON.stringify(request.params.messages))
        return { model: "test-model", role: "assistant", content: { type: "text", text: "sampled by the client" } }
      })
      await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp/${template}`)))
      clients.push(client)
      const result = await client.callTool({ name: "trigger-sampling-request", arguments: { prompt: "hello there" } })
      expect(asked).toHaveLength(1)
      expect(asked[0]).toContain("hello there")
      expect(JSON.stringify(result.content)).toContain("sampled by the client")
    })
  }

  for (const template of stdioOnly(["stdio", "http"])) {
    it(`${template} backend: an aborted call is cancelled and the session goes on`, async () => {
      const client = await connect(`${gateway.url}/mcp/${template}`)
      const controller = new AbortController()
      const started = Date.now()
      const call = client.callTool(
        { name: "trigger-long-running-operation", arguments: { duration: 10, steps: 10 } },
        undefined,
        { signal: controller.signal }
      )
      setTimeout(() => controller.abort("changed my mind"), 300)
      await expect(call).rejects.toThrow()
      expect(Date.now() - started).toBeLessThan(5000)
      const echo = await client.callTool({ name: "echo", arguments: { message: "still here" } })
      expect(echo.content).toEqual([{ type: "text", text: "Echo: still here" }])
    })
  }

  for (const template of stdioOnly(["stdio", "http"])) {
    it(`${template} backend: resource updates of a subscription arrive on the standing stream`, async () => {
      const client = await connect(`${gateway.url}/mcp/${template}`)
      const updates: Array<string> = []
      client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => void updates.push(n.params.uri))
      const uri = "demo://resource/static/document/architecture.md"
      await client.subscribeResource({ uri })
      await client.callTool({ name: "toggle-subscriber-updates", arguments: {} })
      await waitUntil(() => updates.length > 0, 10_000, "a resource update")
      expect(updates[0]).toBe(uri)
      await client.callTool({ name: "toggle-subscriber-updates", arguments: {} })
      await client.unsubscribeResource({ uri })
    })
  }

  it("the standing stream numbers its events and replays what a reconnecting client missed", async () => {
    const url = `${gateway.url}/mcp/single`
    const { headers, session } = await openRawSession(url)
    const call = (id: number, method: string, params: unknown) =>
      fetch(url, { method: "POST", headers: { ...headers, "mcp-session-id": session }, body: JSON.stringify({ jsonrpc: "2.0", id, method, params }) })
    const uri = "demo://resource/static/document/extension.md"
    await call(2, "resources/subscribe", { uri })
    // No stream is open: the updates wait in the session's buffer.
    await call(3, "tools/call", { name: "toggle-subscriber-updates", arguments: {} })
    await new Promise((r) => setTimeout(r, 300))
    const read = async (lastEventId?: string) => {
      const controller = new AbortController()
      const response = await fetch(url, {
        headers: { accept: "text/event-stream", "mcp-session-id": session, ...(lastEventId ? { "last-event-id": lastEventId } : {}) },
        signal: controller.signal
      })
      expect(response.status).toBe(200)
      const reader = response.body!.getReader()
      let text = ""
      while (!text.includes("resources/updated")) text += new TextDecoder().decode((await reader.read()).value)
      controller.abort()
      return text
    }
    const first = await read()
    const seq = Number(first.match(/id: 0-(\d+)\nevent: message\ndata: [^\n]*resources\/updated/)?.[1])
    expect(seq).toBeGreaterThan(0)
    // Reconnecting with the event before it as Last-Event-ID replays it.
    expect(await read(`0-${seq - 1}`)).toContain(`id: 0-${seq}\nevent: message\ndata: {"method":"notifications/resources/updated"`)
    await call(4, "tools/call", { name: "toggle-subscriber-updates", arguments: {} })
    await fetch(url, { method: "DELETE", headers: { "mcp-session-id": session } })
  })

  it(`session_affinity "none": each request of a session is balanced on its own`, async () => {
    const client = await connect(`${gateway.url}/mcp/stateless`)
    const before = (await api(`${gateway.url}/gateway/stats`)).body.templates.stateless.instances
    for (let i = 0; i < 6; i++) {
      const echo = await client.callTool({ name: "echo", arguments: { message: `n${i}` } })
      expect(echo.content).toEqual([{ type: "text", text: `Echo: n${i}` }])
    }
    const after = (await api(`${gateway.url}/gateway/stats`)).body.templates.stateless.instances
    expect(after.a.requests - before.a.requests).toBe(3)
    expect(after.b.requests - before.b.requests).toBe(3)
  })

  it(`session_process "per_session": each client session gets a process of its own, capped, that asks its client for sampling`, async () => {
    // Server processes are the gateway's children (a sandboxed one is three: bwrap, its init, the server).
    const serverProcesses = () => children(gateway.process.pid!)
    const base = serverProcesses().length
    const sampler = async () => {
      const client = new Client({ name: "sampler", version: "1.0.0" }, { capabilities: { sampling: {} } })
      client.setRequestHandler(CreateMessageRequestSchema, async () => ({
        model: "test-model",
        role: "assistant",
        content: { type: "text", text: "sampled by my own client" }
      }))
      await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp/own`)))
      clients.push(client)
      return client
    }
    const first = await sampler()
    expect(serverProcesses().length).toBe(base + 1)
    const result = await first.callTool({ name: "trigger-sampling-request", arguments: { prompt: "mine" } })
    expect(JSON.stringify(result.content)).toContain("sampled by my own client")

    const second = await sampler()
    expect(serverProcesses().length).toBe(base + 2)
    // The cap: a third session finds no room (both clients are still there, their streams open): 503.
    await expect(sampler()).rejects.toThrow(/max_sessions_per_instance/)

    // Ending a session stops its process and frees its place.
    await (second.transport as StreamableHTTPClientTransport).terminateSession()
    await waitUntil(() => serverProcesses().length === base + 1, 10_000, "the session's process to stop")
    const third = await sampler()
    expect((await third.callTool({ name: "echo", arguments: { message: "room again" } })).content).toEqual([
      { type: "text", text: "Echo: room again" }
    ])
  })

  notSandboxed("http backend: roots travel both ways (the server asks on the standing stream, the client says they changed)", async () => {
    const client = new Client({ name: "rooted", version: "1.0.0" }, { capabilities: { roots: { listChanged: true } } })
    let roots = [{ uri: "file:///first", name: "first" }]
    let asked = 0
    client.setRequestHandler(ListRootsRequestSchema, async () => {
      asked++
      return { roots }
    })
    await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp/http`)))
    clients.push(client)
    await waitUntil(() => asked >= 1, 10_000, "the server to ask for roots")
    roots = [{ uri: "file:///second", name: "second" }]
    await client.sendRootsListChanged()
    await waitUntil(() => asked >= 2, 10_000, "the server to ask again")
    const listed = await client.callTool({ name: "get-roots-list", arguments: {} })
    expect(JSON.stringify(listed.content)).toContain("file:///second")
  })

  it("a client that loses a request's stream resumes it with GET and Last-Event-ID, response included", async () => {
    const url = `${gateway.url}/mcp/single`
    const { headers, session } = await openRawSession(url)
    const controller = new AbortController()
    const streamed = await fetch(url, {
      method: "POST",
      headers: { ...headers, "mcp-session-id": session },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 7,
        method: "tools/call",
        params: { name: "trigger-long-running-operation", arguments: { duration: 1, steps: 4 }, _meta: { progressToken: "p" } }
      }),
      signal: controller.signal
    })
    expect(streamed.headers.get("content-type")).toContain("text/event-stream")
    const reader = streamed.body!.getReader()
    let text = ""
    while (!/id: \S+\n/.test(text)) text += new TextDecoder().decode((await reader.read()).value)
    // The stream opens with a priming event: an id, the reconnection delay, no data.
    expect(text).toMatch(/^id: \d+-0\nretry: 1000\ndata:\n\n/)
    const lastId = text.match(/id: (\S+)\n/)![1]!
    // The connection drops after the first event; the request goes on.
    controller.abort()
    const resumed = await fetch(url, { headers: { accept: "text/event-stream", "mcp-session-id": session, "last-event-id": lastId } })
    expect(resumed.status).toBe(200)
    const rest = await resumed.text()
    expect(rest).not.toContain(`id: ${lastId}\n`)
    expect(rest).toContain(`"progressToken":"p"`)
    expect(rest).toMatch(/"id":7,"result":\{"content":\[\{"type":"text","text":"Long running operation completed/)
    await fetch(url, { method: "DELETE", headers: { "mcp-session-id": session } })
  })

  it("two clients sharing one stdio instance each get only their own progress", async () => {
    const [a, b] = await Promise.all([connect(`${gateway.url}/mcp/single`), connect(`${gateway.url}/mcp/single`)])
    const seen = { a: [] as Array<number>, b: [] as Array<number> }
    // Both clients use the same progress token (the SDK numbers them from 0): the gateway keeps them apart.
    await Promise.all([
      a.callTool({ name: "trigger-long-running-operation", arguments: { duration: 1, steps: 2 } }, undefined, {
        onprogress: (p) => void seen.a.push(p.progress)
      }),
      b.callTool({ name: "trigger-long-running-operation", arguments: { duration: 1, steps: 5 } }, undefined, {
        onprogress: (p) => void seen.b.push(p.progress)
      })
    ])
    expect(seen.a).toEqual([1, 2])
    expect(seen.b).toEqual([1, 2, 3, 4, 5])
  })

  it("two clients sharing one stdio instance each get only their own answers", async () => {
    const [a, b] = await Promise.all([connect(`${gateway.url}/mcp/single`), connect(`${gateway.url}/mcp/single`)])
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).callTool({ name: "echo", arguments: { message: `${i % 2 === 0 ? "a" : "b"}${i}` } }))
    )
    results.forEach((r, i) => expect(r.content).toEqual([{ type: "text", text: `Echo: ${i % 2 === 0 ? "a" : "b"}${i}` }]))
  })

  it("when the pinned instance goes away, the session answers 404 and a new one lands on another instance", async () => {
    const client = await connect(`${gateway.url}/mcp/stdio`)
    const before = (await api(`${gateway.url}/gateway/stats`)).body.templates.stdio.instances
    for (let i = 0; i < 3; i++) await client.callTool({ name: "echo", arguments: { message: "pin" } })
    const after = (await api(`${gateway.url}/gateway/stats`)).body.templates.stdio.instances
    const pinned = ["s1", "s2"].find((id) => after[id].requests - before[id].requests === 3)!
    expect(pinned).toBeDefined()

    expect((await api(`${gateway.url}/gateway/deregister/stdio/${pinned}`, { method: "DELETE" })).status).toBe(200)
    await expect(client.callTool({ name: "echo", arguments: { message: "gone" } })).rejects.toThrow(/404|not found/i)

    const again = await connect(`${gateway.url}/mcp/stdio`)
    const echo = await again.callTool({ name: "echo", arguments: { message: "back" } })
    expect(echo.content).toEqual([{ type: "text", text: "Echo: back" }])
    const other = ["s1", "s2"].find((id) => id !== pinned)!
    const final = (await api(`${gateway.url}/gateway/stats`)).body.templates.stdio.instances
    expect(final[other].requests).toBeGreaterThan(after[other].requests)
  })

  it("when the pinned instance's process is killed, the next request answers 404 and a new session lands on the other instance", async () => {
    const client = await connect(`${gateway.url}/mcp/victims`)
    const before = (await api(`${gateway.url}/gateway/stats`)).body.templates.victims.instances
    for (let i = 0; i < 2; i++) await client.callTool({ name: "echo", arguments: { message: "pin" } })
    const after = (await api(`${gateway.url}/gateway/stats`)).body.templates.victims.instances
    const pinned = ["v1", "v2"].find((id) => after[id].requests - before[id].requests === 2)!
    // The server itself: the last of its processes (in a sandbox, bwrap and its init carry its environment too).
    const pid = descendants(gateway.process.pid!).filter((p) => {
      try {
        return fs.readFileSync(`/proc/${p}/environ`, "utf8").split("\0").includes(`GATEWAY_TEST_INSTANCE=${pinned}`)
      } catch {
        return false
      }
    }).at(-1)!
    expect(pid).toBeDefined()
    process.kill(pid, "SIGKILL")
    await waitUntil(() => !isAlive(pid), 5000, "the process to die")
    await new Promise((r) => setTimeout(r, 200))

    await expect(client.callTool({ name: "echo", arguments: { message: "anyone?" } })).rejects.toThrow(/404|not found/i)
    const again = await connect(`${gateway.url}/mcp/victims`)
    await again.callTool({ name: "echo", arguments: { message: "elsewhere" } })
    const final = (await api(`${gateway.url}/gateway/stats`)).body.templates.victims.instances
    const other = pinned === "v1" ? "v2" : "v1"
    expect(final[other].requests).toBeGreaterThan(after[other].requests)
    expect(final[pinned].healthy).toBe(false)
  })

  notSandboxed("answers protocol mistakes with the status the spec gives", async () => {
    const url = `${gateway.url}/mcp/http`
    const init = { jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "1" } } }
    const post = (body: unknown, headers: Record<string, string> = {}) =>
      fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream", ...headers },
        body: typeof body === "string" ? body : JSON.stringify(body)
      })
    expect((await post(init, { accept: "application/json" })).status).toBe(406)
    expect((await post(init, { "mcp-protocol-version": "1999-01-01" })).status).toBe(400)
    expect((await post(init, { origin: "http://evil.example" })).status).toBe(403)
    const parseError = await post("{oops")
    expect(parseError.status).toBe(400)
    expect(((await parseError.json()) as any).error.code).toBe(-32700)
    expect((await post({ jsonrpc: "2.0", id: 2, method: "tools/list" })).status).toBe(400)
    expect((await post({ jsonrpc: "2.0", id: 2, method: "tools/list" }, { "mcp-session-id": "nope" })).status).toBe(404)
    expect((await fetch(url, { headers: { accept: "text/event-stream" } })).status).toBe(400)
    expect((await fetch(url, { method: "PUT" })).status).toBe(405)
    expect((await fetch(`${gateway.url}/mcp/unknown`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
      body: JSON.stringify(init)
    })).status).toBe(404)

    // gateway.max_body_bytes (16 KiB here) bounds the MCP endpoint and the REST face alike.
    const big = { ...init, params: { ...init.params, padding: "x".repeat(20_000) } }
    expect((await post(big)).status).toBe(413)
    expect((await api(`${gateway.url}/mcp/http/tools/call`, { json: { name: "echo", arguments: { message: "x".repeat(20_000) } } })).status).toBe(413)

    const opened = await post(init, { origin: "http://localhost:6274" })
    expect(opened.status).toBe(200)
    const session = opened.headers.get("mcp-session-id")!
    expect(((await opened.json()) as any).result.serverInfo.name).toBe("mcp-servers/everything")
    const notified = await post({ jsonrpc: "2.0", method: "notifications/initialized" }, { "mcp-session-id": session })
    expect(notified.status).toBe(202)
    const deleted = await fetch(url, { method: "DELETE", headers: { "mcp-session-id": session } })
    expect(deleted.status).toBe(200)
  })
}

describe.each<Variant>([
  { name: "MCP endpoint end to end", sandboxed: false },
  { name: "MCP endpoint end to end, stdio servers in the strict sandbox", sandboxed: true }
])("$name", endpointSuite)
