import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import * as jose from "jose"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { hashApiKey, newApiKey } from "../../src/domain/apiKey.js"
import {
  api,
  everythingServer,
  initializeRaw,
  mcpPostHeaders,
  repoRoot,
  type RunningGateway,
  type RunningServer,
  runGateway,
  startFixtureServer,
  startGateway,
  tempDir,
  waitUntil,
  writeJson
} from "../support/processes.js"

const misbehaving = path.join(repoRoot, "test/fixtures/misbehaving-server.mjs")

/** Secrets that must never appear in a response or a log line. */
const SECRETS = ["hunter2", "tok-in-url", "argv-secret-123", "backend-secret-xyz"]

const keys = { admin: newApiKey(), echoOnly: newApiKey(), reader: newApiKey(), echoAdmin: newApiKey() }
const bearer = (key: string) => ({ authorization: `Bearer ${key}` })

/** The audit log line of `event` that has every one of `fields` (logfmt annotations come in any order). */
const auditLine = (log: string, event: string, fields: Record<string, string>) =>
  log.split("\n").find((line) =>
    line.includes(`message="audit: ${event}`) &&
    Object.entries(fields).every(([k, v]) => line.includes(` ${k}=${v}`) || line.includes(` ${k}="${v}"`))
  )

/** An audit line of `event` (one failure, or the summary of an interval's) that mentions every one of `parts`. */
const auditMentioning = (log: string, event: string, parts: ReadonlyArray<string>) =>
  log.split("\n").find((line) => line.includes(`audit=${event}`) && parts.every((p) => line.includes(p)))

/** A raw request (node:http), for what fetch will not send: a GET with a body, chunked bodies, any Host. */
const raw = (url: string, options: {
  method?: string
  headers?: Record<string, string>
  body?: string | Buffer
  chunks?: Array<Buffer>
}) =>
  new Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }>((resolve, reject) => {
    const req = http.request(url, { method: options.method ?? "GET", headers: options.headers }, (res) => {
      let text = ""
      res.setEncoding("utf8").on("data", (d: string) => (text += d))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }))
    })
    req.on("error", reject)
    if (options.chunks !== undefined) {
      for (const chunk of options.chunks) req.write(chunk)
      req.end()
    } else req.end(options.body)
  })

