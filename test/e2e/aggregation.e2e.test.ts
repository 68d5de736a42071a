import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from "@modelcontextprotocol/client"
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import { CreateMessageRequestSchema, ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  api,
  everythingServer,
  filesystemServer,
  freePort,
  initializeRaw,
  mcpPostHeaders,
  type RunningGateway,
  type RunningServer,
  startFixtureServer,
  startGateway,
  tempDir,
  waitUntil,
  writeJson
} from "../support/processes.js"

type Tool = { readonly name: string }

/** Every page of a list, following the gateway's cursors. */
const allTools = async (client: Client) => {
  const tools: Array<Tool> = []
  let cursor: string | undefined
  let pages = 0
  do {
    const page = await client.listTools(cursor === undefined ? {} : { cursor })
    tools.push(...page.tools)
    cursor = page.nextCursor
    pages++
  } while (cursor !== undefined)
  return { tools, pages }
}

const text = (result: unknown) => JSON.stringify((result as { content?: unknown }).content)

/**
 * One endpoint for every server: the SDK client on `/mcp` and on virtual servers, in front of
 * server-everything and server-filesystem over stdio, a server of many tools over HTTP (with a
 * cache), and a template whose only instance is dead.
 */
describe("aggregation: /mcp and virtual servers", () => {
  let listing: RunningServer
  let gateway: RunningGateway
  const closers: Array<() => Promise<unknown>> = []
  const dir = tempDir("gw-aggregate-")
  const files = path.join(dir, "files")

  const connect = async (route: string, capabilities: Record<string, unknown> = {}) => {
    const client = new Client({ name: "aggregate-e2e", version: "1.0.0" }, { capabilities })
    await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}${route}`)))
    closers.push(() => client.close())
    return client
  }

  beforeAll(async () => {
    fs.mkdirSync(files)
    fs.writeFileSync(path.join(files, "hello.txt"), "hello from the filesystem")
    listing = await startFixtureServer("listing-server.mjs", { TOOLS: "3" })
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, {
      gateway: { max_sessions_per_client: 1000 },
      templates: {
        everything: { instances: [{ id: "e1", transport: "stdio", command: ["node", everythingServer, "stdio"] }] },
        filesystem: {
          instances: [{ id: "f1", transport: "stdio", command: ["node", filesystemServer, files] }],
          transforms: [{ transform: "rename_tool", options: { from: "list_allowed_directories", to: "roots" } }]
        },
        // (It adds a tool at run time, which tool integrity's default would leave out until approved.)
        listing: { instances: [{ id: "l1", transport: "http", endpoint: listing.url }], cache: { ttl_seconds: 60 }, tool_integrity: { on_change: "allow" } },
        dead: {
          instances: [{ id: "d1", transport: "http", endpoint: `http://127.0.0.1:${await freePort()}/mcp` }],
          load_balancer: { health_check_interval: 60 }
        }
      },
      virtual_servers: {
        dev: { templates: ["everything", "filesystem"], tools: { deny: ["filesystem__write_*", "filesystem__edit_file", "everything__get-env"] } },
        readonly: { templates: ["filesystem"], tools: { allow: ["read_*", "roots"] } }
      }
    })
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await Promise.all(closers.map((close) => close().catch(() => {})))
    await gateway?.stop()
    await listing?.stop()
  })

  it("the SDK client sees every template's tools together, prefixed; calls, prompts, resources, completion, progress and sampling reach the right server", async () => {
    const direct = async (template: string) => (await allTools(await connect(`/mcp/${template}`, { sampling: {} }))).tools.map((t) => `${template}__${t.name}`)
    const expected = [...await direct("everything"), ...await direct("filesystem"), ...await direct("listing")].sort()

    const client = await connect("/mcp", { sampling: {} })
    expect(client.getServerVersion()?.name).toBe("mcp-gateway")
    const listed = await client.listTools()
    expect(listed.tools.map((t) => t.name).sort()).toEqual(expected)
    expect(expected).toContain("filesystem__roots")
    expect(expected).toContain("everything__trigger-sampling-request")
    // The dead template is left out, and said to be.
    expect(listed._meta?.["mcp-gateway/unavailable"]).toEqual([{ template: "dead", error: expect.stringContaining("dead") }])

    expect(text(await client.callTool({ name: "everything__echo", arguments: { message: "one URL" } }))).toContain("Echo: one URL")
    expect(text(await client.callTool({ name: "filesystem__roots", arguments: {} }))).toContain(files)
    expect(text(await client.callTool({ name: "filesystem__read_text_file", arguments: { path: path.join(files, "hello.txt") } }))).toContain("hello from the filesystem")
    expect(text(await client.callTool({ name: "listing__tool-1", arguments: { x: 1 } }))).toContain(`tool-1: {\\"x\\":1}`)
    const unknown = await client.callTool({ name: "nobody__echo", arguments: {} }).catch((e: Error) => e)
    expect(String(unknown)).toContain("Unknown tool: nobody__echo")

    const listedPrompts = await client.listPrompts()
    // server-filesystem offers no prompts: it is not asked, and not missing.
    expect(JSON.stringify(listedPrompts._meta ?? {})).not.toContain("filesystem")
    const prompts = listedPrompts.prompts.map((p) => p.name)
    expect(prompts).toContain("everything__simple-prompt")
    expect((await client.getPrompt({ name: "everything__args-prompt", arguments: { city: "Paris" } })).messages.length).toBeGreaterThan(0)
    const completion = await client.complete({ ref: { type: "ref/prompt", name: "everything__completable-prompt" }, argument: { name: "department", value: "S" } })
    expect(completion.completion.values).toEqual(["Sales", "Support"])
    const resources = (await client.listResources()).resources
    expect(resources.some((r) => r.uri === "demo://resource/static/document/architecture.md")).toBe(true)
    expect((await client.readResource({ uri: "demo://resource/static/document/architecture.md" })).contents[0]?.uri).toBe("demo://resource/static/document/architecture.md")

    const progress: Array<number> = []
    const long = await client.callTool(
      { name: "everything__trigger-long-running-operation", arguments: { duration: 1, steps: 3 } },
      undefined,
      { onprogress: (p) => void progress.push(p.progress) }
    )
    expect(text(long)).toContain("completed")
    expect(progress).toEqual([1, 2, 3])

    client.setRequestHandler(CreateMessageRequestSchema, async (request) => ({
      role: "assistant",
      content: { type: "text", text: `sampled: ${JSON.stringify(request.params.messages[0]?.content)}` },
      model: "test-model"
    }))
    expect(text(await client.callTool({ name: "everything__trigger-sampling-request", arguments: { prompt: "aggregated" } }))).toContain("sampled")
  })

  it("a virtual server serves its templates only; a denied tool is neither listed nor called; one template needs no prefix", async () => {
    const dev = await connect("/mcp/v/dev")
    const names = (await allTools(dev)).tools.map((t) => t.name)
    expect(names.some((n) => n.startsWith("listing__"))).toBe(false)
    expect(names).toContain("filesystem__read_text_file")
    expect(names).not.toContain("filesystem__write_file")
    expect(names).not.toContain("everything__get-env")
    const denied = await dev.callTool({ name: "filesystem__write_file", arguments: { path: path.join(files, "x.txt"), content: "no" } }).catch((e: Error) => e)
    expect(String(denied)).toContain("Unknown tool: filesystem__write_file")
    expect(fs.existsSync(path.join(files, "x.txt"))).toBe(false)

    const readonly = await connect("/mcp/v/readonly")
    const only = (await allTools(readonly)).tools.map((t) => t.name).sort()
    expect(only).toEqual(["read_file", "read_media_file", "read_multiple_files", "read_text_file", "roots"])
    expect(text(await readonly.callTool({ name: "roots", arguments: {} }))).toContain(files)

    const nowhere = await initializeRaw(`${gateway.url}/mcp/v/nowhere`)
    expect(nowhere.status).toBe(404)
  })

  it("the cache serves a second list without a backend request; the backend's list_changed refreshes the merged list within a second", async () => {
    const client = await connect("/mcp")
    const lists = async () => Number(JSON.parse(text(await client.callTool({ name: "listing__lists", arguments: {} })))[0].text)
    await client.listTools()
    const before = await lists()
    await client.listTools()
    expect(await lists()).toBe(before)

    let changed = 0
    client.setNotificationHandler(ToolListChangedNotificationSchema, async () => void changed++)
    const started = Date.now()
    await client.callTool({ name: "listing__add-tool", arguments: {} })
    await waitUntil(() => changed > 0, 1_000, "tools/list_changed within a second")
    expect(Date.now() - started).toBeLessThan(1_000)
    const names = (await client.listTools()).tools.map((t) => t.name)
    expect(names).toContain("listing__tool-extra-0")
    expect(await lists()).toBe(before + 1)

    const stats = (await api(`${gateway.url}/gateway/stats`)).body
    expect(stats.cache.listing.hits).toBeGreaterThan(0)
    const metrics = await (await fetch(`${gateway.url}/metrics`)).text()
    expect(metrics).toMatch(/mcp_gateway_cache_requests_total\{template="listing",method="tools\/list",result="hit"\} [1-9]/)
  })

  it("a modern (2026-07-28) client gets the same aggregate: discover, prefixed tools, calls, input_required for what a server asks, listen", async () => {
    const client = new ModernClient({ name: "modern-aggregate", version: "1.0.0" }, { versionNegotiation: { mode: "auto" }, capabilities: { sampling: {} } })
    client.setRequestHandler("sampling/createMessage", async () => ({ role: "assistant", content: { type: "text", text: "sampled by a modern client" }, model: "m", stopReason: "endTurn" }))
    await client.connect(new ModernTransport(new URL(`${gateway.url}/mcp`)))
    closers.push(() => client.close())
    expect(client.getProtocolEra()).toBe("modern")
    const names = (await client.listTools()).tools.map((t: Tool) => t.name)
    expect(names).toContain("everything__echo")
    expect(names).toContain("filesystem__roots")
    expect(text(await client.callTool({ name: "everything__echo", arguments: { message: "modern" } }))).toContain("Echo: modern")
    expect(text(await client.callTool({ name: "everything__trigger-sampling-request", arguments: { prompt: "p" } }))).toContain("sampled by a modern client")

    let changed = 0
    client.setNotificationHandler("notifications/tools/list_changed", () => void changed++)
    const subscription = await client.listen({ toolsListChanged: true })
    expect(subscription.honoredFilter).toMatchObject({ toolsListChanged: true })
    await client.callTool({ name: "listing__add-tool", arguments: {} })
    await waitUntil(() => changed > 0, 5_000, "a list change on the listen stream")
    await subscription.close()
  })

  it("the same caller's sessions end with DELETE, member sessions and all", async () => {
    const opened = await initializeRaw(`${gateway.url}/mcp`)
    const session = opened.headers.get("mcp-session-id")!
    await fetch(`${gateway.url}/mcp`, { method: "POST", headers: { ...mcpPostHeaders, "mcp-session-id": session }, body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }) })
    const before = (await api(`${gateway.url}/gateway/stats`)).body.sessions
    const deleted = await fetch(`${gateway.url}/mcp`, { method: "DELETE", headers: { "mcp-session-id": session } })
    expect(deleted.status).toBe(200)
    expect((await api(`${gateway.url}/gateway/stats`)).body.sessions).toBeLessThan(before)
    const after = await fetch(`${gateway.url}/mcp`, { method: "POST", headers: { ...mcpPostHeaders, "mcp-session-id": session }, body: JSON.stringify({ jsonrpc: "2.0", id: 3, method: "tools/list" }) })
    expect(after.status).toBe(404)
  })
})

