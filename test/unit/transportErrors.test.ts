import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as http from "node:http"
import type * as net from "node:net"
import {
  AllAttemptsFailed,
  BackendError,
  type DispatchError,
  InstanceNotFound,
  InstanceUnavailable,
  ListTooLong,
  NoHealthyInstance,
  RequestRejected,
  SessionLimitReached,
  TemplateNotFound,
  TransformFailed,
  UpstreamTimeout
} from "../../src/domain/GatewayError.js"
import { dispatchErrorAnswer } from "../../src/http/ApiError.js"
import { isRetryable } from "../../src/dispatch/Dispatcher.js"
import { connectHttp } from "../support/httpConnection.js"
import { reasonOfCode, RequestTimeout, serialize, TransportError, type TransportErrorReason } from "../../src/transport/TransportError.js"

/**
 * Errors carry their meaning: a TransportError's reason decides what a client sees (kind, HTTP
 * status, JSON-RPC code) and whether another instance may take the request; a dispatch error
 * knows its own row of the table. These are the statuses and codes clients saw before the
 * table moved into the errors: a change here is a change of the gateway's answers.
 */

const transportError = (reason: TransportErrorReason, reachedBackend: boolean) =>
  new TransportError({ instanceId: "i", reason, message: `failed: ${reason}`, reachedBackend })

describe("TransportError: each reason's meaning", () => {
  const rows: ReadonlyArray<readonly [TransportErrorReason, { kind: string; status: number; code: number; clientFault: boolean; sessionEnded: boolean }]> = [
    ["refused", { kind: "upstream_failed", status: 502, code: -32603, clientFault: false, sessionEnded: false }],
    ["reset", { kind: "upstream_failed", status: 502, code: -32603, clientFault: false, sessionEnded: false }],
    ["timeout", { kind: "upstream_failed", status: 502, code: -32603, clientFault: false, sessionEnded: false }],
    ["closed", { kind: "upstream_failed", status: 502, code: -32603, clientFault: false, sessionEnded: false }],
    ["unavailable", { kind: "upstream_failed", status: 502, code: -32603, clientFault: false, sessionEnded: false }],
    ["protocol", { kind: "upstream_failed", status: 502, code: -32603, clientFault: false, sessionEnded: false }],
    ["http_status", { kind: "upstream_failed", status: 502, code: -32603, clientFault: false, sessionEnded: false }],
    ["rejected", { kind: "invalid_request", status: 400, code: -32600, clientFault: true, sessionEnded: false }],
    ["session_ended", { kind: "upstream_failed", status: 502, code: -32603, clientFault: false, sessionEnded: true }]
  ]
  for (const [reason, meaning] of rows) {
    it(`${reason} → ${meaning.kind}, HTTP ${meaning.status}, JSON-RPC ${meaning.code}`, () => {
      for (const reachedBackend of [false, true]) {
        const error = transportError(reason, reachedBackend)
        expect({ kind: error.kind, status: error.httpStatus, code: error.rpcCode, clientFault: error.clientFault, sessionEnded: error.sessionEnded })
          .toEqual(meaning)
        // Reads and lists go elsewhere after any failure but the client's own; a tools/call only when it never left.
        expect(isRetryable("tools/list", error)).toBe(reason !== "rejected")
        expect(isRetryable("tools/call", error)).toBe(reason !== "rejected" && !reachedBackend)
      }
    })
  }

  it("a request's own deadline (RequestTimeout) is a 504 upstream_timeout", () => {
    const error = new RequestTimeout({ instanceId: "i", timeoutMs: 10 })
    expect({ kind: error.kind, status: error.httpStatus, code: error.rpcCode }).toEqual({ kind: "upstream_timeout", status: 504, code: -32603 })
  })

  it("a system error code gives the reason, never the message", () => {
    expect(reasonOfCode("ECONNREFUSED")).toBe("refused")
    expect(reasonOfCode("ENOTFOUND")).toBe("refused")
    expect(reasonOfCode("EHOSTUNREACH")).toBe("refused")
    expect(reasonOfCode("ECONNABORTED")).toBe("closed")
    expect(reasonOfCode("ETIMEDOUT")).toBe("timeout")
    expect(reasonOfCode("HPE_INVALID")).toBe("protocol")
    expect(reasonOfCode("ECONNRESET")).toBe("reset")
    expect(reasonOfCode("EPIPE")).toBe("reset")
    expect(reasonOfCode(undefined)).toBe("reset")
  })

  it("a message that cannot be serialised is the sender's mistake (rejected, never sent)", () => {
    let deep: unknown = 1
    for (let i = 0; i < 100_000; i++) deep = [deep]
    const error = serialize("i", deep)
    expect(error).toBeInstanceOf(TransportError)
    expect((error as TransportError).reason).toBe("rejected")
    expect((error as TransportError).reachedBackend).toBe(false)
  })
})

