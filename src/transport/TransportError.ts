import { Data } from "effect"

/**
 * Why a request to an instance failed below the MCP level, said where the failure is found so
 * that nobody reads it back out of the message:
 * - `refused`: the connection could not be made (refused, unknown host, unreachable): nothing was sent;
 * - `reset`: the connection broke, or the server closed it, before the answer ended;
 * - `timeout`: no answer to the opening of a session (`initialize`, `server/discover`) in time
 *   (a request's own deadline is a RequestTimeout);
 * - `closed`: the connection is closed on the gateway's side (the instance removed, its pool closed);
 * - `unavailable`: the instance cannot take it now (its process not running, restarting or
 *   failed; no room for the caller's own process);
 * - `protocol`: the server answered, but not with a usable answer (not JSON-RPC, too large or
 *   too deep, a refused `initialize`, a version the gateway does not speak);
 * - `http_status`: the server answered with an HTTP error status that is not the client's fault;
 * - `rejected`: the message itself was refused as malformed (by the server with a 4xx, or by the
 *   gateway before sending: it cannot be serialised, a header no HTTP message may carry);
 * - `session_ended`: the server ended the client's session (it answered "session not found").
 */
export type TransportErrorReason =
  | "refused"
  | "reset"
  | "timeout"
  | "closed"
  | "unavailable"
  | "protocol"
  | "http_status"
  | "rejected"
  | "session_ended"

/**
 * A request to an instance failed below the MCP level. `reachedBackend` is false only when the
 * request provably never got to the server (connection refused, process not running): only then
 * is it safe to send a non-idempotent request such as `tools/call` to another instance.
 * What it means to a client (kind, HTTP status, JSON-RPC code) is read from its `reason`.
 */
export class TransportError extends Data.TaggedError("TransportError")<{
  readonly instanceId: string
  readonly reason: TransportErrorReason
  readonly message: string
  readonly reachedBackend: boolean
}> {
  /**
   * The client's mistake, not the instance's (`rejected`): it counts toward no health, outlier
   * or breaker state, and is never retried elsewhere.
   */
  get clientFault(): boolean {
    return this.reason === "rejected"
  }

  /**
   * The session is over, the instance not at fault (`session_ended`: a session another replica
   * ended, or the server's own timeout): it counts toward no health, outlier or breaker state.
   */
  get sessionEnded(): boolean {
    return this.reason === "session_ended"
  }

  /** The error envelope's `type`, the request log's and the metrics' `outcome`. */
  get kind(): "invalid_request" | "upstream_failed" {
    return this.reason === "rejected" ? "invalid_request" : "upstream_failed"
  }

  get httpStatus(): 400 | 502 {
    return this.reason === "rejected" ? 400 : 502
  }

  /** -32600 (invalid request) for a refused message; -32603 (internal error) for everything else. */
  get rpcCode(): -32600 | -32603 {
    return this.reason === "rejected" ? -32600 : -32603
  }

  /**
   * May another instance take the request? Never the client's refused message; a
   * non-idempotent one (`idempotent` false: a `tools/call`) only when it provably never reached
   * the server.
   */
  retryable(idempotent: boolean): boolean {
    return this.reason !== "rejected" && (idempotent || !this.reachedBackend)
  }
}

/** Connection errors that prove a request never left for the server (safe to send elsewhere). */
export const NEVER_SENT_ERRORS: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ECONNABORTED"
])

/**
 * The reason of a failed connection, from the system's error code (never its message):
 * ECONNABORTED is the gateway's own pool closing, the rest of NEVER_SENT_ERRORS a connection
 * that could not be made, ETIMEDOUT a connect that took too long, HPE_INVALID an answer that is
 * not HTTP (Http1Client's); anything else broke it.
 */
export const reasonOfCode = (code: string | undefined): TransportErrorReason =>
  code === "ECONNABORTED"
    ? "closed"
    : code !== undefined && NEVER_SENT_ERRORS.has(code)
    ? "refused"
    : code === "ETIMEDOUT"
    ? "timeout"
    : code === "HPE_INVALID"
    ? "protocol"
    : "reset"

/**
 * The instance did not answer within the time the caller allowed. The request was cancelled at
 * the backend (stdio: `notifications/cancelled`; HTTP: the connection was closed).
 */
export class RequestTimeout extends Data.TaggedError("RequestTimeout")<{
  readonly instanceId: string
  readonly timeoutMs: number
}> {
  get message() {
    return `no answer within ${this.timeoutMs} ms`
  }

  get kind(): "upstream_timeout" {
    return "upstream_timeout"
  }

  get httpStatus(): 504 {
    return 504
  }

  get rpcCode(): -32603 {
    return -32603
  }
}

/**
 * Serialises an outgoing message; a message that cannot be (a cycle is impossible from parsed
 * JSON, but nesting deep enough to overflow the stack is not) is the sender's mistake.
 */
export const serialize = (instanceId: string, message: unknown): string | TransportError => {
  try {
    return JSON.stringify(message)
  } catch (e) {
    return new TransportError({
      instanceId,
      reason: "rejected",
      message: `the message cannot be sent: ${(e as Error).message}`,
      reachedBackend: false
    })
  }
}
