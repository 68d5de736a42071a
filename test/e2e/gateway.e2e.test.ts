import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  api,
  descendants,
  everythingServer,
  filesystemServer,
  isAlive,
  type RunningGateway,
  type RunningServer,
  startEverythingHttp,
  startGateway,
  tempDir,
  waitUntil,
  writeJson
} from "../support/processes.js"

/**
 * The built gateway as a child process in front of real servers from npm: two stdio
 * server-everything, one server-everything in streamableHttp mode, server-filesystem on a
 * temp dir.
 */
describe("gateway end to end", () => {
  const dir = tempDir()
  const files = path.join(dir, "files")
  const configFile = path.join(dir, "gateway.json")
  const registryFile = path.join(dir, "registry.json")
  let httpServer: RunningServer
  let extraServer: RunningServer
  let gateway: RunningGateway
  let base: string

  beforeAll(async () => {
    fs.mkdirSync(files)
    fs.writeFileSync(path.join(files, "hello.txt"), "hello from the gateway test\n")
    ;[httpServer, extraServer] = await Promise.all([startEverythingHttp(), startEverythingHttp()])
    writeJson(configFile, {
      gateway: { host: "127.0.0.1", registry_file: "./registry.json" },
      templates: {
        everything: {
          instances: [
            { id: "ev-stdio-1", transport: "stdio", command: ["node", everythingServer, "stdio"] },
            { id: "ev-stdio-2", transport: "stdio", command: `node ${everythingServer} stdio` },
            { id: "ev-http", transport: "http", endpoint: httpServer.url }
          ],
          load_balancer: { strategy: "round_robin", health_check_interval: 30, health_check_timeout: 10, timeout: 30 }
        },
        filesystem: {
          instances: [{ id: "fs-1", transport: "stdio", command: ["node", filesystemServer, files] }]
        }
      }
    })
    gateway = await startGateway({ configFile })
    base = gateway.url
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all([httpServer?.stop(), extraServer?.stop()])
  })

  it("reports itself healthy with every instance up", async () => {
    const health = await api(`${base}/gateway/health`)
    expect(health.status).toBe(200)
    expect(health.body).toMatchObject({ status: "healthy", templates: 2, instances: 4, healthy_instances: 4 })
    const template = await api(`${base}/mcp/everything/health`)
    expect(template.body).toMatchObject({
      template_name: "everything",
      total_instances: 3,
      healthy_instances: 3,
      health_percentage: 100
    })
    expect(Object.keys(template.body.instances).sort()).toEqual(["ev-http", "ev-stdio-1", "ev-stdio-2"])
    expect(template.body.instances["ev-http"]).toMatchObject({ healthy: true, status: "healthy" })
  })

  it("lists tools, resources, resource templates and prompts (all pages, counted)", async () => {
    const tools = await api(`${base}/mcp/everything/tools/list`, { headers: { "x-request-id": "req-123" } })
    expect(tools.status).toBe(200)
    expect(tools.headers.get("x-request-id")).toBe("req-123")
    expect(["ev-stdio-1", "ev-stdio-2", "ev-http"]).toContain(tools.headers.get("x-instance-id"))
    expect(tools.body.count).toBe(tools.body.tools.length)
    expect(tools.body.tools.map((t: any) => t.name)).toEqual(expect.arrayContaining(["echo", "get-sum"]))

    const resources = await api(`${base}/mcp/everything/resources/list`)
    expect(resources.body.count).toBe(resources.body.resources.length)
    expect(resources.body.resources.map((r: any) => r.uri)).toContain("demo://resource/static/document/architecture.md")

    const templates = await api(`${base}/mcp/everything/resources/templates/list`)
    expect(templates.body.count).toBeGreaterThan(0)
    expect(templates.body.resourceTemplates[0]).toHaveProperty("uriTemplate")

    const prompts = await api(`${base}/mcp/everything/prompts/list`)
    expect(prompts.body.prompts.map((p: any) => p.name)).toEqual(expect.arrayContaining(["simple-prompt", "args-prompt"]))
    expect(prompts.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/)
  })

  it("calls tools, reads resources and gets prompts", async () => {
    const echo = await api(`${base}/mcp/everything/tools/call`, { json: { name: "echo", arguments: { message: "hi there" } } })
    expect(echo.status).toBe(200)
    expect(echo.body.content[0]).toEqual({ type: "text", text: "Echo: hi there" })
    // Always there on the REST face, though MCP lets a server leave it out.
    expect(echo.body.isError).toBe(false)

    const sum = await api(`${base}/mcp/everything/tools/call`, { json: { name: "get-sum", arguments: { a: 2, b: 3 } } })
    expect(sum.body.content[0].text).toContain("5")

    const read = await api(`${base}/mcp/everything/resources/read`, { json: { uri: "demo://resource/static/document/architecture.md" } })
    expect(read.status).toBe(200)
    expect(read.body.contents[0]).toMatchObject({ uri: "demo://resource/static/document/architecture.md" })

    const prompt = await api(`${base}/mcp/everything/prompts/get`, { json: { name: "args-prompt", arguments: { city: "Lyon" } } })
    expect(prompt.status).toBe(200)
    expect(JSON.stringify(prompt.body.messages)).toContain("Lyon")

    const file = await api(`${base}/mcp/filesystem/tools/call`, {
      json: { name: "read_text_file", arguments: { path: path.join(files, "hello.txt") } }
    })
    expect(file.status).toBe(200)
    expect(file.body.content[0].text).toContain("hello from the gateway test")
    expect(file.headers.get("x-instance-id")).toBe("fs-1")
  })

  it("spreads calls round robin, as /gateway/stats shows", async () => {
    const before = (await api(`${base}/gateway/stats`)).body.templates.everything.instances
    for (let i = 0; i < 30; i++) {
      const r = await api(`${base}/mcp/everything/tools/call`, { json: { name: "echo", arguments: { message: `m${i}` } } })
      expect(r.status).toBe(200)
    }
    const stats = (await api(`${base}/gateway/stats`)).body
    const after = stats.templates.everything.instances
    for (const id of ["ev-stdio-1", "ev-stdio-2", "ev-http"]) {
      expect(after[id].requests - before[id].requests).toBe(10)
      expect(after[id].healthy).toBe(true)
    }
    expect(stats.requests.requests).toBeGreaterThanOrEqual(30)
    expect(stats.requests.latency_ms.p50).toBeGreaterThan(0)
    expect(stats.requests.latency_ms).toHaveProperty("p99")
    expect(stats.strategies.round_robin.requests).toBeGreaterThanOrEqual(30)
    expect(stats.templates.everything.strategy).toBe("round_robin")
  })

  it("answers a client's mistakes with 4xx and the one error shape", async () => {
    const badJson = await api(`${base}/mcp/everything/tools/call`, {
      method: "POST",
      body: "{not json",
      headers: { "x-request-id": "bad-1", "content-type": "application/json" }
    })
    expect(badJson.status).toBe(400)
    expect(badJson.body).toEqual({ error: { status: 400, type: "invalid_json", message: expect.any(String), request_id: "bad-1" } })

    // What a page can send without a preflight is refused: only JSON bodies.
    const notJson = await api(`${base}/mcp/everything/tools/call`, { method: "POST", body: "{\"name\":\"echo\"}", headers: { "content-type": "text/plain" } })
    expect(notJson.status).toBe(415)
    expect(notJson.body.error.type).toBe("unsupported_media_type")

    const missing = await api(`${base}/mcp/everything/tools/call`, { json: { arguments: {} } })
    expect(missing.status).toBe(400)
    expect(missing.body.error.type).toBe("invalid_request")
    expect(missing.body.error.message).toContain("body.name: is missing")

    const unknownTemplate = await api(`${base}/mcp/nope/tools/list`)
    expect(unknownTemplate.status).toBe(404)
    expect(unknownTemplate.body.error).toMatchObject({ type: "template_not_found", message: `unknown template "nope"` })

    const unknownOperation = await api(`${base}/mcp/everything/tools/lisst`)
    expect(unknownOperation.status).toBe(404)
    expect(unknownOperation.body.error.type).toBe("unknown_operation")

    const wrongMethod = await api(`${base}/mcp/everything/tools/call`)
    expect(wrongMethod.status).toBe(405)
    expect(wrongMethod.headers.get("allow")).toBe("POST")

    const unknownResource = await api(`${base}/mcp/everything/resources/read`, { json: { uri: "demo://nope" } })
    expect(unknownResource.status).toBeGreaterThanOrEqual(400)
    expect(unknownResource.status).toBeLessThan(500)
    expect(unknownResource.body.error).toMatchObject({ type: "mcp_error", code: expect.any(Number) })
    expect(unknownResource.headers.get("x-instance-id")).not.toBeNull()

    const unknownRoute = await api(`${base}/gateway/nothing`)
    expect(unknownRoute.status).toBe(404)
    expect(unknownRoute.body.error.type).toBe("not_found")

    const tooLarge = await api(`${base}/mcp/everything/tools/call`, { json: { name: "echo", arguments: { message: "x".repeat(5 * 1024 * 1024) } } })
    expect(tooLarge.status).toBe(413)
  })

  it("serves the registry, OpenAPI, Swagger UI and ReDoc", async () => {
    const registry = (await api(`${base}/gateway/registry`)).body
    expect(registry.registry_file).toBe(registryFile)
    expect(registry.templates.everything.load_balancer).toMatchObject({ strategy: "round_robin", timeout: 30 })
    expect(registry.templates.everything.instances.map((i: any) => i.id)).toEqual(["ev-stdio-1", "ev-stdio-2", "ev-http"])

    const openapi = (await api(`${base}/openapi.json`)).body
    expect(Object.keys(openapi.paths)).toEqual(expect.arrayContaining([
      "/mcp/{template}/tools/list",
      "/mcp/{template}/tools/call",
      "/gateway/register",
      "/gateway/deregister/{template}/{instanceId}"
    ]))
    const docs = await fetch(`${base}/docs`)
    expect(docs.status).toBe(200)
    expect(await docs.text()).toContain("SwaggerUIBundle")
    const redoc = await fetch(`${base}/redoc`)
    expect(await redoc.text()).toContain(`spec-url="/openapi.json"`)
    const bundle = await fetch(`${base}/redoc/redoc.standalone.js`)
    expect(bundle.status).toBe(200)
    expect(Number(bundle.headers.get("content-length"))).toBeGreaterThan(100_000)
  })

  it("registers an instance, persists it, keeps it across a restart, and deregisters it", async () => {
    const refused = await api(`${base}/gateway/register`, {
      json: { template_name: "everything", instance: { transport: "stdio", command: ["node", everythingServer, "stdio"] } }
    })
    expect(refused.status).toBe(403)
    expect(refused.body.error.message).toContain("allow_stdio_registration")

    const invalid = await api(`${base}/gateway/register`, {
      json: { template_name: "everything", instance: { transport: "http", endpoint: "localhost" } }
    })
    expect(invalid.status).toBe(400)
    expect(invalid.body.error.message).toContain(`body.instance.endpoint: expected an http(s) URL, got "localhost"`)

    const badStrategy = await api(`${base}/gateway/register`, {
      json: { template_name: "other", instance: { transport: "http", endpoint: extraServer.url }, load_balancer: { strategy: "fastest" } }
    })
    expect(badStrategy.status).toBe(400)
    expect(badStrategy.body.error.message).toContain(`strategy plugin "fastest"`)

    const created = await api(`${base}/gateway/register`, {
      json: { template_name: "extra", instance: { id: "extra-1", transport: "http", endpoint: extraServer.url }, load_balancer: { strategy: "least_connections" } }
    })
    expect(created.status).toBe(201)
    expect(created.body).toMatchObject({ template_name: "extra", instance_id: "extra-1" })
    expect(JSON.parse(fs.readFileSync(registryFile, "utf8")).templates.extra.instances[0].id).toBe("extra-1")

    const duplicate = await api(`${base}/gateway/register`, {
      json: { template_name: "extra", instance: { id: "extra-1", transport: "http", endpoint: extraServer.url } }
    })
    expect(duplicate.status).toBe(409)

    const call = await api(`${base}/mcp/extra/tools/call`, { json: { name: "echo", arguments: { message: "new" } } })
    expect(call.status).toBe(200)
    expect(call.headers.get("x-instance-id")).toBe("extra-1")

    // Restart: the registration comes back from the registry file.
    expect(await gateway.stop()).toBe(0)
    gateway = await startGateway({ configFile })
    base = gateway.url
    const health = await api(`${base}/mcp/extra/health`)
    expect(health.status).toBe(200)
    expect(health.body).toMatchObject({ strategy: "least_connections", total_instances: 1, healthy_instances: 1 })
    const again = await api(`${base}/mcp/extra/tools/call`, { json: { name: "echo", arguments: { message: "again" } } })
    expect(again.body.content[0].text).toBe("Echo: again")

    const unknown = await api(`${base}/gateway/deregister/extra/nope`, { method: "DELETE" })
    expect(unknown.status).toBe(404)
    expect(unknown.body.error.type).toBe("instance_not_found")
    const removed = await api(`${base}/gateway/deregister/extra/extra-1`, { method: "DELETE" })
    expect(removed.status).toBe(200)
    expect(removed.body).toEqual({ template_name: "extra", instance_id: "extra-1", deregistered: true })
    expect(JSON.parse(fs.readFileSync(registryFile, "utf8")).templates).toEqual({})
    expect((await api(`${base}/mcp/extra/tools/list`)).status).toBe(404)
  })

  it("deregistering a stdio instance stops its process; SIGTERM leaves no child process", async () => {
    const before = descendants(gateway.process.pid!)
    expect(before.length).toBeGreaterThanOrEqual(3)
    const removed = await api(`${base}/gateway/deregister/everything/ev-stdio-2`, { method: "DELETE" })
    expect(removed.status).toBe(200)
    await waitUntil(() => descendants(gateway.process.pid!).length === before.length - 1, 10_000, "the process to stop")
    const rest = descendants(gateway.process.pid!)
    expect(await gateway.stop()).toBe(0)
    for (const pid of [...before, ...rest]) expect(isAlive(pid), `process ${pid}`).toBe(false)
    expect(gateway.stdout()).toBe("")
  })
})
