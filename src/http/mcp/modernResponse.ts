import { Cause, Exit, Option } from "effect"
import type * as http from "node:http"
import type { DispatchError, SessionLimitReached } from "../../domain/GatewayError.js"
import { ErrorCode, type JsonRpcId } from "../../domain/JsonRpc.js"
import { LATEST_PROTOCOL_VERSION } from "../../domain/Protocol.js"
import { sendJson } from "../raw.js"
import { lagKeyOf, responseWriter, type ResponseWriter } from "../ResponseFlow.js"
import { META } from "../../domain/ModernProtocol.js"
import type { ModernRequest } from "./modernEnvelope.js"
import { rpcError, sessionFailureAnswer } from "./rpc.js"

/** The `initialize` an old backend gets on behalf of a modern client (its own info and capabilities). */
export const initializeParamsOf = (request: ModernRequest) => ({
  protocolVersion: LATEST_PROTOCOL_VERSION,
  capabilities: request.capabilities,
  clientInfo: request.clientInfo ?? { name: "unknown", version: "0" }
})

/** The server's info, as every modern result carries it in `_meta`. */
export const serverInfoMeta = (initialized: Record<string, unknown>) =>
  initialized.serverInfo === undefined ? {} : { [META.serverInfo]: initialized.serverInfo }

const frame = (payload: unknown) => `event: message\ndata: ${JSON.stringify(payload)}\n\n`

/**
 * One HTTP response of a modern request: a single JSON answer, or, when notifications come
 * first (progress, a listen stream's events), an SSE stream that the answer ends.
 */
export class Responder {
  /** Set once the answer is a stream. A client that lags has its events bounded and timed (ResponseFlow); one cut off closes the stream, which cancels the request. */
  private writer: ResponseWriter | undefined
  constructor(readonly res: http.ServerResponse) {}

  private get open() {
    return !this.res.writableEnded && !this.res.destroyed
  }

  event(payload: unknown) {
    if (!this.open) return
    if (this.writer === undefined) {
      this.res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache, no-transform", "x-accel-buffering": "no" })
      this.writer = responseWriter(this.res)
    }
    this.writer.event(frame(payload), lagKeyOf(payload))
  }

  /** An SSE comment (`: text`), once the stream is open. */
  comment(text: string) {
    if (this.writer !== undefined && this.open) this.writer.event(`: ${text}\n\n`, `comment:${text}`)
  }

  answer(status: number, payload: unknown, headers?: http.OutgoingHttpHeaders) {
    if (this.writer === undefined) return sendJson(this.res, status, payload, headers)
    if (this.open) this.writer.end(frame(payload))
  }

  /** A request that failed: the failure's answer, a 500 for a defect (logged), nothing if it was cancelled. */
  failed(id: JsonRpcId, exit: Exit.Failure<unknown, DispatchError | SessionLimitReached>, logDefect: (cause: Cause.Cause<unknown>) => void) {
    const failure = Cause.failureOption(exit.cause)
    if (Option.isSome(failure)) {
      const answer = sessionFailureAnswer(id, failure.value)
      return this.answer(answer.status, answer.body, answer.headers)
    }
    if (!Cause.isInterruptedOnly(exit.cause)) {
      logDefect(exit.cause)
      this.answer(500, rpcError(id, ErrorCode.InternalError, "the gateway failed to handle the request; see its log"))
    }
  }
}
