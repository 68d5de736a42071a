import { Data } from "effect"

/**
 * A request to an instance failed below the MCP level. `reachedBackend` is false only when the
 * request provably never got to the server (connection refused, process not running): only then
 * is it safe to send a non-idempotent request such as `tools/call` to another instance.
 */
export class TransportError extends Data.TaggedError("TransportError")<{
  readonly instanceId: string
  readonly message: string
  readonly reachedBackend: boolean
  /**
   * The message itself was refused as malformed (by the backend with a 4xx, or by the gateway
   * before sending: it cannot be serialised). The client's mistake, not the instance's: it
   * counts toward no health, outlier or breaker state, and is never retried elsewhere.
   */
  readonly clientFault?: boolean | undefined
  /**
   * The server ended the client's session (it answered "session not found"): the session is
   * over, the instance is not at fault (a session another replica ended, or the server's own
   * timeout). It counts toward no health, outlier or breaker state either.
   */
  readonly sessionEnded?: boolean | undefined
}> {}

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
      message: `the message cannot be sent: ${(e as Error).message}`,
      reachedBackend: false,
      clientFault: true
    })
  }
}
