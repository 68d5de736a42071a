import { Exit } from "effect"
import { isResponse, type JsonRpcResponse } from "../domain/JsonRpc.js"
import { parseServerMessage, tooDeepMessage } from "../domain/jsonText.js"
import type { ConnectionLog } from "./Connection.js"
import type { Http1Error, Http1Handler, Http1Head } from "./Http1Exchange.js"
import { MAX_EVENT_LENGTH, makeSseParser } from "./sse.js"
import { NEVER_SENT_ERRORS, reasonOfCode, type RequestTimeout, TransportError } from "./TransportError.js"

/**
 * Reading a Streamable HTTP server's answer to one POST: a JSON body, or an SSE stream whose
 * events may bring notifications and server requests before the response.
 */

/** The largest JSON answer the gateway reads (16 Mi characters); a larger one fails the request. */
const MAX_RESPONSE_LENGTH = MAX_EVENT_LENGTH

/**
 * Statuses by which a server refuses the message itself (malformed, too large, wrong type,
 * headers too large: a mirrored argument of the 2026-07-28 revision can make them so):
 * the client's mistake, not a sign of the instance's health.
 */
const CLIENT_FAULT_STATUSES: ReadonlySet<number> = new Set([400, 413, 415, 422, 431])

/** Headers of an answer, as Http1Client gives them (names lower-cased). */
export type AnswerHeaders = Http1Head["headers"]

/** An answer to a POST: the response and the answer's headers. */
export type Posted = { readonly response: JsonRpcResponse; readonly headers: AnswerHeaders }

/** The server no longer knows our session: initialize again and resend. */
export class SessionGone {
  readonly _tag = "SessionGone"
}

export type PostFailure = TransportError | SessionGone | RequestTimeout

/** Handlers for an answer whose body nobody reads (a notification's 202, a DELETE): only its end matters. */
export const discardAnswer = (onDone: () => void, onError: (e: Http1Error) => void = onDone): Http1Handler => ({
  onHead: () => {},
  onData: () => {},
  onEnd: onDone,
  onError
})

/**
 * The handlers that read the answer to request `id`: `done` once with its response or why
 * there is none (`abort` closes the exchange when reading must stop early); every other
 * message the answer carries (notifications, server requests) goes to `onMessage`.
 * `sessionId`: the session the request was sent on; a server that answers 404 (or 400 naming
 * the session) has forgotten it: SessionGone.
 */
export const readAnswer = (
  instanceId: string,
  id: number,
  sessionId: string | undefined,
  log: ConnectionLog,
  onMessage: (message: unknown) => void,
  done: (outcome: Exit.Exit<Posted, PostFailure>) => void,
  abort: () => void
): Http1Handler => {
  const failed = (reason: TransportError["reason"], message: string, reachedBackend = true) =>
    done(Exit.fail(new TransportError({ instanceId, reason, message, reachedBackend })))
  let gotResponse = false
  let status = 0
  let type = ""
  let answerHeaders: AnswerHeaders = {}
  /** The SSE parser, when the answer is a stream; otherwise the JSON body collects in `text`. */
  let feed: ((chunk: string) => void) | undefined
  let text = ""
  return {
    onHead: (head) => {
      gotResponse = true
      status = head.status
      answerHeaders = head.headers
      type = head.headers["content-type"] ?? ""
      if (status >= 200 && status < 300 && type.startsWith("text/event-stream")) {
        feed = makeSseParser((event) => {
          if (event.event !== "message" || event.data === "") return
          const parsed = parseServerMessage(event.data)
          if (parsed.ok) {
            const message = parsed.value
            return isResponse(message) && message.id === id ? done(Exit.succeed({ response: message, headers: answerHeaders })) : onMessage(message)
          }
          if (parsed.reason === "not JSON") return log.debug(`ignoring an SSE event that is not JSON`)
          // (Whatever it was, this request's answer cannot come through it.)
          failed("protocol", tooDeepMessage)
          abort()
        }, { onOversized: () => log.warn(`dropped an SSE event larger than ${MAX_EVENT_LENGTH} characters`) })
      }
    },
    onData: (chunk) => {
      if (feed !== undefined) return feed(chunk)
      text += chunk
      if (text.length > MAX_RESPONSE_LENGTH) {
        failed("protocol", `the answer is larger than ${MAX_RESPONSE_LENGTH} characters`)
        abort()
      }
    },
    onEnd: () => {
      if (feed !== undefined) return failed("protocol", "the SSE stream ended without a response")
      const parsed = text === "" ? undefined : parseServerMessage(text)
      if (parsed?.ok === false && parsed.reason === "too deep") return failed("protocol", tooDeepMessage)
      const message = parsed?.ok === true ? parsed.value : undefined
      // (Servers that answer a forgotten session with 400 rather than 404 say so only in words.)
      if (sessionId !== undefined && (status === 404 || (status === 400 && /session/i.test(text)))) {
        return done(Exit.fail(new SessionGone()))
      }
      if (isResponse(message) && (message.id === id || (status >= 400 && message.id === null))) {
        // A JSON-RPC answer, even on an error status, is the server's word: pass it on.
        if (message.id === id) return done(Exit.succeed({ response: message, headers: answerHeaders }))
      }
      if (status >= 200 && status < 300) {
        return failed("protocol", `expected a JSON-RPC response, got HTTP ${status} ${type || "without a body"}`)
      }
      failed(CLIENT_FAULT_STATUSES.has(status) ? "rejected" : "http_status", `HTTP ${status}${text ? `: ${text.slice(0, 200)}` : ""}`)
    },
    onError: (e) => {
      if (gotResponse) return failed("reset", `${feed !== undefined ? "SSE stream" : "response"} failed: ${e.message}`)
      failed(e.answered ? "reset" : reasonOfCode(e.code), `${e.code}: ${e.message}`, e.answered || !NEVER_SENT_ERRORS.has(e.code))
    }
  }
}
