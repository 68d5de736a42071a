// A minimal MCP Streamable HTTP server for benchmarks: answers JSON (no SSE), issues a session
// id on initialize, and answers tools/call with an echo. Fast enough that the proxies in front
// of it, not it, are what the benchmark measures.
import { randomUUID } from "node:crypto"
import * as http from "node:http"

const port = Number(process.argv[2] ?? 0)
const tools = [{ name: "echo", description: "Echoes", inputSchema: { type: "object", properties: { message: { type: "string" } } } }]

const answer = (message) => {
  switch (message.method) {
    case "initialize":
      return { protocolVersion: "2025-11-25", capabilities: { tools: {} }, serverInfo: { name: "bench-backend", version: "1" } }
    case "ping":
      return {}
    case "tools/list":
      return { tools }
    case "tools/call":
      return { content: [{ type: "text", text: `Echo: ${message.params?.arguments?.message ?? ""}` }] }
    default:
      return undefined
  }
}

const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  if (req.method === "DELETE") return res.writeHead(200).end()
  const chunks = []
  req.on("data", (c) => chunks.push(c))
  req.on("end", () => {
    let message
    try {
      message = JSON.parse(Buffer.concat(chunks).toString("utf8"))
    } catch {
      return res.writeHead(400).end()
    }
    if (message.id === undefined) return res.writeHead(202).end()
    const result = answer(message)
    const body = JSON.stringify(result === undefined
      ? { jsonrpc: "2.0", id: message.id, error: { code: -32601, message: "Method not found" } }
      : { jsonrpc: "2.0", id: message.id, result })
    const headers = { "content-type": "application/json", "content-length": Buffer.byteLength(body) }
    if (message.method === "initialize") headers["mcp-session-id"] = randomUUID()
    res.writeHead(200, headers).end(body)
  })
})
server.listen(port, "127.0.0.1", () => process.stdout.write(`${server.address().port}\n`))
process.on("SIGTERM", () => server.close(() => process.exit(0)))
