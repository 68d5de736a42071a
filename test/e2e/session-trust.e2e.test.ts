import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import * as jose from "jose"
import { randomBytes } from "node:crypto"
import * as http from "node:http"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { hashApiKey, newApiKey } from "../../src/domain/apiKey.js"
import { startRedis } from "../support/redisServer.js"
import {
  api,
  mcpPostHeaders,
  type RunningGateway,
  type RunningServer,
  startEverythingHttp,
  startFixtureServer,
  startGateway,
  tempDir,
  waitUntil,
  writeJson
} from "../support/processes.js"

/** One JSON-RPC POST on a session; the answer's JSON-RPC message (the gateway answers a request as JSON or one SSE event). */
const rpc = async (url: string, sessionId: string | undefined, method: string, params: unknown, headers: Record<string, string> = {}) => {
  const response = await fetch(url, {
    method: "POST",
    headers: { ...mcpPostHeaders, "mcp-protocol-version": "2025-11-25", ...(sessionId === undefined ? {} : { "mcp-session-id": sessionId }), ...headers },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params })
  })
  const text = await response.text()
  const data = text.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).filter((l) => l !== "").at(-1)
  let message: any
  try {
    message = JSON.parse(data ?? text)
  } catch {
    message = undefined
  }
  return { status: response.status, headers: response.headers, message }
}

const initialize = (url: string, headers: Record<string, string> = {}, params: Record<string, unknown> = {}) =>
  rpc(url, undefined, "initialize", { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "e2e", version: "1" }, ...params }, headers)

const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