describe("dispatch errors: each knows its kind, HTTP status and JSON-RPC code", () => {
  const rows: ReadonlyArray<readonly [DispatchError | SessionLimitReached, string, number, number]> = [
    [new TemplateNotFound({ template: "t" }), "template_not_found", 404, -32603],
    [new InstanceNotFound({ template: "t", instanceId: "i" }), "instance_not_found", 404, -32603],
    [new NoHealthyInstance({ template: "t", total: 1, retryAfterSeconds: 3 }), "no_healthy_instance", 503, -32603],
    [new InstanceUnavailable({ template: "t", instanceId: "i", reason: "its breaker is open", retryAfterSeconds: 3 }), "instance_unavailable", 503, -32603],
    [new AllAttemptsFailed({ template: "t", attempts: [{ instanceId: "i", message: "ECONNREFUSED" }] }), "upstream_failed", 502, -32603],
    [new UpstreamTimeout({ template: "t", timeoutSeconds: 1 }), "upstream_timeout", 504, -32603],
    [new RequestRejected({ template: "t", instanceId: "i", message: "HTTP 400" }), "invalid_request", 400, -32600],
    [new ListTooLong({ template: "t", instanceId: "i", pages: 100 }), "list_too_long", 502, -32603],
    [new TransformFailed({ template: "t", transform: "x", reason: "threw" }), "transform_failed", 502, -32603],
    [new BackendError({ template: "t", instanceId: "i", error: { code: -32602, message: "Unknown tool: x" } }), "mcp_error", 400, -32602],
    [new BackendError({ template: "t", instanceId: "i", error: { code: -32021, message: "needs input" } }), "mcp_error", 400, -32021],
    [new BackendError({ template: "t", instanceId: "i", error: { code: -32601, message: "Method not found" } }), "mcp_error", 404, -32601],
    [new BackendError({ template: "t", instanceId: "i", error: { code: -32002, message: "Resource not found" } }), "mcp_error", 404, -32002],
    [new BackendError({ template: "t", instanceId: "i", error: { code: -32000, message: "boom" } }), "mcp_error", 502, -32000],
    [new SessionLimitReached({ scope: "client", limit: 1 }), "session_limit", 429, -32603],
    [new SessionLimitReached({ scope: "gateway", limit: 1 }), "session_limit", 503, -32603],
    [new SessionLimitReached({ scope: "instance", limit: 1, template: "t" }), "session_limit", 503, -32603]
  ]
  for (const [error, kind, status, code] of rows) {
    it(`${error._tag}${error._tag === "BackendError" ? ` ${error.error.code}` : ""} → ${kind}, ${status}, ${code}`, () => {
      expect({ kind: error.kind, status: error.httpStatus, code: error.rpcCode }).toEqual({ kind, status, code })
      if (error._tag !== "SessionLimitReached") {
        // The REST face's envelope says what the error says.
        const answer = dispatchErrorAnswer(error, "r-1")
        expect(answer.status).toBe(status)
        expect(answer.body.error).toMatchObject({ status, type: kind, message: error.message, request_id: "r-1" })
      }
    })
  }

  it("a 503 says when to come back", () => {
    const answer = dispatchErrorAnswer(new NoHealthyInstance({ template: "t", total: 2, retryAfterSeconds: 2.2 }), "r")
    expect(answer.headers).toEqual({ "retry-after": "3" })
  })
})

