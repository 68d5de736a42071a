import type * as http from "node:http"
import type { SessionOutbox } from "../../proxy/SessionOutbox.js"
import { jsonTextOf } from "../../domain/jsonText.js"
import { sendJson } from "../raw.js"

/**
 * Writing the endpoint's Server-Sent Events. Every event carries an id `{stream}-{seq}`, so a
 * client that loses a connection resumes the stream with GET and Last-Event-ID.
 */

/** What every stream tells clients to wait before reconnecting (the `retry:` field). */
export const RECONNECT_AFTER_MS = 1000

const streamHeaders = { "content-type": "text/event-stream", "cache-control": "no-cache" }

export const writeEvent = (res: http.ServerResponse, id: string, message: unknown) => {
  if (res.destroyed) return
  const data = jsonTextOf(message)
  // (An event that cannot be written is left out; the stream goes on.)
  if (typeof data !== "string") return
  res.write(`id: ${id}\nevent: message\ndata: ${data}\n\n`)
}

/**
 * Opens a request's stream: the priming event (its first id, no data: resumable from the start)
 * with the reconnection delay.
 */
export const openRequestStream = (res: http.ServerResponse, streamKey: string) => {
  res.writeHead(200, streamHeaders)
  res.write(`id: ${streamKey}-0\nretry: ${RECONNECT_AFTER_MS}\ndata:\n\n`)
}

/**
 * A request's whole stream in one write, when nothing came before the answer: the priming event
 * and the answer, as servers themselves answer (the SDK's default).
 */
export const writeOneEventStream = (res: http.ServerResponse, streamKey: string, message: unknown) => {
  const data = jsonTextOf(message)
  // (One that cannot be written: sendJson answers the 502 that says why.)
  if (typeof data !== "string") return sendJson(res, 502, message, undefined)
  const body = `id: ${streamKey}-0\nretry: ${RECONNECT_AFTER_MS}\ndata:\n\n` +
    `id: ${streamKey}-1\nevent: message\ndata: ${data}\n\n`
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", "content-length": Buffer.byteLength(body) })
  res.end(body)
}

/** Opens a stream that is not a request's (the standing stream, a resumed one). */
export const openStream = (res: http.ServerResponse, comment?: string) => {
  res.writeHead(200, streamHeaders)
  res.write(`${comment === undefined ? "" : `: ${comment}\n`}retry: ${RECONNECT_AFTER_MS}\n\n`)
}

/**
 * Carries an outbox on this connection, from `afterSeq` (a resumption) or from what was never
 * delivered; the connection ends when the stream finishes (a request's, after its answer).
 */
export const carry = (res: http.ServerResponse, streamKey: string, outbox: SessionOutbox, afterSeq?: number) => {
  const detach = outbox.attach((seq, message) => writeEvent(res, `${streamKey}-${seq}`, message), afterSeq, () => res.end())
  res.once("close", detach)
}
