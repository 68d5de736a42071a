import type * as http from "node:http"
import type { SessionOutbox } from "../../sessions/SessionOutbox.js"
import { jsonTextOf } from "../../domain/jsonText.js"
import { sendJson } from "../raw.js"
import { lagKeyOf, responseWriter, type ResponseWriter, type StallReason, writeAnswer } from "../ResponseFlow.js"

/**
 * Writing the endpoint's Server-Sent Events. Every event carries an id `{stream}-{seq}`, so a
 * client that loses a connection resumes the stream with GET and Last-Event-ID.
 */

/** What every stream tells clients to wait before reconnecting (the `retry:` field). */
export const RECONNECT_AFTER_MS = 1000

const streamHeaders = { "content-type": "text/event-stream", "cache-control": "no-cache" }

/** Writes one event; while the client lags, droppable ones coalesce or are dropped (ResponseFlow). */
export const writeEvent = (writer: ResponseWriter, id: string, message: unknown) => {
  if (writer.res.destroyed) return
  const data = jsonTextOf(message)
  // (An event that cannot be written is left out; the stream goes on.)
  if (typeof data !== "string") return
  writer.event(`id: ${id}\nevent: message\ndata: ${data}\n\n`, lagKeyOf(message))
}

/**
 * Opens a request's stream: the priming event (its first id, no data: resumable from the start)
 * with the reconnection delay.
 */
export const openRequestStream = (res: http.ServerResponse, streamKey: string, onStall?: (reason: StallReason) => void): ResponseWriter => {
  res.writeHead(200, streamHeaders)
  const writer = responseWriter(res, onStall)
  writer.event(`id: ${streamKey}-0\nretry: ${RECONNECT_AFTER_MS}\ndata:\n\n`)
  return writer
}

/**
 * A request's whole stream in one write, when nothing came before the answer: the priming event
 * and the answer, as servers themselves answer (the SDK's default).
 */
export const writeOneEventStream = (res: http.ServerResponse, streamKey: string, message: unknown) => {
  const data = jsonTextOf(message)
  // (One that cannot be written: sendJson answers the 502 that says why.)
  if (typeof data !== "string") return sendJson(res, 502, message, undefined)
  const head = `id: ${streamKey}-0\nretry: ${RECONNECT_AFTER_MS}\ndata:\n\nid: ${streamKey}-1\nevent: message\ndata: `
  const length = Buffer.byteLength(head) + Buffer.byteLength(data) + 2
  writeAnswer(res, 200, { "content-type": "text/event-stream", "cache-control": "no-cache", "content-length": length }, data, { head, tail: "\n\n" })
}

/** Opens a stream that is not a request's (the standing stream, a resumed one). */
export const openStream = (res: http.ServerResponse, comment?: string, onStall?: (reason: StallReason) => void): ResponseWriter => {
  res.writeHead(200, streamHeaders)
  const writer = responseWriter(res, onStall)
  writer.event(`${comment === undefined ? "" : `: ${comment}\n`}retry: ${RECONNECT_AFTER_MS}\n\n`)
  return writer
}

/**
 * Carries an outbox on this connection, from `afterSeq` (a resumption) or from what was never
 * delivered; the connection ends when the stream finishes (a request's, after its answer).
 */
export const carry = (writer: ResponseWriter, streamKey: string, outbox: SessionOutbox, afterSeq?: number) => {
  const detach = outbox.attach((seq, message) => writeEvent(writer, `${streamKey}-${seq}`, message), afterSeq, () => writer.end())
  writer.res.once("close", detach)
}