describe("security end to end", () => {
  let gateway: RunningGateway
  let echo: RunningServer
  let endless: RunningServer
  let jwksServer: http.Server
  let jwksUrl: string
  let signer: jose.CryptoKey
  let stranger: jose.CryptoKey
  const dir = tempDir()
  const issuer = "https://auth.example.com/"
  const audience = "mcp-gateway-e2e"
  const seen: Array<string> = []
  const record = <T extends { text?: string; body?: unknown }>(r: T) => {
    seen.push(r.text ?? JSON.stringify(r.body))
    return r
  }

  const token = (claims: jose.JWTPayload, key = signer) =>
    new jose.SignJWT({ iss: issuer, aud: audience, sub: "alice", exp: Math.floor(Date.now() / 1000) + 300, ...claims })
      .setProtectedHeader({ alg: "RS256", kid: "k1" })
      .sign(key)

  beforeAll(async () => {
    const pair = await jose.generateKeyPair("RS256")
    signer = pair.privateKey
    stranger = (await jose.generateKeyPair("RS256")).privateKey
    const jwk = { ...(await jose.exportJWK(pair.publicKey)), kid: "k1", alg: "RS256" }
    jwksServer = http.createServer((_, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: [jwk] })))
    await new Promise<void>((r) => jwksServer.listen(0, "127.0.0.1", r))
    jwksUrl = `http://127.0.0.1:${(jwksServer.address() as any).port}/jwks`
    ;[echo, endless] = await Promise.all([startFixtureServer("header-echo-server.mjs"), startFixtureServer("header-echo-server.mjs", { ENDLESS_LIST: "1" })])
    const registryFile = path.join(dir, "registry.json")
    // A hand-written stdio entry in the registry file: with stdio registration off, it must not run.
    writeJson(registryFile, {
      version: 1,
      templates: { smuggled: { instances: [{ id: "sm1", transport: "stdio", command: ["node", "-e", "require('fs').writeFileSync(process.env.MARK, '')"], inherit_env: ["MARK"] }] } }
    })
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, {
      gateway: {
        registry_file: "./registry.json",
        allowed_origins: ["https://app.example.com"],
        allowed_hosts: ["gateway.test"],
        max_sessions_per_client: 3,
        max_list_pages: 5,
        registration_env: ["GW_TEST_BACKEND_TOKEN"],
        // Every test here fails credentials from 127.0.0.1 on purpose: no 429 for them (the flood
        // has a test of its own), and audit summaries every second, for the tests to read.
        rate_limits: { auth_failures: { max_failures: 10_000, interval: 1 } }
      },
      auth: {
        api_keys: [
          { id: "admin", hash: hashApiKey(keys.admin), scopes: ["gateway:read", "gateway:admin", "mcp:call"] },
          { id: "echo-only", hash: hashApiKey(keys.echoOnly), scopes: ["mcp:call"], templates: ["echo"] },
          { id: "reader", hash: hashApiKey(keys.reader), scopes: ["gateway:read"] },
          { id: "echo-admin", hash: hashApiKey(keys.echoAdmin), scopes: ["gateway:admin"], templates: ["echo"] }
        ],
        jwt: { issuer, audience, jwks_url: jwksUrl },
        authorization_servers: ["https://auth.example.com"]
      },
      templates: {
        echo: {
          instances: [{ id: "e1", transport: "http", endpoint: echo.url, headers: { "X-Backend-Token": { env: "GW_TEST_BACKEND_TOKEN" } } }],
          forward_headers: ["X-Tenant-Id"]
        },
        other: { instances: [{ id: "o1", transport: "http", endpoint: echo.url }] },
        endless: { instances: [{ id: "n1", transport: "http", endpoint: endless.url }] },
        secretive: {
          instances: [
            { id: "s1", transport: "http", endpoint: `http://user:hunter2@127.0.0.1:${echo.port}/mcp?token=tok-in-url` },
            { id: "s2", transport: "stdio", command: ["node", misbehaving, "--token=argv-secret-123"] }
          ]
        }
      }
    })
    gateway = await startGateway({
      configFile,
      env: { GW_TEST_BACKEND_TOKEN: "backend-secret-xyz", MARK: path.join(dir, "smuggled-ran") }
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all([echo?.stop(), endless?.stop()])
    jwksServer?.close()
    // Not one secret in anything the gateway said, to clients or in its log.
    const everything = seen.join("\n") + "\n" + (gateway?.stderr() ?? "") + (gateway?.stdout() ?? "")
    for (const secret of [...SECRETS, ...Object.values(keys)]) expect(everything).not.toContain(secret)
  })

  // (The `headers` tool answers with what the backend received, its own secret included: that
  // answer is the backend's, so it is left out of what is checked for secrets.)
  const call = (template: string, headers: Record<string, string>, name = "headers", args: unknown = {}) =>
    api(`${gateway.url}/mcp/${template}/tools/call`, { json: { name, arguments: args }, headers }).then((r) => name === "headers" ? r : record(r))

  it("/gateway/health and the resource metadata are open; every other route wants a credential", async () => {
    expect((await api(`${gateway.url}/gateway/health`)).status).toBe(200)
    for (const route of ["/gateway/stats", "/gateway/registry", "/docs", "/openapi.json", "/mcp/echo/health", "/mcp/echo/tools/list", "/nowhere"]) {
      const r = record(await api(`${gateway.url}${route}`))
      expect(r.status, route).toBe(401)
      expect(r.body.error.type).toBe("unauthorized")
      expect(r.headers.get("www-authenticate")).toMatch(/^Bearer realm="mcp-gateway", resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource/)
    }
    const mcp = await initializeRaw(`${gateway.url}/mcp/echo`)
    expect(mcp.status).toBe(401)
    expect(mcp.headers.get("www-authenticate")).toContain(`resource_metadata="${gateway.url}/.well-known/oauth-protected-resource/mcp/echo"`)
    expect(((await mcp.json()) as any).error.message).toContain("Unauthorized")
    const metadata = await api(`${gateway.url}/.well-known/oauth-protected-resource/mcp/echo`)
    expect(metadata.status).toBe(200)
    expect(metadata.body).toEqual({
      resource: `${gateway.url}/mcp/echo`,
      authorization_servers: ["https://auth.example.com"],
      scopes_supported: ["mcp:call", "mcp:call:echo"],
      bearer_methods_supported: ["header"],
      resource_name: "mcp-gateway: echo"
    })
    // The aggregate endpoints have documents of their own, and their 401s point at them.
    const aggregate = await initializeRaw(`${gateway.url}/mcp`)
    expect(aggregate.status).toBe(401)
    expect(aggregate.headers.get("www-authenticate")).toContain(`resource_metadata="${gateway.url}/.well-known/oauth-protected-resource/mcp"`)
    const all = await api(`${gateway.url}/.well-known/oauth-protected-resource/mcp`)
    expect(all.status).toBe(200)
    expect(all.body).toMatchObject({ resource: `${gateway.url}/mcp`, scopes_supported: ["mcp:call"] })
    const virtual = await api(`${gateway.url}/.well-known/oauth-protected-resource/mcp/v/dev`)
    expect(virtual.body).toMatchObject({ resource: `${gateway.url}/mcp/v/dev`, scopes_supported: ["mcp:call"] })
  })

  it("wrong, missing, expired, not-yet-valid, badly signed, wrong-issuer and wrong-audience credentials get 401", async () => {
    const now = Math.floor(Date.now() / 1000)
    const cases: Record<string, Record<string, string>> = {
      missing: {},
      "wrong key": bearer(newApiKey()),
      "wrong X-API-Key": { "x-api-key": newApiKey() },
      expired: bearer(await token({ exp: now - 60 })),
      "not yet valid": bearer(await token({ nbf: now + 3600 })),
      "badly signed": bearer(await token({}, stranger)),
      "wrong issuer": bearer(await token({ iss: "https://evil.example.com/" })),
      "wrong audience": bearer(await token({ aud: "someone-else" }))
    }
    for (const [what, headers] of Object.entries(cases)) {
      const r = await call("echo", headers)
      expect(r.status, what).toBe(401)
      const challenge = r.headers.get("www-authenticate")!
      expect(challenge.includes(`error="invalid_token"`), what).toBe(what !== "missing")
    }
    // The valid ones pass: an API key by either header, a token from the JWKS URL.
    expect((await call("echo", bearer(keys.admin))).status).toBe(200)
    expect((await call("echo", { "x-api-key": keys.admin })).status).toBe(200)
    expect((await call("echo", bearer(await token({ scope: "mcp:call" })))).status).toBe(200)
    await waitUntil(() => auditLine(gateway.stderr(), "authentication_failed", { from: "127.0.0.1", who: "(unknown)" }) !== undefined, 5000, "the audit line")
    // The failures after an interval's first come as one line when it ends, naming who and why.
    await waitUntil(() => auditMentioning(gateway.stderr(), "authentication_failed", ["more from 127.0.0.1", "jwt:alice", "invalid token: expired"]) !== undefined, 5000, "the audit summary")
  })

  it("the right credential with the wrong scope or template gets 403 insufficient_scope, by REST and MCP alike", async () => {
    const r = await call("echo", bearer(keys.reader))
    expect(r.status).toBe(403)
    expect(r.headers.get("www-authenticate")).toContain(`error="insufficient_scope", scope="mcp:call:echo"`)
    // The envelope names the scope too (the CLI's hint reads it, not the message).
    expect(r.body.error).toMatchObject({ type: "forbidden", scope: "mcp:call:echo" })
    // A key limited to one template reaches that one only.
    expect((await call("echo", bearer(keys.echoOnly))).status).toBe(200)
    expect((await call("other", bearer(keys.echoOnly))).status).toBe(403)
    const initialize = (template: string, headers: Record<string, string>) =>
      fetch(`${gateway.url}/mcp/${template}`, {
        method: "POST",
        headers: { ...mcpPostHeaders, ...headers },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "e2e", version: "1" } } })
      })
    expect((await initialize("other", bearer(keys.echoOnly))).status).toBe(403)
    expect((await initialize("echo", bearer(keys.echoOnly))).status).toBe(200)
    // A token's scopes narrow it the same way.
    const echoToken = await token({ scope: "mcp:call:echo" })
    expect((await call("echo", bearer(echoToken))).status).toBe(200)
    expect((await call("other", bearer(echoToken))).status).toBe(403)
    // Reading and administering are scopes of their own.
    expect((await api(`${gateway.url}/gateway/stats`, { headers: bearer(keys.echoOnly) })).status).toBe(403)
    expect((await api(`${gateway.url}/gateway/stats`, { headers: bearer(keys.reader) })).status).toBe(200)
    const register = await api(`${gateway.url}/gateway/register`, {
      json: { template_name: "echo", instance: { id: "e2", transport: "http", endpoint: echo.url } },
      headers: bearer(keys.reader)
    })
    expect(register.status).toBe(403)
    expect(register.body.error.scope).toContain("gateway:admin")
    await waitUntil(() => auditMentioning(gateway.stderr(), "forbidden", ["reader", "gateway:admin"]) !== undefined, 5000, "the audit line")
    // A sync (config reload, discovery) is gateway-wide administration: neither a reader nor a template's admin.
    for (const key of [keys.reader, keys.echoAdmin]) {
      expect((await api(`${gateway.url}/gateway/sync`, { json: {}, headers: bearer(key) })).status).toBe(403)
    }
    expect((await api(`${gateway.url}/gateway/sync`, { json: {} })).status).toBe(401)
    const synced = await api(`${gateway.url}/gateway/sync`, { json: {}, headers: bearer(keys.admin) })
    expect(synced.status).toBe(200)
    await waitUntil(() => auditLine(gateway.stderr(), "synced", { who: "admin" }) !== undefined, 5000, "the sync's audit line")
  })

  it("the backend never sees the client's credentials; its own come from the environment; forward_headers pass", async () => {
    const seenByBackend = (r: { body: any }) => JSON.parse(r.body.content[0].text)
    const rest = await call("echo", { ...bearer(keys.admin), "x-api-key": keys.echoOnly, "x-tenant-id": "t-42", "x-other": "no" })
    const headers = seenByBackend(rest)
    expect(headers.authorization).toBeUndefined()
    expect(headers["x-api-key"]).toBeUndefined()
    expect(headers["x-other"]).toBeUndefined()
    expect(headers["x-tenant-id"]).toBe("t-42")
    expect(headers["x-backend-token"]).toBe("backend-secret-xyz")
    // The same through the MCP endpoint.
    const opened = await fetch(`${gateway.url}/mcp/echo`, {
      method: "POST",
      headers: { ...mcpPostHeaders, ...bearer(keys.admin) },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "e2e", version: "1" } } })
    })
    const session = opened.headers.get("mcp-session-id")!
    const viaMcp = await fetch(`${gateway.url}/mcp/echo`, {
      method: "POST",
      headers: { ...mcpPostHeaders, ...bearer(keys.admin), "mcp-session-id": session, "x-tenant-id": "t-7" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "headers", arguments: {} } })
    })
    const text = await viaMcp.text()
    const event = JSON.parse(text.split("\n").find((l) => l.startsWith("data: {"))!.slice(6))
    const mcpHeaders = JSON.parse(event.result.content[0].text)
    expect(mcpHeaders.authorization).toBeUndefined()
    expect(mcpHeaders["x-tenant-id"]).toBe("t-7")
    // Another credential cannot use that session: to it, the session does not exist.
    const hijack = await fetch(`${gateway.url}/mcp/echo`, {
      method: "POST",
      headers: { ...mcpPostHeaders, ...bearer(keys.echoOnly), "mcp-session-id": session },
      body: JSON.stringify({ jsonrpc: "2.0", id: 3, method: "tools/list" })
    })
    expect(hijack.status).toBe(404)
  })

  it("bodies over the limit get 413 on every route, declared or chunked", async () => {
    const big = Buffer.alloc(6 * 1024 * 1024, "a")
    const chunks = Array.from({ length: 6 }, () => Buffer.alloc(1024 * 1024, "a"))
    const routes: Array<[string, string]> = [
      ["POST", "/mcp/echo"],
      ["POST", "/mcp/echo/tools/call"],
      ["GET", "/mcp/echo/tools/list"],
      ["POST", "/gateway/register"],
      ["POST", "/gateway/sync"],
      ["GET", "/gateway/stats"],
      ["GET", "/gateway/health"],
      ["DELETE", "/gateway/deregister/echo/e1"],
      ["GET", "/docs"]
    ]
    for (const [method, route] of routes) {
      const headers = { ...bearer(keys.admin), ...mcpPostHeaders, host: "127.0.0.1" }
      // (Node's client frames a GET or DELETE body only when told its length.)
      const declared = await raw(`${gateway.url}${route}`, { method, headers: { ...headers, "content-length": String(big.length) }, body: big })
        .catch((e) => { throw new Error(`${method} ${route} declared: ${e.message}`) })
      expect(declared.status, `${method} ${route} declared`).toBe(413)
      const chunked = await raw(`${gateway.url}${route}`, { method, headers: { ...headers, "transfer-encoding": "chunked" }, chunks })
        .catch((e) => { throw new Error(`${method} ${route} chunked: ${e.message}`) })
      expect(chunked.status, `${method} ${route} chunked`).toBe(413)
    }
    // Nothing was registered or deregistered by any of it.
    const registry = await api(`${gateway.url}/gateway/registry`, { headers: bearer(keys.admin) })
    expect(registry.body.templates.echo.instances.map((i: any) => i.id)).toEqual(["e1"])
  })

  it("a browser cannot be turned against it: foreign Origin 403, rebinding Host 403, non-JSON 415; allowed origins get CORS", async () => {
    const evil = { ...bearer(keys.admin), origin: "https://evil.example.com" }
    expect((await call("echo", evil)).status).toBe(403)
    expect((await api(`${gateway.url}/gateway/stats`, { headers: evil })).status).toBe(403)
    expect((await api(`${gateway.url}/gateway/register`, { json: { template_name: "x" }, headers: evil })).status).toBe(403)
    expect((await api(`${gateway.url}/gateway/sync`, { json: {}, headers: evil })).status).toBe(403)
    expect((await raw(`${gateway.url}/gateway/sync`, { method: "POST", headers: { ...bearer(keys.admin), "content-type": "text/plain" }, body: Buffer.from("{}") })).status).toBe(415)
    expect((await fetch(`${gateway.url}/mcp/echo`, { method: "POST", headers: { ...mcpPostHeaders, ...evil }, body: "{}" })).status).toBe(403)
    // A text/plain POST (what a page can send without a preflight) runs nothing.
    const plain = await raw(`${gateway.url}/mcp/echo/tools/call`, {
      method: "POST",
      headers: { ...bearer(keys.admin), "content-type": "text/plain" },
      body: JSON.stringify({ name: "headers" })
    })
    expect(plain.status).toBe(415)
    const formRegister = await raw(`${gateway.url}/gateway/register`, {
      method: "POST",
      headers: { ...bearer(keys.admin), "content-type": "application/x-www-form-urlencoded" },
      body: "{}"
    })
    expect(formRegister.status).toBe(415)
    // DNS rebinding: a page on evil.example.com resolving to 127.0.0.1 sends its own Host.
    for (const route of ["/gateway/health", "/mcp/echo/tools/list", "/gateway/stats"]) {
      expect((await raw(`${gateway.url}${route}`, { headers: { ...bearer(keys.admin), host: "evil.example.com" } })).status, route).toBe(403)
    }
    expect((await raw(`${gateway.url}/gateway/health`, { headers: { host: "gateway.test:8080" } })).status).toBe(200)
    expect((await raw(`${gateway.url}/gateway/health`, { headers: { host: "localhost" } })).status).toBe(200)
    // CORS for the allowed origin on the MCP endpoint: the preflight, and the answer's headers.
    const preflight = await raw(`${gateway.url}/mcp/echo`, {
      method: "OPTIONS",
      headers: { origin: "https://app.example.com", "access-control-request-method": "POST", "access-control-request-headers": "content-type, mcp-session-id, authorization" }
    })
    expect(preflight.status).toBe(204)
    expect(preflight.headers["access-control-allow-origin"]).toBe("https://app.example.com")
    expect(preflight.headers["access-control-allow-methods"]).toContain("POST")
    expect(preflight.headers["access-control-allow-headers"]).toContain("mcp-session-id")
    expect((await raw(`${gateway.url}/mcp/echo`, { method: "OPTIONS", headers: { origin: "https://evil.example.com" } })).status).toBe(403)
    const corsAnswer = await initializeRaw(`${gateway.url}/mcp/echo`).then(() =>
      fetch(`${gateway.url}/mcp/echo`, {
        method: "POST",
        headers: { ...mcpPostHeaders, ...bearer(keys.admin), origin: "https://app.example.com" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "e2e", version: "1" } } })
      })
    )
    expect(corsAnswer.status).toBe(200)
    expect(corsAnswer.headers.get("access-control-allow-origin")).toBe("https://app.example.com")
    expect(corsAnswer.headers.get("access-control-expose-headers")).toContain("mcp-session-id")
  })

  it("a 5,000-level nested body is a 400 that touches no backend; an endless list is a 502 naming the limit", async () => {
    const count = async () => Number((await call("other", bearer(keys.admin), "count")).body.content[0].text)
    const before = await count()
    const deep = "{\"a\":".repeat(5000) + "{}" + "}".repeat(5000)
    const r = await raw(`${gateway.url}/mcp/echo/tools/call`, {
      method: "POST",
      headers: { ...bearer(keys.admin), "content-type": "application/json" },
      body: `{"name":"headers","arguments":${deep}}`
    })
    expect(r.status).toBe(400)
    expect(JSON.parse(r.text).error.message).toContain("max_json_depth")
    // (count itself is one request: nothing else reached the backend.)
    expect(await count()).toBe(before + 1)
    const list = await api(`${gateway.url}/mcp/endless/tools/list`, { headers: bearer(keys.admin) })
    expect(list.status).toBe(502)
    expect(list.body.error.type).toBe("list_too_long")
    expect(list.body.error.message).toContain("max_list_pages")
  })

  it("MCP sessions are capped per client", async () => {
    const open = (key: string) =>
      fetch(`${gateway.url}/mcp/other`, {
        method: "POST",
        headers: { ...mcpPostHeaders, ...bearer(key) },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "e2e", version: "1" } } })
      })
    const token1 = await token({ sub: "capped", scope: "mcp:call" })
    const statuses: Array<number> = []
    for (let i = 0; i < 5; i++) statuses.push((await open(token1)).status)
    expect(statuses).toEqual([200, 200, 200, 429, 429])
    // Another client is not held back by this one.
    expect((await open(await token({ sub: "someone-else", scope: "mcp:call" }))).status).toBe(200)
  })

  it("no secret appears in registry, health, stats, registration answers or errors; registrations are audited", async () => {
    record(await api(`${gateway.url}/gateway/registry`, { headers: bearer(keys.admin) }))
    const health = record(await api(`${gateway.url}/mcp/secretive/health`, { headers: bearer(keys.admin) }))
    expect(health.body.instances.s1.endpoint).toBe(`http://***@127.0.0.1:${echo.port}/mcp?token=***`)
    expect(health.body.instances.s2.command).toEqual(["node", misbehaving, "--token=***"])
    record(await api(`${gateway.url}/gateway/stats`, { headers: bearer(keys.admin) }))
    for (let i = 0; i < 4; i++) record(await call("secretive", bearer(keys.admin), "echo", { message: "x" }))
    const registered = record(await api(`${gateway.url}/gateway/register`, {
      json: { template_name: "late", instance: { id: "l1", transport: "http", endpoint: `http://user:hunter2@127.0.0.1:1/mcp?token=tok-in-url` } },
      headers: bearer(keys.admin)
    }))
    expect(registered.status).toBe(201)
    expect(registered.body.instance.endpoint).toBe("http://***@127.0.0.1:1/mcp?token=***")
    // A dead instance's error names it without the secret.
    record(await call("late", bearer(keys.admin), "echo"))
    const gone = await api(`${gateway.url}/gateway/deregister/late/l1`, { method: "DELETE", headers: bearer(keys.admin) })
    expect(gone.status).toBe(200)
    await waitUntil(() => auditLine(gateway.stderr(), "deregistered", { who: "admin", what: "late/l1" }) !== undefined, 5000, "the audit line")
    expect(auditLine(gateway.stderr(), "registered", { who: "admin", what: "late/l1", from: "127.0.0.1" })).toBeDefined()
  })

  it("no other spelling of a path gets past its scope: every variant is refused, and none hangs", async () => {
    // (Found by an adversarial review: the router behind the guard folded case, merged slashes,
    // dropped trailing ones and decoded %xx, so odd spellings reached admin routes unchecked.)
    const variants = [
      "//gateway/deregister/other/o1", "/gateway//deregister/other/o1", "/GATEWAY/deregister/other/o1", "/gateway/Deregister/other/o1",
      "/gateway/%64eregister/other/o1", "/gateway/deregister/other/o1/", "/gateway/deregister/other/o1;x", "/gateway/deregister/other/o1/extra"
    ]
    for (const key of [keys.echoOnly, keys.reader]) {
      for (const variant of variants) {
        const r = await raw(`${gateway.url}${variant}`, { method: "DELETE", headers: bearer(key) })
        expect([403, 404], `DELETE ${variant}`).toContain(r.status)
      }
    }
    const registry = await api(`${gateway.url}/gateway/registry`, { headers: bearer(keys.admin) })
    expect(registry.body.templates.other.instances.map((i: any) => i.id)).toEqual(["o1"])
    const reads = ["/gateway/stats/", "//gateway/stats", "/GATEWAY/stats", "/gateway/Stats", "/gateway/stats;x", "/gateway/%73tats", "/gateway/registry/"]
    for (const variant of reads) expect([403, 404], variant).toContain((await raw(`${gateway.url}${variant}`, { headers: bearer(keys.echoOnly) })).status)
    const absolute = await raw(`${gateway.url}/`, { headers: bearer(keys.echoOnly) })
    expect(absolute.status).toBe(404)
    for (const variant of ["//mcp/other/tools/list", "/MCP/other/tools/list", "/%6dcp/other/tools/list", "/mcp/other/tools/list/"]) {
      expect([403, 404], variant).toContain((await raw(`${gateway.url}${variant}`, { headers: bearer(keys.echoOnly) })).status)
    }
    // A POST on an odd path is answered (it used to wait for ever for a body already read).
    const odd = await raw(`${gateway.url}//mcp/echo/tools/call`, {
      method: "POST",
      headers: { ...bearer(keys.admin), "content-type": "application/json" },
      body: JSON.stringify({ name: "count" })
    })
    expect(odd.status).toBe(404)
    // Without a key, a path that does not exist says nothing either.
    expect((await raw(`${gateway.url}//gateway/stats`, {})).status).toBe(401)
  })

  it("an admin key restricted to a template registers there only, and never names an environment variable it may not", async () => {
    const register = (key: string, template: string, instance: Record<string, unknown>) =>
      api(`${gateway.url}/gateway/register`, { json: { template_name: template, instance }, headers: bearer(key) }).then(record)
    expect((await register(keys.echoAdmin, "echo", { id: "e9", transport: "http", endpoint: echo.url })).status).toBe(201)
    expect((await register(keys.echoAdmin, "other", { id: "o9", transport: "http", endpoint: echo.url })).status).toBe(403)
    expect((await api(`${gateway.url}/gateway/deregister/echo/e9`, { method: "DELETE", headers: bearer(keys.echoAdmin) })).status).toBe(200)
    // A registration must not be a way to read the gateway's environment.
    const leak = await register(keys.admin, "echo", { id: "e8", transport: "http", endpoint: echo.url, headers: { "X-Leak": { env: "PATH" } } })
    expect(leak.status).toBe(403)
    expect(leak.body.error.message).toContain("gateway.registration_env")
    const allowed = await register(keys.admin, "echo", { id: "e7", transport: "http", endpoint: echo.url, headers: { "X-Token": { env: "GW_TEST_BACKEND_TOKEN" } } })
    expect(allowed.status).toBe(201)
    expect((await api(`${gateway.url}/gateway/deregister/echo/e7`, { method: "DELETE", headers: bearer(keys.admin) })).status).toBe(200)
  })

  it("Host and Origin are read strictly: no trailing tricks, http(s) origins only; the metadata tells no template names", async () => {
    for (const host of ["[::1]evil.com", "[::1].evil.com", "localhost:99999999999", "127.0.0.1 evil.com"]) {
      expect((await raw(`${gateway.url}/gateway/health`, { headers: { host } })).status, host).toBe(403)
    }
    for (const origin of ["chrome-extension://localhost", "javascript://localhost", "http://evil.com@localhost", "ftp://localhost"]) {
      expect((await call("echo", { ...bearer(keys.admin), origin })).status, origin).toBe(403)
    }
    expect((await api(`${gateway.url}/.well-known/oauth-protected-resource/mcp/no-such-template`)).status).toBe(200)
  })

  it("stdio entries of the registry file are not run when stdio registration is off, and stay in the file", async () => {
    expect(fs.existsSync(path.join(dir, "smuggled-ran"))).toBe(false)
    expect(gateway.stderr()).toMatch(/level=ERROR .*not starting 1 stdio instance\(s\) of template \\"smuggled\\" \(sm1\)/)
    const registry = await api(`${gateway.url}/gateway/registry`, { headers: bearer(keys.admin) })
    expect(registry.body.templates.smuggled).toBeUndefined()
    // A later change rewrote the file (the registration above): the refused entry is still there.
    const file = JSON.parse(fs.readFileSync(path.join(dir, "registry.json"), "utf8"))
    expect(file.templates.smuggled.instances[0].id).toBe("sm1")
  })
})