/**
 * A backend for the HTTP transport's reasons: `tools/call` with the name of what to do
 * (answer with a status, cut the connection, answer with something that is not JSON-RPC).
 */
const misbehavingServer = Effect.acquireRelease(
  Effect.async<{ readonly url: string; readonly server: http.Server }>((resume) => {
    const server = http.createServer((req, res) => {
      let body = ""
      req.on("data", (c) => (body += c))
      req.on("end", () => {
        if (req.method !== "POST") return void res.writeHead(req.method === "DELETE" ? 200 : 405).end()
        const message = JSON.parse(body)
        if (message.id === undefined) return void res.writeHead(202).end()
        if (message.method === "initialize") {
          return void res.writeHead(200, { "content-type": "application/json", "mcp-session-id": "s-1" })
            .end(JSON.stringify({ jsonrpc: "2.0", id: message.id, result: { protocolVersion: "2025-11-25", capabilities: { tools: {} }, serverInfo: { name: "m", version: "1" } } }))
        }
        switch (message.params?.name) {
          case "500":
            return void res.writeHead(500, { "content-type": "text/plain" }).end("internal trouble")
          case "422":
            return void res.writeHead(422, { "content-type": "text/plain" }).end("unprocessable")
          case "cut":
            return void req.socket.destroy()
          case "text":
            return void res.writeHead(200, { "content-type": "text/plain" }).end("hello")
          default:
            return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ jsonrpc: "2.0", id: message.id, result: {} }))
        }
      })
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/mcp`, server })))
  }),
  ({ server }) =>
    Effect.sync(() => {
      server.closeAllConnections()
      server.close()
    })
)

const connect = (endpoint: string) => connectHttp(endpoint, "m")

const failureOf = (effect: Effect.Effect<unknown, TransportError | RequestTimeout>) =>
  Effect.map(Effect.flip(effect), (e) => (e._tag === "TransportError" ? { reason: e.reason, reachedBackend: e.reachedBackend } : { reason: e._tag, reachedBackend: true }))

describe("HTTP transport: the reason is set where the failure is found", () => {
  it.scoped("a refused connection, an error status, a 4xx, a cut connection, a non-JSON-RPC answer, a closed connection", () =>
    Effect.gen(function*() {
      const { url } = yield* misbehavingServer
      const connection = yield* connect(url)
      expect(yield* failureOf(connection.request("tools/call", { name: "500" }))).toEqual({ reason: "http_status", reachedBackend: true })
      expect(yield* failureOf(connection.request("tools/call", { name: "422" }))).toEqual({ reason: "rejected", reachedBackend: true })
      expect(yield* failureOf(connection.request("tools/call", { name: "cut" }))).toEqual({ reason: "reset", reachedBackend: true })
      expect(yield* failureOf(connection.request("tools/call", { name: "text" }))).toEqual({ reason: "protocol", reachedBackend: true })
      // A header no HTTP message may carry: the request's own fault, nothing sent.
      expect(yield* failureOf(connection.request("tools/call", { name: "ok" }, { headers: { "x-bad": "a\r\nb" } })))
        .toEqual({ reason: "rejected", reachedBackend: false })
      expect("result" in (yield* connection.request("tools/call", { name: "ok" }))).toBe(true)
      yield* connection.close
      expect(yield* failureOf(connection.request("tools/call", { name: "ok" }))).toEqual({ reason: "closed", reachedBackend: false })
    }))

  it.scoped("nothing listening: refused, and never sent", () =>
    Effect.gen(function*() {
      const { server, url } = yield* misbehavingServer
      yield* Effect.async<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
      const connection = yield* connect(url)
      expect(yield* failureOf(connection.request("tools/call", { name: "ok" }))).toEqual({ reason: "refused", reachedBackend: false })
    }))
})
