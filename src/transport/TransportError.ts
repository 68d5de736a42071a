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
