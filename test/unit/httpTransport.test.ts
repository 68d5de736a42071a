import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as http from "node:http"
import type * as net from "node:net"
import { MAX_MESSAGE_DEPTH } from "../../src/domain/jsonText.js"
import { connectHttp } from "../support/httpConnection.js"

/**
 * A backend whose tools/call answer nests `depth` levels (as JSON, or as an SSE event): a server
 * gone wrong. Its answer fails that request with a clear error; it must not reach the client's
 * answer, where serialising it again would overflow the stack.
 */
const deepServer = (depth: number, sse: boolean) =>
  Effect.acquireRelease(
    Effect.async<{ readonly url: string; readonly server: http.Server }>((resume) => {
      const server = http.createServer((req, res) => {
        let body = ""
        req.on("data", (c) => (body += c))
        req.on("end", () => {
          if (req.method !== "POST") return void res.writeHead(req.method === "DELETE" ? 200 : 405).end()
          const message = JSON.parse(body)
          if (message.id === undefined) return void res.writeHead(202).end()
          const answer = message.method === "initialize"
            ? JSON.stringify({ jsonrpc: "2.0", id: message.id, result: { protocolVersion: "2025-11-25", capabilities: { tools: {} }, serverInfo: { name: "deep", version: "1" } } })
            : message.method === "tools/call"
            ? `{"jsonrpc":"2.0","id":${JSON.stringify(message.id)},"result":{"content":${"[".repeat(depth)}${"]".repeat(depth)}}}`
            : JSON.stringify({ jsonrpc: "2.0", id: message.id, result: {} })
          if (sse && message.method === "tools/call") {
            res.writeHead(200, { "content-type": "text/event-stream" }).end(`event: message\ndata: ${answer}\n\n`)
          } else {
            res.writeHead(200, { "content-type": "application/json", "mcp-session-id": "s-1" }).end(answer)
          }
        })
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/mcp`, server })))
    }),
    ({ server }) => Effect.sync(() => {
      server.closeAllConnections()
      server.close()
    })
  )

const connect = (endpoint: string) => connectHttp(endpoint, "deep")

describe("HTTP transport: an answer nested deeper than the gateway passes on", () => {
  for (const sse of [false, true]) {
    it.scoped(`fails its request with a clear error (${sse ? "SSE" : "JSON"} answer), and the connection goes on`, () =>
      Effect.gen(function*() {
        const { url } = yield* deepServer(MAX_MESSAGE_DEPTH + 10, sse)
        const connection = yield* connect(url)
        const error = yield* Effect.flip(connection.request("tools/call", { name: "deep" }))
        expect(error.message).toContain(`nests deeper than ${MAX_MESSAGE_DEPTH} levels`)
        expect(error._tag === "TransportError" && error.reachedBackend).toBe(true)
        // The same path without the Effect (the request path's): the same failure, through `done`.
        const viaNow = yield* Effect.async<unknown>((resume) => {
          const started = connection.requestNow!("tools/call", { name: "deep" }, undefined, (exit) => resume(Effect.succeed(exit)))
          expect(started).toBeDefined()
        })
        expect(JSON.stringify(viaNow)).toContain("nests deeper than")
        const ping = yield* connection.request("ping", undefined)
        expect("result" in ping).toBe(true)
      }))
  }

  it.scoped("passes on an answer just within the limit", () =>
    Effect.gen(function*() {
      const { url } = yield* deepServer(MAX_MESSAGE_DEPTH - 10, false)
      const connection = yield* connect(url)
      const response = yield* connection.request("tools/call", { name: "deep" })
      expect("result" in response).toBe(true)
    }))
})