describe("sessions are authorized at every request, and their ids stay small", () => {
  let gateway: RunningGateway
  let echo: RunningServer
  const dir = tempDir("gw-trust-")
  const configFile = path.join(dir, "gateway.json")
  const issuer = "https://auth.example.com/"
  const audience = "mcp-gateway-trust"
  const secret = "an HS256 secret of at least thirty-two bytes!"
  const key = newApiKey()
  const config = (templates: ReadonlyArray<string>) => ({
    auth: {
      api_keys: [{ id: "ops", hash: hashApiKey(key), scopes: ["mcp:call"], templates }],
      jwt: { issuer, audience, secret }
    },
    templates: {
      a: { instances: [{ id: "a1", transport: "http", endpoint: echo.url }] },
      b: { instances: [{ id: "b1", transport: "http", endpoint: echo.url }] }
    }
  })
  const token = (claims: jose.JWTPayload) =>
    new jose.SignJWT({ iss: issuer, aud: audience, sub: "alice", exp: Math.floor(Date.now() / 1000) + 300, ...claims })
      .setProtectedHeader({ alg: "HS256" })
      .sign(new TextEncoder().encode(secret))

  beforeAll(async () => {
    echo = await startFixtureServer("header-echo-server.mjs")
    writeJson(configFile, config(["a", "b"]))
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await gateway?.stop()
    await echo?.stop()
  })

  it("a key narrowed by a live config edit loses the template on its open /mcp session at the next request", async () => {
    const client = new Client({ name: "narrowed", version: "1.0.0" })
    await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp`), { requestInit: { headers: bearer(key) } }))
    try {
      const names = async () => (await client.listTools()).tools.map((t) => t.name).sort()
      expect(await names()).toEqual(["a__count", "a__headers", "b__count", "b__headers"])
      expect((await client.callTool({ name: "a__count", arguments: {} })).isError).toBeFalsy()
      writeJson(configFile, config(["b"]))
      // Applied at the next request after the reload (the file is watched, and read again every 5 s).
      await waitUntil(async () => (await names()).every((n) => n.startsWith("b__")), 15_000, "the narrowed list")
      await expect(client.callTool({ name: "a__count", arguments: {} })).rejects.toThrow(/not served to this credential|Unknown tool/)
      expect((await client.callTool({ name: "b__count", arguments: {} })).isError).toBeFalsy()
      // /mcp/a itself is refused to the key at once too.
      expect((await initialize(`${gateway.url}/mcp/a`, bearer(key))).status).toBe(403)
      // A key removed from the config: its open session's next request is a 401.
      const id = (client.transport as StreamableHTTPClientTransport).sessionId!
      writeJson(configFile, { ...config(["b"]), auth: { ...config(["b"]).auth, api_keys: [] } })
      await waitUntil(async () => (await rpc(`${gateway.url}/mcp`, id, "tools/list", {}, bearer(key))).status === 401, 15_000, "the removed key refused")
    } finally {
      await client.close().catch(() => undefined)
      writeJson(configFile, config(["a", "b"]))
      await waitUntil(async () => (await initialize(`${gateway.url}/mcp/a`, bearer(key))).status === 200, 15_000, "the key back")
    }
  })

  it("a narrower token of the same subject cannot use a broader token's session; another subject neither", async () => {
    const broad = await token({ scope: "mcp:call" })
    const opened = await initialize(`${gateway.url}/mcp`, bearer(broad))
    expect(opened.status).toBe(200)
    const id = opened.headers.get("mcp-session-id")!
    expect((await rpc(`${gateway.url}/mcp`, id, "tools/list", {}, bearer(broad))).status).toBe(200)
    // A refreshed token of the same grant goes on with it.
    expect((await rpc(`${gateway.url}/mcp`, id, "tools/list", {}, bearer(await token({ scope: "mcp:call", jti: "refreshed" })))).status).toBe(200)
    expect((await rpc(`${gateway.url}/mcp`, id, "tools/list", {}, bearer(await token({ scope: "mcp:call:b" })))).status).toBe(404)
    expect((await rpc(`${gateway.url}/mcp`, id, "tools/list", {}, bearer(await token({ scope: "mcp:call", sub: "mallory" })))).status).toBe(404)
    // An API key whose id looks like the token's owner is no such owner (ids jwt:… are refused in config).
    expect((await rpc(`${gateway.url}/mcp`, id, "tools/list", {}, bearer(key))).status).toBe(404)
  })

  it("a JWT without sub or without exp is refused with 401", async () => {
    const noSubject = await token({ scope: "mcp:call", sub: undefined })
    const noExpiry = await token({ scope: "mcp:call", exp: undefined })
    for (const [what, t] of [["no sub", noSubject], ["no exp", noExpiry]] as const) {
      const refused = await initialize(`${gateway.url}/mcp/a`, bearer(t))
      expect(refused.status, what).toBe(401)
      expect(refused.message.error.message, what).toMatch(what === "no sub" ? /no subject/ : /no expiry/)
    }
  })

  it("session ids stay under 512 bytes whatever the client sends in initialize", async () => {
    const huge = "x".repeat(200_000)
    const capabilities: Record<string, unknown> = { sampling: {}, roots: { listChanged: true } }
    for (let i = 0; i < 200; i++) capabilities[`experimental-${i}-${huge.slice(0, 1000)}`] = { [huge.slice(0, 1000)]: { deep: huge.slice(0, 5000) } }
    const params = { capabilities, clientInfo: { name: huge, version: huge } }
    for (const endpoint of ["/mcp/a", "/mcp"]) {
      const opened = await initialize(`${gateway.url}${endpoint}`, bearer(key), params)
      expect(opened.status, endpoint).toBe(200)
      const id = opened.headers.get("mcp-session-id")!
      expect(id.length, endpoint).toBeLessThan(512)
      expect((await rpc(`${gateway.url}${endpoint}`, id, "tools/list", {}, bearer(key))).status, endpoint).toBe(200)
      expect((await fetch(`${gateway.url}${endpoint}`, { method: "DELETE", headers: { "mcp-session-id": id, ...bearer(key) } })).status).toBe(200)
    }
  })
})

/**
 * A Streamable HTTP backend behind a proxy that records every request it forwards (method,
 * session id, body): what reached the backend, DELETEs included.
 */
const startRecordingProxy = async (target: string) => {
  const seen: Array<{ method: string; session: string | undefined; body: string }> = []
  const to = new URL(target)
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const body = Buffer.concat(chunks)
      const session = req.headers["mcp-session-id"]
      seen.push({ method: req.method ?? "", session: typeof session === "string" ? session : undefined, body: body.toString("utf8") })
      const upstream = http.request({ host: to.hostname, port: to.port, method: req.method, path: req.url, headers: { ...req.headers, host: to.host } }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.pipe(res)
      })
      upstream.on("error", () => res.destroy())
      res.on("close", () => upstream.destroy())
      upstream.end(body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}${to.pathname}`,
    seen,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    })
  }
}

