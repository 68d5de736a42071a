import { Data } from "effect"
import { ErrorCode, type JsonRpcErrorObject } from "./JsonRpc.js"

/**
 * Errors of the gateway's own policy. Each knows what it means to a client, in one place (its
 * class): `kind` (the error envelope's `type`, the request log's and the metrics' `outcome`),
 * `httpStatus` (the REST face's answer) and `rpcCode` (the code of the JSON-RPC error the MCP
 * endpoint answers a request with). http/ApiError.ts, the Dispatcher and the sessions ask the
 * error; none keeps a table. (Transport errors carry theirs too: transport/TransportError.ts.)
 */

export class TemplateNotFound extends Data.TaggedError("TemplateNotFound")<{ readonly template: string }> {
  get message() {
    return `unknown template "${this.template}"`
  }

  get kind(): "template_not_found" {
    return "template_not_found"
  }

  get httpStatus(): 404 {
    return 404
  }

  get rpcCode(): number {
    return ErrorCode.InternalError
  }
}

export class InstanceNotFound extends Data.TaggedError("InstanceNotFound")<{
  readonly template: string
  readonly instanceId: string
}> {
  get message() {
    return `template "${this.template}" has no instance "${this.instanceId}"`
  }

  get kind(): "instance_not_found" {
    return "instance_not_found"
  }

  get httpStatus(): 404 {
    return 404
  }

  get rpcCode(): number {
    return ErrorCode.InternalError
  }
}

export class NoHealthyInstance extends Data.TaggedError("NoHealthyInstance")<{
  readonly template: string
  readonly total: number
  /** When to try again, in seconds: until the soonest instance may be back (an ejection ends, a breaker trial, a restart, a probe). */
  readonly retryAfterSeconds: number
}> {
  get message() {
    return this.total === 0
      ? `template "${this.template}" has no instances`
      : `template "${this.template}" has no healthy instance (0 of ${this.total})`
  }

  get kind(): "no_healthy_instance" {
    return "no_healthy_instance"
  }

  get httpStatus(): 503 {
    return 503
  }

  get rpcCode(): number {
    return ErrorCode.InternalError
  }
}

/**
 * The one instance a request must go to (a session's pinned instance, the later pages of a
 * list) cannot take it now: removed, failed, or its breaker is open.
 */
export class InstanceUnavailable extends Data.TaggedError("InstanceUnavailable")<{
  readonly template: string
  readonly instanceId: string
  readonly reason: string
  readonly retryAfterSeconds: number
}> {
  get message() {
    return `instance "${this.instanceId}" of template "${this.template}" cannot take requests now: ${this.reason}`
  }

  get kind(): "instance_unavailable" {
    return "instance_unavailable"
  }

  get httpStatus(): 503 {
    return 503
  }

  get rpcCode(): number {
    return ErrorCode.InternalError
  }
}

export interface FailedAttempt {
  readonly instanceId: string
  readonly message: string
}

export class AllAttemptsFailed extends Data.TaggedError("AllAttemptsFailed")<{
  readonly template: string
  readonly attempts: ReadonlyArray<FailedAttempt>
  /** Set when a failover was possible but not safe (a tools/call that may have reached a backend). */
  readonly notRetriedReason?: string | undefined
}> {
  get message() {
    const tried = this.attempts.map((a) => `${a.instanceId}: ${a.message}`).join("; ")
    return `every attempt on template "${this.template}" failed (${tried})` +
      (this.notRetriedReason ? `; ${this.notRetriedReason}` : "")
  }

  get kind(): "upstream_failed" {
    return "upstream_failed"
  }

  get httpStatus(): 502 {
    return 502
  }

  get rpcCode(): number {
    return ErrorCode.InternalError
  }
}

export class UpstreamTimeout extends Data.TaggedError("UpstreamTimeout")<{
  readonly template: string
  readonly timeoutSeconds: number
  /** The timeout restarts with each progress report: then it was this long without one. */
  readonly resetsOnProgress?: boolean | undefined
}> {
  get message() {
    return this.resetsOnProgress
      ? `template "${this.template}" did not answer (or report progress) within ${this.timeoutSeconds}s`
      : `template "${this.template}" did not answer within ${this.timeoutSeconds}s`
  }

  get kind(): "upstream_timeout" {
    return "upstream_timeout"
  }

  get httpStatus(): 504 {
    return 504
  }

  get rpcCode(): number {
    return ErrorCode.InternalError
  }
}

/**
 * The client's message was refused as malformed (by the backend, or by the gateway before it
 * was sent): a 400, never counted against the instance.
 */
export class RequestRejected extends Data.TaggedError("RequestRejected")<{
  readonly template: string
  readonly instanceId: string
  readonly message: string
}> {
  get kind(): "invalid_request" {
    return "invalid_request"
  }

  get httpStatus(): 400 {
    return 400
  }

  get rpcCode(): number {
    return ErrorCode.InvalidRequest
  }
}

