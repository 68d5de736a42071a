import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { initializeRaw, mcpPostHeaders, type RunningGateway, type RunningServer, startEverythingHttp, startGateway, tempDir, writeJson } from "../support/processes.js"

/** The JSON-RPC answer of a POST, whether it came as JSON or as an SSE stream. */
const answerOf = async (response: Response) => {
  const text = await response.text()
  const json = text.trimStart().startsWith("{") ? text : text.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).at(-1)!
  return JSON.parse(json)
}

/**
 * Tasks live on the instance that created them: with each request balanced on its own
 * (`session_affinity: "none"`, round robin over two server-everything processes), a task's
 * later requests still go to the instance that created it.
 */
describe("task requests follow their task", () => {
  const backends: Array<RunningServer> = []
  let gateway: RunningGateway

  beforeAll(async () => {
    backends.push(await startEverythingHttp(), await startEverythingHttp())
    const configFile = path.join(tempDir(), "gateway.json")
    writeJson(configFile, {
      templates: {
        balanced: {
          instances: backends.map((b, i) => ({ id: `e${i + 1}`, transport: "http", endpoint: b.url })),
          load_balancer: { strategy: "round_robin", session_affinity: "none" }
        }
      }
    })
    gateway = await startGateway({ configFile })
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all(backends.map((b) => b.stop()))
  })

  it("tasks/get reaches the creating instance every time, whatever round robin would pick", async () => {
    const endpoint = `${gateway.url}/mcp/balanced`
    const opened = await initializeRaw(endpoint, 1, { capabilities: {} })
    const session = opened.headers.get("mcp-session-id")!
    const post = (id: number, method: string, params: Record<string, unknown>) =>
      fetch(endpoint, {
        method: "POST",
        headers: { ...mcpPostHeaders, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25" },
        body: JSON.stringify({ jsonrpc: "2.0", id, method, params })
      }).then(answerOf)

    const created = await post(2, "tools/call", { name: "simulate-research-query", arguments: { topic: "gateways" }, task: { ttl: 60_000 } })
    const taskId = created.result?.task?.taskId
    expect(typeof taskId).toBe("string")
    for (let i = 0; i < 6; i++) {
      const got = await post(10 + i, "tasks/get", { taskId })
      expect(got.error).toBeUndefined()
      expect(got.result.taskId).toBe(taskId)
    }
    // An unknown task goes wherever the strategy sends it, and that server says it does not know it.
    const unknown = await post(30, "tasks/get", { taskId: "no-such-task" })
    expect(unknown.error).toBeDefined()
  })
})
