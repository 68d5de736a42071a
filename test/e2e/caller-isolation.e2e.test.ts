import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { hashApiKey, newApiKey } from "../../src/domain/apiKey.js"
import {
  api,
  everythingServer,
  mcpPostHeaders,
  type RunningGateway,
  startGateway,
  tempDir,
  writeJson
} from "../support/processes.js"

/** The JSON-RPC answer of a POST, whether it came as JSON or as an SSE stream. */
const answerOf = async (response: Response) => {
  const text = await response.text()
  const json = text.trimStart().startsWith("{") ? text : text.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).at(-1)!
  return JSON.parse(json)
}

const keys = { alice: newApiKey(), bob: newApiKey() }
const SECRET_URI = "demo://resource/session/alice-secret.gz"

/**
 * A process is shared only within one caller: sessions of two API keys that declare nothing
 * (so that they share a process under `session_process: "auto"`) never share one, and neither
 * can list or read what the other made the server hold (server-everything's session resources
 * and tasks), through the MCP endpoint or the REST face. One caller's MCP session and REST
 * requests do share its process.
 */
describe("a process is shared only within one caller", () => {
  let gateway: RunningGateway

  beforeAll(async () => {
    const configFile = path.join(tempDir(), "gateway.json")
    writeJson(configFile, {
      auth: {
        api_keys: [
          { id: "alice", hash: hashApiKey(keys.alice), scopes: ["mcp:call"] },
          { id: "bob", hash: hashApiKey(keys.bob), scopes: ["mcp:call"] }
        ]
      },
      templates: {
        everything: {
          instances: [{ id: "e1", transport: "stdio", command: ["node", everythingServer, "stdio"] }],
          load_balancer: { warm_processes: 0, health_check_interval: 600 }
        }
      }
    })
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await gateway?.stop()
  })

  /** An MCP session of `key` that declares no capabilities (one that may share a process). */
  const session = async (key: string) => {
    const endpoint = `${gateway.url}/mcp/everything`
    const auth = { authorization: `Bearer ${key}` }
    const opened = await fetch(endpoint, {
      method: "POST",
      headers: { ...mcpPostHeaders, ...auth },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "isolation", version: "1" } }
      })
    })
    expect(opened.status).toBe(200)
    const id = opened.headers.get("mcp-session-id")!
    const headers = { ...mcpPostHeaders, ...auth, "mcp-session-id": id, "mcp-protocol-version": "2025-11-25" }
    await fetch(endpoint, { method: "POST", headers, body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) })
    let next = 2
    return (method: string, params: Record<string, unknown> = {}) =>
      fetch(endpoint, { method: "POST", headers, body: JSON.stringify({ jsonrpc: "2.0", id: next++, method, params }) }).then(answerOf)
  }
  const rest = (key: string, operation: string, body?: unknown) =>
    api(`${gateway.url}/mcp/everything/${operation}`, {
      headers: { authorization: `Bearer ${key}` },
      ...(body === undefined ? {} : { json: body })
    })

  it("neither key can list or read the other's session resources or tasks, through the MCP endpoint or REST", async () => {
    const alice = await session(keys.alice)
    const bob = await session(keys.bob)

    // Alice makes the server hold a session resource and a task.
    const made = await alice("tools/call", {
      name: "gzip-file-as-resource",
      arguments: { name: "alice-secret.gz", data: `data:text/plain;base64,${Buffer.from("alice's secret").toString("base64")}`, outputType: "resourceLink" }
    })
    expect(made.error).toBeUndefined()
    const task = await alice("tools/call", { name: "simulate-research-query", arguments: { topic: "alice's research" }, task: { ttl: 60_000 } })
    const taskId = task.result?.task?.taskId
    expect(typeof taskId).toBe("string")

    // Alice sees them, on her session and through REST (her process, shared within her requests).
    expect(JSON.stringify((await alice("resources/list")).result.resources)).toContain(SECRET_URI)
    expect((await alice("tasks/get", { taskId })).result?.taskId).toBe(taskId)
    const aliceRead = await rest(keys.alice, "resources/read", { uri: SECRET_URI })
    expect(aliceRead.status).toBe(200)

    // Bob does not, on the MCP endpoint ...
    expect(JSON.stringify((await bob("resources/list")).result.resources)).not.toContain(SECRET_URI)
    expect((await bob("resources/read", { uri: SECRET_URI })).error).toBeDefined()
    expect((await bob("tasks/get", { taskId })).error).toBeDefined()
    const bobTasks = await bob("tasks/list")
    expect(JSON.stringify(bobTasks)).not.toContain(taskId)
    // ... nor through REST.
    const bobList = await rest(keys.bob, "resources/list")
    expect(bobList.status).toBe(200)
    expect(JSON.stringify(bobList.body)).not.toContain(SECRET_URI)
    expect((await rest(keys.bob, "resources/read", { uri: SECRET_URI })).status).not.toBe(200)

    // And the other way round: what Bob makes, Alice cannot see.
    await bob("tools/call", {
      name: "gzip-file-as-resource",
      arguments: { name: "bob-secret.gz", data: `data:text/plain;base64,${Buffer.from("bob's").toString("base64")}`, outputType: "resourceLink" }
    })
    expect(JSON.stringify((await alice("resources/list")).result.resources)).not.toContain("bob-secret.gz")
    expect(JSON.stringify((await rest(keys.alice, "resources/list")).body)).not.toContain("bob-secret.gz")
    expect(gateway.stderr()).toMatch(/a connection of caller alice's own/)
    expect(gateway.stderr()).toMatch(/a connection of caller bob's own/)
  }, 60_000)
})
