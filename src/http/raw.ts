import type * as http from "node:http"
import { type ErrorAnswer, errorAnswer } from "./ApiError.js"

/** Plain node:http helpers for the lean request paths (REST operations, the MCP endpoint). */

export const sendJson = (res: http.ServerResponse, status: number, body: unknown, headers?: http.OutgoingHttpHeaders) => {
  if (res.headersSent || res.destroyed) return
  const payload = JSON.stringify(body)
  res.writeHead(status, { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(payload) })
  res.end(payload)
}

export const sendError = (res: http.ServerResponse, answer: ErrorAnswer, headers?: http.OutgoingHttpHeaders) =>
  sendJson(res, answer.status, answer.body, answer.headers === undefined ? headers : { ...answer.headers, ...headers })

/**
 * Reads a JSON body up to the limit. Calls back with the parsed value or an error answer.
 * Past the limit the rest is read and dropped (not buffered), so that the client, still
 * sending, gets to read the 413 instead of a reset connection.
 */
export const readJsonBody = (
  req: http.IncomingMessage,
  requestId: string,
  limit: number,
  callback: (result: { ok: true; value: unknown } | { ok: false; error: ErrorAnswer }) => void
) => {
  const tooLarge = () =>
    errorAnswer(413, "payload_too_large", `the body is larger than ${limit} bytes`, requestId)
  const declared = Number(req.headers["content-length"])
  if (declared > limit) {
    req.resume()
    return callback({ ok: false, error: tooLarge() })
  }
  const chunks: Array<Buffer> = []
  let size = 0
  let failed = false
  req.on("data", (chunk: Buffer) => {
    if (failed) return
    size += chunk.length
    if (size > limit) {
      failed = true
      callback({ ok: false, error: tooLarge() })
      return
    }
    chunks.push(chunk)
  })
  req.on("end", () => {
    if (failed) return
    const text = Buffer.concat(chunks).toString("utf8")
    if (text.trim() === "") {
      return callback({ ok: false, error: errorAnswer(400, "invalid_json", "the body is empty; expected a JSON object", requestId) })
    }
    try {
      callback({ ok: true, value: JSON.parse(text) })
    } catch (e) {
      callback({ ok: false, error: errorAnswer(400, "invalid_json", `the body is not valid JSON: ${(e as Error).message}`, requestId) })
    }
  })
  req.on("error", () => {
    failed = true
  })
}