/** A JSON-RPC error answered by a backend: passed through to the client. */
export class BackendError extends Data.TaggedError("BackendError")<{
  readonly template: string
  readonly instanceId: string
  readonly error: JsonRpcErrorObject
  /**
   * The tool or prompt the request named, when the gateway refused it for the server because
   * the template hides it (an aggregate renames it back to the name its client asked for).
   */
  readonly unknownName?: string | undefined
}> {
  get message() {
    return this.error.message
  }

  get kind(): "mcp_error" {
    return "mcp_error"
  }

  /** The server's own error code decides (httpStatusOfMcpError). */
  get httpStatus(): number {
    return httpStatusOfMcpError(this.error.code)
  }

  /** Passed through: the server's own code. */
  get rpcCode(): number {
    return this.error.code
  }
}

/**
 * A list whose backend kept answering with another `nextCursor` past `max_list_pages`: refused
 * rather than returned truncated as if complete.
 */
export class ListTooLong extends Data.TaggedError("ListTooLong")<{
  readonly template: string
  readonly instanceId: string
  readonly pages: number
}> {
  get message() {
    return `instance "${this.instanceId}" of template "${this.template}" kept paging past ${this.pages} pages ` +
      `(gateway.max_list_pages); the list was not returned, as it would be incomplete`
  }

  get kind(): "list_too_long" {
    return "list_too_long"
  }

  get httpStatus(): 502 {
    return 502
  }

  get rpcCode(): number {
    return ErrorCode.InternalError
  }
}

/**
 * A transform plugin failed a request (it threw, or gave up): the gateway's fault, not the
 * client's nor the server's, answered with a 502 naming the transform. Nothing else fails with it.
 */
export class TransformFailed extends Data.TaggedError("TransformFailed")<{
  /** The template, or the virtual server, whose transform it is. */
  readonly template: string
  readonly transform: string
  readonly reason: string
}> {
  get message() {
    return `transform "${this.transform}" of ${this.template} failed: ${this.reason}`
  }

  get kind(): "transform_failed" {
    return "transform_failed"
  }

  get httpStatus(): 502 {
    return 502
  }

  get rpcCode(): number {
    return ErrorCode.InternalError
  }
}

export type DispatchError =
  | TemplateNotFound
  | InstanceNotFound
  | InstanceUnavailable
  | NoHealthyInstance
  | AllAttemptsFailed
  | UpstreamTimeout
  | RequestRejected
  | ListTooLong
  | BackendError
  | TransformFailed

/** An MCP session cannot be opened: the gateway's cap, or the client's, is reached, or a template's process slots are all busy. */
export class SessionLimitReached extends Data.TaggedError("SessionLimitReached")<{
  /**
   * `gateway`: max_sessions (a 503); `client`: max_sessions_per_client (a 429); `instance`: every
   * process slot (max_sessions_per_instance) of every instance of `template` is held by a session
   * in use, none idle to end (a 503).
   */
  readonly scope: "gateway" | "client" | "instance"
  readonly limit: number
  readonly template?: string | undefined
}> {
  get message() {
    return this.scope === "gateway"
      ? `the gateway has ${this.limit} MCP sessions open (gateway.max_sessions); try again later`
      : this.scope === "instance"
      ? `every process slot of template "${this.template}" is busy: each of its instances runs ${this.limit} sessions with a ` +
        `process of their own (max_sessions_per_instance), each with a request in flight or a stream open; try again shortly`
      : `this client has ${this.limit} MCP sessions open (gateway.max_sessions_per_client); end some (DELETE) first`
  }

  /** When to try again: a busy slot frees as soon as its session's request ends; the gateway's cap, later. */
  get retryAfterSeconds(): number {
    return this.scope === "instance" ? SLOTS_BUSY_RETRY_AFTER_SECONDS : 60
  }

  get kind(): "session_limit" {
    return "session_limit"
  }

  /** A client over its own cap is told to slow down (429); the gateway or the template being full is a 503. */
  get httpStatus(): 429 | 503 {
    return this.scope === "client" ? 429 : 503
  }

  get rpcCode(): number {
    return ErrorCode.InternalError
  }
}

/** Retry-After of a session refused because every process slot is busy (a request ending frees one). */
export const SLOTS_BUSY_RETRY_AFTER_SECONDS = 5

/** A registration the registry refuses: duplicate id, template clash. */
export class RegistrationConflict extends Data.TaggedError("RegistrationConflict")<{ readonly message: string }> {}

/** A registration that is not allowed by configuration (e.g. stdio over the API). */
export class RegistrationForbidden extends Data.TaggedError("RegistrationForbidden")<{ readonly message: string }> {}

/** The shared registry (Redis) cannot be reached: a registration is refused (503) until it is back. */
export class RegistryUnavailable extends Data.TaggedError("RegistryUnavailable")<{ readonly message: string }> {}

/** The registry file could not be read or written. */
export class RegistryStorageError extends Data.TaggedError("RegistryStorageError")<{
  readonly path: string
  readonly message: string
}> {}

/**
 * How a backend's JSON-RPC error reaches a REST client: invalid params 400, and a capability the
 * caller lacks (-32021: a modern server that needs input the REST face cannot give) 400;
 * unknown method or resource 404; else 502.
 */
export const httpStatusOfMcpError = (code: number): number =>
  code === ErrorCode.InvalidParams || code === -32021
    ? 400
    : code === ErrorCode.MethodNotFound || code === ErrorCode.ResourceNotFound
    ? 404
    : 502
