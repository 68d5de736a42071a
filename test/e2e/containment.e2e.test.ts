import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  api,
  everythingServer,
  filesystemServer,
  repoRoot,
  type RunningGateway,
  type RunningServer,
  runGateway,
  startFixtureServer,
  startGateway,
  tempDir,
  writeJson
} from "../support/processes.js"

const envServer = path.join(repoRoot, "test/fixtures/env-server.mjs")

/** Secrets in the gateway's environment that no stdio server may see. */
const SECRETS = {
  MCP_GATEWAY_SESSION_KEYS: "session-key-that-is-long-enough-0123456789",
  GW_TEST_JWT_SECRET: "jwt-secret-that-is-long-enough-0123456789",
  MCP_GATEWAY_REDIS_URL: "redis://:redis-password-42@127.0.0.1:1/0",
  REDIS_PASSWORD: "redis-password-42"
}

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`

describe("containment end to end: credentials, environment, registrations", () => {
  let gateway: RunningGateway
  let echo: RunningServer
  const dir = tempDir()

  beforeAll(async () => {
    echo = await startFixtureServer("header-echo-server.mjs")
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, {
      gateway: {
        registry_file: "./registry.json",
        allow_stdio_registration: true,
        registration_env: ["GW_TEST_MAY_REGISTER"],
        inherit_env: ["GW_TEST_GATEWAY_WIDE"],
        max_registrations_per_template: 2,
        max_registrations: 3,
        max_metadata_bytes: 1024
      },
      auth: { jwt: { secret: { env: "GW_TEST_JWT_SECRET" }, issuer: "https://issuer.example/", audience: "gw" }, api_keys: [] },
      templates: {
        // Two instances on one host:port, with different credentials in their URLs and different headers.
        alice: { instances: [{ id: "a1", transport: "http", endpoint: `http://alice:one@127.0.0.1:${echo.port}/mcp`, headers: { "X-Instance-Tag": "alice" } }] },
        bob: { instances: [{ id: "b1", transport: "http", endpoint: `http://bob:two@127.0.0.1:${echo.port}/mcp`, headers: { "X-Instance-Tag": "bob" } }] },
        // What stdio servers see, with inherit_env at each level: the gateway's, the template's, the instance's.
        envgateway: { instances: [{ id: "eg", transport: "stdio", command: ["node", envServer], env: { OWN: "own-value" } }] },
        envtemplate: { inherit_env: ["GW_TEST_FOR_TEMPLATE"], instances: [{ id: "et", transport: "stdio", command: ["node", envServer] }] },
        envinstance: {
          inherit_env: ["GW_TEST_FOR_TEMPLATE"],
          instances: [{ id: "ei", transport: "stdio", command: ["node", envServer], inherit_env: ["GW_TEST_FOR_INSTANCE", "GW_TEST_PREFIX_*"] }]
        },
        // The bundled example's servers run as they are (node, found on PATH).
        everything: { instances: [{ id: "ev", transport: "stdio", command: ["node", everythingServer, "stdio"] }] },
        filesystem: { instances: [{ id: "fs", transport: "stdio", command: ["node", filesystemServer, dir] }] }
      }
    })
    gateway = await startGateway({
      configFile,
      env: {
        ...SECRETS,
        GW_TEST_GATEWAY_WIDE: "gateway-wide",
        GW_TEST_FOR_TEMPLATE: "for-template",
        GW_TEST_FOR_INSTANCE: "for-instance",
        GW_TEST_PREFIX_ONE: "prefixed",
        GW_TEST_MAY_REGISTER: "may-register",
        GW_TEST_NOT_NAMED: "not-named"
      }
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await echo?.stop()
  })

  const bearer = { authorization: "" }
  const call = async (template: string, name: string) => {
    const r = await api(`${gateway.url}/mcp/${template}/tools/call`, { json: { name, arguments: {} }, headers: bearer })
    expect(r.status, JSON.stringify(r.body)).toBe(200)
    return JSON.parse(r.body.content[0].text)
  }

  beforeAll(async () => {
    // A token for the gateway's own auth (HS256 with the secret from its environment).
    const jose = await import("jose")
    const token = await new jose.SignJWT({ scope: "gateway:read gateway:admin mcp:call" })
      .setProtectedHeader({ alg: "HS256" })
      .setIssuer("https://issuer.example/")
      .setAudience("gw")
      .setSubject("tester")
      .setExpirationTime("10m")
      .sign(new TextEncoder().encode(SECRETS.GW_TEST_JWT_SECRET))
    bearer.authorization = `Bearer ${token}`
  })

  it("two HTTP instances on one host:port: the backend sees each instance's own credentials and headers on every request", async () => {
    // Interleaved and concurrent, so that pooled sockets would be reused across them if they could be.
    for (let round = 0; round < 3; round++) {
      const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => call(i % 2 === 0 ? "alice" : "bob", "headers")))
      answers.forEach((headers, i) => {
        const alice = i % 2 === 0
        expect(headers.authorization).toBe(alice ? basic("alice", "one") : basic("bob", "two"))
        expect(headers["x-instance-tag"]).toBe(alice ? "alice" : "bob")
      })
    }
    // Every request the backend got (initialize, notifications, health pings, calls) carried one
    // instance's credentials with that same instance's headers: never a mix.
    expect(await call("alice", "identities")).toEqual([`${basic("alice", "one")} alice`, `${basic("bob", "two")} bob`])
  })

  it("a stdio server sees the default list, its inherit_env and its env: never the gateway's secrets", async () => {
    const gatewayLevel = await call("envgateway", "env")
    expect(gatewayLevel).toMatchObject({ PATH: process.env.PATH, OWN: "own-value", GW_TEST_GATEWAY_WIDE: "gateway-wide" })
    const templateLevel = await call("envtemplate", "env")
    expect(templateLevel.GW_TEST_FOR_TEMPLATE).toBe("for-template")
    expect(templateLevel.GW_TEST_GATEWAY_WIDE).toBeUndefined()
    const instanceLevel = await call("envinstance", "env")
    expect(instanceLevel).toMatchObject({ GW_TEST_FOR_INSTANCE: "for-instance", GW_TEST_PREFIX_ONE: "prefixed" })
    expect(instanceLevel.GW_TEST_FOR_TEMPLATE).toBeUndefined()
    for (const env of [gatewayLevel, templateLevel, instanceLevel]) {
      const text = JSON.stringify(env)
      for (const [name, value] of Object.entries(SECRETS)) {
        expect(env[name], name).toBeUndefined()
        expect(text).not.toContain(value)
      }
      expect(env.GW_TEST_NOT_NAMED).toBeUndefined()
      expect(Object.keys(env).filter((k) => k.startsWith("MCP_GATEWAY_"))).toEqual([])
    }
    // server-everything and server-filesystem run as the bundled example runs them (`node` found on PATH).
    const echoed = await api(`${gateway.url}/mcp/everything/tools/call`, { json: { name: "echo", arguments: { message: "hi" } }, headers: bearer })
    expect(echoed.body.content[0].text).toBe("Echo: hi")
    const read = await api(`${gateway.url}/mcp/filesystem/tools/call`, {
      json: { name: "read_text_file", arguments: { path: path.join(dir, "gateway.json") } },
      headers: bearer
    })
    expect(read.status).toBe(200)
    expect(read.body.content[0].text).toContain(`"allow_stdio_registration": true`)
  })

  const register = (body: unknown) => api(`${gateway.url}/gateway/register`, { json: body, headers: bearer })

  it("a registration may let a stdio server inherit only the variables of registration_env", async () => {
    const refused = await register({ template_name: "envapi", instance: { transport: "stdio", command: ["node", envServer], inherit_env: ["GW_TEST_NOT_NAMED"] } })
    expect(refused.status).toBe(403)
    expect(refused.body.error.message).toContain(`"GW_TEST_NOT_NAMED" (in inherit_env)`)
    const accepted = await register({ template_name: "envapi", instance: { id: "api-env", transport: "stdio", command: ["node", envServer], inherit_env: ["GW_TEST_MAY_REGISTER"] } })
    expect(accepted.status).toBe(201)
    const env = await call("envapi", "env")
    expect(env.GW_TEST_MAY_REGISTER).toBe("may-register")
    expect(env.GW_TEST_GATEWAY_WIDE).toBeUndefined()
    expect((await api(`${gateway.url}/gateway/deregister/envapi/api-env`, { method: "DELETE", headers: bearer })).status).toBe(200)
  })

  it("registrations: framing headers 400, denied addresses 403, loopback allowed, metadata and count bounds 4xx, long names removable", async () => {
    for (const name of ["Transfer-Encoding", "Content-Length", "Host", "connection"]) {
      const r = await register({ template_name: "remote", instance: { transport: "http", endpoint: `http://127.0.0.1:${echo.port}/mcp`, headers: { [name]: "x" } } })
      expect(r.status, name).toBe(400)
      expect(r.body.error.message).toContain(`"${name}" cannot be an instance header: the gateway sets it itself`)
    }
    for (const endpoint of ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://[::ffff:169.254.169.254]/", "http://metadata.google.internal/"]) {
      const r = await register({ template_name: "remote", instance: { transport: "http", endpoint } })
      expect(r.status, endpoint).toBe(403)
      expect(r.body.error.message).toContain("gateway.registration_deny")
    }
    const sse = await register({ template_name: "remote", instance: { transport: "sse", endpoint: "http://169.254.169.254/sse" } })
    expect(sse.status).toBe(403)
    const big = await register({ template_name: "remote", instance: { transport: "http", endpoint: `http://127.0.0.1:${echo.port}/mcp`, metadata: { blob: "x".repeat(2000) } } })
    expect(big.status).toBe(400)
    expect(big.body.error.message).toContain("gateway.max_metadata_bytes")
    // Nothing of the refused ones was registered.
    expect((await api(`${gateway.url}/gateway/registry`, { headers: bearer })).body.templates.remote).toBeUndefined()

    // Loopback (the README's tour registers http://127.0.0.1:3001/mcp), and a name of the longest length.
    const longTemplate = "t".repeat(128)
    expect((await register({ template_name: "remote", instance: { id: "r1", transport: "http", endpoint: `http://127.0.0.1:${echo.port}/mcp`, metadata: { team: "a" } } })).status).toBe(201)
    expect((await register({ template_name: "remote", instance: { id: "r2", transport: "http", endpoint: `http://localhost:${echo.port}/mcp` } })).status).toBe(201)
    const perTemplate = await register({ template_name: "remote", instance: { id: "r3", transport: "http", endpoint: `http://127.0.0.1:${echo.port}/mcp` } })
    expect(perTemplate.status).toBe(409)
    expect(perTemplate.body.error.message).toContain("gateway.max_registrations_per_template")
    // (Without an id: the derived one, {template}-1, is shortened to a name's length too.)
    const long = await register({ template_name: longTemplate, instance: { transport: "http", endpoint: `http://127.0.0.1:${echo.port}/mcp` } })
    expect(long.status).toBe(201)
    const longId: string = long.body.instance_id
    expect(longId).toBe(`${"t".repeat(126)}-1`)
    const total = await register({ template_name: "another", instance: { transport: "http", endpoint: `http://127.0.0.1:${echo.port}/mcp` } })
    expect(total.status).toBe(409)
    expect(total.body.error.message).toContain("gateway.max_registrations")
    const tooLong = await register({ template_name: "t".repeat(129), instance: { transport: "http", endpoint: `http://127.0.0.1:${echo.port}/mcp` } })
    expect(tooLong.status).toBe(400)
    expect(tooLong.body.error.message).toContain("at most 128")

    // The longest name can be probed and removed like any other.
    const health = await api(`${gateway.url}/mcp/${longTemplate}/health`, { headers: bearer })
    expect(health.status).toBe(200)
    expect(health.body.template_name).toBe(longTemplate)
    expect((await api(`${gateway.url}/gateway/deregister/${longTemplate}/${longId}`, { method: "DELETE", headers: bearer })).status).toBe(200)
    for (const id of ["r1", "r2"]) expect((await api(`${gateway.url}/gateway/deregister/remote/${id}`, { method: "DELETE", headers: bearer })).status).toBe(200)
    expect((await api(`${gateway.url}/gateway/registry`, { headers: bearer })).body.templates[longTemplate]).toBeUndefined()
  })

  it("an offline registration (mcp-gateway register --offline) keeps to the same name length and limits", async () => {
    const offlineDir = tempDir()
    const configFile = path.join(offlineDir, "gateway.json")
    const registryFile = path.join(offlineDir, "registry.json")
    writeJson(configFile, { gateway: { port: 0, registry_file: registryFile, max_registrations_per_template: 1 } })
    const cli = (...args: Array<string>) => runGateway(args, { XDG_STATE_HOME: path.join(offlineDir, "state"), MCP_GATEWAY_URL: "" })
    const endpoint = `http://127.0.0.1:${echo.port}/mcp`
    const long = await cli("register", "t".repeat(129), "--endpoint", endpoint, "--offline", "--config", configFile)
    expect(long.code).toBe(2)
    expect(long.stderr).toContain("at most 128")
    expect(fs.existsSync(registryFile)).toBe(false)
    const added = await cli("register", "t".repeat(128), "--endpoint", endpoint, "--offline", "--config", configFile)
    expect(added.code, added.stderr).toBe(0)
    const over = await cli("register", "t".repeat(128), "--endpoint", endpoint, "--offline", "--config", configFile)
    expect(over.code).toBe(2)
    expect(over.stderr).toContain("gateway.max_registrations_per_template")
    expect(JSON.parse(fs.readFileSync(registryFile, "utf8")).templates["t".repeat(128)].instances).toHaveLength(1)
    // The endpoint policy too: what the API refuses (403) is not written to the file the gateway loads.
    const metadata = await cli("register", "m", "--endpoint", "http://169.254.169.254/latest/meta-data", "--offline", "--config", configFile)
    expect(metadata.code).toBe(2)
    expect(metadata.stderr).toContain("registrations may not point at 169.254.169.254")
    expect(JSON.parse(fs.readFileSync(registryFile, "utf8")).templates.m).toBeUndefined()
  }, 120_000)
})