describe("aggregation: pagination over a thousand merged tools", () => {
  let a: RunningServer
  let b: RunningServer
  let gateway: RunningGateway

  beforeAll(async () => {
    // 600 + 398 tools and two more each (add-tool, lists): 1,002 in all, in the servers' own pages of 50 and 100.
    ;[a, b] = await Promise.all([
      startFixtureServer("listing-server.mjs", { TOOLS: "600", PAGE: "50", PREFIX: "a" }),
      startFixtureServer("listing-server.mjs", { TOOLS: "398", PAGE: "100", PREFIX: "b" })
    ])
    const configFile = path.join(tempDir("gw-pages-"), "gateway.json")
    writeJson(configFile, {
      templates: {
        big: { instances: [{ id: "a1", transport: "http", endpoint: a.url }] },
        bigger: { instances: [{ id: "b1", transport: "http", endpoint: b.url }] }
      },
      aggregation: { page_size: 100 }
    })
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all([a?.stop(), b?.stop()])
  })

  it("every tool once, in pages of the gateway's own cursors; a cursor it did not give is refused", async () => {
    const client = new Client({ name: "pager", version: "1.0.0" })
    await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp`)))
    try {
      const { pages, tools } = await allTools(client)
      expect(tools).toHaveLength(1002)
      expect(pages).toBe(11)
      expect(new Set(tools.map((t) => t.name)).size).toBe(1002)
      expect(tools[0]!.name).toBe("big__a-0")
      expect(tools.at(-1)!.name).toBe("bigger__lists")
      expect(text(await client.callTool({ name: "bigger__b-397", arguments: {} }))).toContain("b-397")
      const forged = await client.listTools({ cursor: "50" }).catch((e: Error) => e)
      expect(String(forged)).toContain("unknown or expired cursor")
    } finally {
      await client.close()
    }
  })
})

describe("aggregation: logs never reach stdout", () => {
  it("a gateway that logs a name collision of its aggregate writes it to stderr; its stdout stays empty", async () => {
    const configFile = path.join(tempDir("gw-collide-"), "gateway.json")
    // Two templates of one prefix: their names can meet, which the aggregate logs as an error at start.
    writeJson(configFile, {
      templates: {
        one: { prefix: "x", instances: [{ id: "o1", transport: "http", endpoint: "http://127.0.0.1:9/mcp" }] },
        two: { prefix: "x", instances: [{ id: "t1", transport: "http", endpoint: "http://127.0.0.1:9/mcp" }] }
      }
    })
    const gateway = await startGateway({ configFile })
    try {
      await waitUntil(() => gateway.stderr().includes("can collide"), 20_000, "the collision logged")
      expect(gateway.stderr()).toMatch(/level=ERROR .*aggregate \/mcp: the names of templates .*one.* and .*two.* can collide/)
    } finally {
      await gateway.stop()
    }
    expect(gateway.stdout()).toBe("")
  }, 60_000)
})