describe("ending is final on every replica; a rolling restart keeps sessions", () => {
  let redis: Awaited<ReturnType<typeof startRedis>>
  let backend: RunningServer
  let recorder: Awaited<ReturnType<typeof startRecordingProxy>>
  let a: RunningGateway
  let b: RunningGateway
  const dir = tempDir("gw-ending-")
  const configFile = path.join(dir, "gateway.json")
  const env = { MCP_GATEWAY_SESSION_KEYS: randomBytes(32).toString("base64") }

  beforeAll(async () => {
    redis = await startRedis()
    backend = await startEverythingHttp()
    recorder = await startRecordingProxy(backend.url)
    writeJson(configFile, {
      registry: { store: "redis", url: redis.url, prefix: "ending:" },
      templates: {
        everything: { instances: [{ id: "e1", transport: "http", endpoint: recorder.url }] },
        brief: { instances: [{ id: "b1", transport: "http", endpoint: recorder.url }], load_balancer: { session_idle_timeout: 1 } }
      }
    })
    ;[a, b] = await Promise.all([startGateway({ configFile, env }), startGateway({ configFile, env })])
  })

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()])
    await recorder?.close()
    await Promise.all([backend?.stop(), redis?.stop()])
  })

  const endedIds: Array<string> = []
  const echo = (gateway: RunningGateway, template: string, id: string, message: string) =>
    rpc(`${gateway.url}/mcp/${template}`, id, "tools/call", { name: "echo", arguments: { message } })

  it("DELETE on A is a 404 on A and B within a second, whether B held the session or not", async () => {
    for (const usedOnB of [true, false]) {
      const opened = await initialize(`${a.url}/mcp/everything`)
      const id = opened.headers.get("mcp-session-id")!
      expect((await echo(a, "everything", id, "on A")).status).toBe(200)
      if (usedOnB) expect((await echo(b, "everything", id, "on B")).status).toBe(200)
      expect((await fetch(`${a.url}/mcp/everything`, { method: "DELETE", headers: { "mcp-session-id": id } })).status).toBe(200)
      endedIds.push(id)
      const ended = Date.now()
      await waitUntil(async () => (await echo(b, "everything", id, "after")).status === 404, 1_000, `B refuses the ended id (used on B: ${usedOnB})`)
      expect(Date.now() - ended).toBeLessThan(1_000)
      expect((await echo(a, "everything", id, "after")).status).toBe(404)
      // Still refused a while later: nothing takes it over again.
      await new Promise((r) => setTimeout(r, 300))
      expect((await echo(b, "everything", id, "later")).status).toBe(404)
    }
  })

  it("a replica that starts later knows the ids ended before it (read from Redis), and serves the live ones", async () => {
    const c = await startGateway({ configFile, env })
    try {
      for (const id of endedIds) expect((await echo(c, "everything", id, "on C")).status).toBe(404)
      const live = (await initialize(`${a.url}/mcp/everything`)).headers.get("mcp-session-id")!
      expect((await echo(c, "everything", live, "on C")).status).toBe(200)
      expect((await fetch(`${c.url}/mcp/everything`, { method: "DELETE", headers: { "mcp-session-id": live } })).status).toBe(200)
    } finally {
      await c.stop()
    }
  })

  it("an id ended by the idle timeout is a 404 on both replicas; a copy of a session in use elsewhere does not idle out", async () => {
    const opened = await initialize(`${a.url}/mcp/brief`)
    const id = opened.headers.get("mcp-session-id")!
    // B takes it over once, then its requests come to A only (a balancer that moved it): B's copy
    // hears that A serves it, and does not end it while it is in use.
    expect((await echo(b, "brief", id, "once on B")).status).toBe(200)
    const busyUntil = Date.now() + 12_000
    while (Date.now() < busyUntil) {
      expect((await echo(a, "brief", id, "in use on A")).status).toBe(200)
      await new Promise((r) => setTimeout(r, 200))
    }
    // Idle after 1 s; idle sessions are ended every 10 s. (Watched through the stats: a request
    // on the session would keep it alive.)
    await waitUntil(async () => (await api(`${a.url}/gateway/stats`)).body.sessions === 0, 30_000, "A ends the idle session")
    await waitUntil(async () => (await api(`${b.url}/gateway/stats`)).body.sessions === 0, 5_000, "B's copy goes too")
    expect((await echo(b, "brief", id, "idle?")).status).toBe(404)
    expect((await echo(a, "brief", id, "idle?")).status).toBe(404)
  })

  it("SIGTERM to B mid-session: the session goes on through A, no DELETE of it reaches the backend, the instance is not ejected", async () => {
    const opened = await initialize(`${b.url}/mcp/everything`)
    const id = opened.headers.get("mcp-session-id")!
    expect((await echo(b, "everything", id, "before the restart")).status).toBe(200)
    const backendSession = recorder.seen.find((r) => r.body.includes("before the restart"))?.session
    expect(backendSession).toBeDefined()
    await b.stop()
    const after = await echo(a, "everything", id, "after the restart")
    expect(after.status).toBe(200)
    expect(JSON.stringify(after.message)).toContain("after the restart")
    expect(recorder.seen.filter((r) => r.method === "DELETE" && r.session === backendSession)).toEqual([])
    for (let i = 0; i < 5; i++) expect((await echo(a, "everything", id, `again ${i}`)).status).toBe(200)
    const stats = await api(`${a.url}/gateway/stats`)
    const instance = stats.body.templates.everything.instances.e1
    expect(instance.ejected).toBe(false)
    expect(instance.errors).toBe(0)
  })
})
