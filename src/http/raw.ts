import type { Effect, Fiber, Runtime } from "effect"
import type * as http from "node:http"
import { jsonTextOf, nestsDeeperThan } from "../domain/jsonText.js"
import { type ErrorAnswer, errorAnswer } from "./ApiError.js"
import { writeAnswer } from "./ResponseFlow.js"

/** Plain node:http helpers for the lean request paths (REST operations, the MCP endpoint, the front gate). */

/** Runs an effect from a node:http callback, in the server's runtime (a FiberSet's, built once). */
export type RunEffect = <A, E>(effect: Effect.Effect<A, E>, options?: Runtime.RunForkOptions) => Fiber.RuntimeFiber<A, E>

export const sendJson = (res: http.ServerResponse, status: number, body: unknown, headers?: http.OutgoingHttpHeaders) => {
  if (res.headersSent || res.destroyed) return
  let payload = jsonTextOf(body)
  if (typeof payload !== "string") {
    status = 502
    payload = unserialisable(body, payload.error)
  }
  // Key by key, not by spread (V8's slow path for header records, on every answer).
  const all: http.OutgoingHttpHeaders = {}
  if (headers !== undefined) for (const name in headers) all[name] = headers[name]
  all["content-type"] = "application/json"
  all["content-length"] = Buffer.byteLength(payload)
  // (A large answer goes a slice at a time, bounded and timed: ResponseFlow.)
  writeAnswer(res, status, all, payload)
}

/** The answer in place of one that cannot be serialised: JSON-RPC where the body was JSON-RPC. */
const unserialisable = (body: unknown, why: string) => {
  const message = `the answer cannot be passed on: ${why}`
  const rpc = typeof body === "object" && body !== null && (body as { jsonrpc?: unknown }).jsonrpc === "2.0"
  return JSON.stringify(
    rpc
      ? { jsonrpc: "2.0", id: (body as { id?: unknown }).id ?? null, error: { code: -32603, message } }
      : { error: { type: "bad_gateway", message } }
  )
}

export const sendError = (res: http.ServerResponse, answer: ErrorAnswer, headers?: http.OutgoingHttpHeaders) =>
  sendJson(res, answer.status, answer.body, answer.headers === undefined ? headers : { ...answer.headers, ...headers })

/** The limits a client's body is read under. */
export interface BodyLimits {
  readonly maxBytes: number
  /** How deeply its JSON may nest (arrays and objects). */
  readonly maxDepth: number
}

/**
 * Reads a body up to the limit, whether its length is declared or it comes chunked. Past the
 * limit the rest is read and dropped (not buffered), so that the client, still sending, gets to
 * read the 413 instead of a reset connection.
 */
export const readBody = (
  req: http.IncomingMessage,
  requestId: string,
  maxBytes: number,
  callback: (result: { ok: true; value: Buffer } | { ok: false; error: ErrorAnswer }) => void
) => {
  const tooLarge = () => errorAnswer(413, "payload_too_large", `the body is larger than ${maxBytes} bytes`, requestId)
  const declared = Number(req.headers["content-length"])
  if (declared > maxBytes) {
    req.resume()
    return callback({ ok: false, error: tooLarge() })
  }
  const chunks: Array<Buffer> = []
  let size = 0
  let failed = false
  req.on("data", (chunk: Buffer) => {
    if (failed) return
    size += chunk.length
    if (size > maxBytes) {
      failed = true
      chunks.length = 0
      callback({ ok: false, error: tooLarge() })
      return
    }
    chunks.push(chunk)
  })
  req.on("end", () => {
    if (!failed) callback({ ok: true, value: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) })
  })
  req.on("error", () => {
    failed = true
  })
}

/** Any character String.prototype.trim would keep (tested instead of trimming a copy of every body). */
const NOT_BLANK = /[^\s\uFEFF\xA0]/

/** Parses a body as JSON within the depth limit; an error answer says what is wrong with it. */
export const parseJsonBody = (body: Buffer, requestId: string, maxDepth: number): { ok: true; value: unknown } | { ok: false; error: ErrorAnswer } => {
  const text = body.toString("utf8")
  if (!NOT_BLANK.test(text)) {
    return { ok: false, error: errorAnswer(400, "invalid_json", "the body is empty; expected a JSON object", requestId) }
  }
  if (nestsDeeperThan(text, maxDepth)) {
    return { ok: false, error: errorAnswer(400, "invalid_json", `the body nests deeper than ${maxDepth} levels (gateway.max_json_depth)`, requestId) }
  }
  try {
    return { ok: true, value: JSON.parse(text) }
  } catch (e) {
    return { ok: false, error: errorAnswer(400, "invalid_json", `the body is not valid JSON: ${(e as Error).message}`, requestId) }
  }
}

/** Reads and parses a JSON body within the limits. */
export const readJsonBody = (
  req: http.IncomingMessage,
  requestId: string,
  limits: BodyLimits,
  callback: (result: { ok: true; value: unknown } | { ok: false; error: ErrorAnswer }) => void
) =>
  readBody(req, requestId, limits.maxBytes, (body) => callback(body.ok ? parseJsonBody(body.value, requestId, limits.maxDepth) : body))