describe("rate limits end to end", () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    while (cleanups.length > 0) await cleanups.pop()!()
  })

  it("a burst gets exactly the bucket through (REST and MCP endpoint), the rest 429 with Retry-After, and it recovers", async () => {
    const configFile = path.join(tempDir(), "gateway.json")
    writeJson(configFile, {
      gateway: { rate_limits: { per_client: { requests_per_second: 2, burst: 5 } } },
      templates: { t: { instances: [{ id: "s", transport: "stdio", command: ["node", everythingServer, "stdio"] }] } }
    })
    const gateway = await startGateway({ configFile })
    cleanups.push(() => gateway.stop())
    const echo = () => api(`${gateway.url}/mcp/t/tools/call`, { json: { name: "echo", arguments: { message: "x" } } })
    const burst = await Promise.all(Array.from({ length: 20 }, echo))
    expect(burst.filter((r) => r.status === 200)).toHaveLength(5)
    const refused = burst.filter((r) => r.status === 429)
    expect(refused).toHaveLength(15)
    expect(refused[0]!.body.error.type).toBe("rate_limited")
    expect(refused[0]!.headers.get("retry-after")).toBe("1")
    expect(refused[0]!.headers.get("ratelimit-limit")).toBe("5")
    expect(refused[0]!.headers.get("ratelimit-remaining")).toBe("0")
    expect(burst.find((r) => r.status === 200)!.headers.get("ratelimit-limit")).toBe("5")
    // The MCP endpoint answers 429 too, in JSON-RPC.
    const mcp = await initializeRaw(`${gateway.url}/mcp/t`)
    expect(mcp.status).toBe(429)
    expect(((await mcp.json()) as any).error.message).toContain("rate limit")
    // Half a second later, one more passes (2 per second). (A fixed wait: the refill is what is
    // tested, and polling for it would spend the token it waits for.)
    await new Promise((r) => setTimeout(r, 600))
    const after = await Promise.all([echo(), echo()])
    expect(after.map((r) => r.status).sort()).toEqual([200, 429])
  })

  it("a credential flood: 10,000 bad credentials from one address get 401 up to the limit, then 429 with Retry-After; the audit log holds two lines", async () => {
    const configFile = path.join(tempDir(), "gateway.json")
    const key = newApiKey()
    writeJson(configFile, { auth: { api_keys: [{ id: "ops", hash: hashApiKey(key), scopes: ["gateway:read"] }] } })
    const gateway = await startGateway({ configFile })
    cleanups.push(() => gateway.stop())
    const { port } = new URL(gateway.url)
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 })
    cleanups.push(async () => agent.destroy())
    /** GET /gateway/stats from a loopback address of our choice (Linux answers on all of 127/8). */
    const get = (authorization: string, localAddress = "127.0.0.1") =>
      new Promise<{ status: number; retryAfter: string | undefined; type: string | undefined }>((resolve, reject) => {
        const req = http.request({ host: "127.0.0.1", port, path: "/gateway/stats", agent, localAddress, headers: { authorization } }, (res) => {
          let text = ""
          res.setEncoding("utf8").on("data", (d: string) => (text += d))
          res.on("end", () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers["retry-after"], type: text === "" ? undefined : JSON.parse(text).error?.type }))
        })
        req.on("error", reject)
        req.end()
      })
    const statuses = new Map<number, number>()
    let retryAfter: Array<number> = []
    for (let sent = 0; sent < 10_000; sent += 100) {
      const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => get(`Bearer wrong-${sent + i}`)))
      for (const a of answers) {
        statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1)
        if (a.status === 429) {
          expect(a.type).toBe("rate_limited")
          retryAfter.push(Number(a.retryAfter))
        }
      }
    }
    console.log(`credential flood: ${JSON.stringify(Object.fromEntries(statuses))}; stderr ${gateway.stderr().length} bytes`)
    // The documented default: 20 failures per address per 60 s.
    expect(Object.fromEntries(statuses)).toEqual({ 401: 20, 429: 9_980 })
    expect(Math.min(...retryAfter)).toBeGreaterThanOrEqual(1)
    expect(Math.max(...retryAfter)).toBeLessThanOrEqual(60)
    // The address is refused whatever it sends now; another address, and the open routes, are not.
    expect((await get(`Bearer ${key}`)).status).toBe(429)
    expect((await get(`Bearer ${key}`, "127.0.0.2")).status).toBe(200)
    expect((await api(`${gateway.url}/gateway/health`)).status).toBe(200)
    // One audit line for the flood so far (its first failure); the rest is summed up when the interval ends (here: at shutdown).
    const auditLines = () => gateway.stderr().split("\n").filter((l) => l.includes("audit: authentication_failed"))
    expect(auditLines()).toHaveLength(1)
    expect(auditLines()[0]).toContain("from=127.0.0.1")
    await gateway.stop()
    expect(auditLines()).toHaveLength(2)
    // (9,980 refused in the flood, and the right key from the same address.)
    expect(auditLines()[1]).toMatch(/19 more from 127\.0\.0\.1 within 1m.*9981 requests refused \(429\)/)
    expect(auditLines()[1]).toContain("count=19")
    expect(gateway.stderr().length).toBeLessThan(20_000)
  }, 120_000)

  it("listening beyond loopback without auth refuses to start, unless --insecure", async () => {
    const result = await runGateway(["start", "--host", "0.0.0.0", "--port", "0"])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain("refusing to listen on 0.0.0.0 without authentication")
    expect(result.stderr).toContain("--insecure")
    const insecure = await startGateway({ args: ["--host", "0.0.0.0", "--insecure"] })
    cleanups.push(() => insecure.stop())
    expect(insecure.url).toMatch(/^http:\/\/0\.0\.0\.0:\d+$/)
    const port = insecure.url.split(":").at(-1)
    expect((await api(`http://127.0.0.1:${port}/gateway/health`)).status).toBe(200)
  })
})
