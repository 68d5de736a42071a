import { Data } from "effect"
import { ErrorCode, type JsonRpcErrorObject } from "./JsonRpc.js"

/** Errors of the gateway's own policy, independent of how they reach a client (see http/ApiError.ts). */

export class TemplateNotFound extends Data.TaggedError("TemplateNotFound")<{ readonly template: string }> {
  get message() {
    return `unknown template "${this.template}"`
  }
}

export class InstanceNotFound extends Data.TaggedError("InstanceNotFound")<{
  readonly template: string
  readonly instanceId: string
}> {
  get message() {
    return `template "${this.template}" has no instance "${this.instanceId}"`
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
}

/**
 * The client's message was refused as malformed (by the backend, or by the gateway before it
 * was sent): a 400, never counted against the instance.
 */
export class RequestRejected extends Data.TaggedError("RequestRejected")<{
  readonly template: string
  readonly instanceId: string
  readonly message: string
}> {}

/** A JSON-RPC error answered by a backend: passed through to the client. */
export class BackendError extends Data.TaggedError("BackendError")<{
  readonly template: string
  readonly instanceId: string
  readonly error: JsonRpcErrorObject
}> {
  get message() {
    return this.error.message
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

/** The HTTP status a dispatch error is answered with on the REST face (the request log says it too). */
export const httpStatusOf = (error: DispatchError): number => {
  switch (error._tag) {
    case "TemplateNotFound":
    case "InstanceNotFound":
      return 404
    case "NoHealthyInstance":
    case "InstanceUnavailable":
      return 503
    case "AllAttemptsFailed":
    case "ListTooLong":
    case "TransformFailed":
      return 502
    case "UpstreamTimeout":
      return 504
    case "RequestRejected":
      return 400
    case "BackendError":
      return httpStatusOfMcpError(error.error.code)
  }
}

/** The kind of a dispatch error, as the error envelope's `type`, the request log's and the metrics' `outcome` say it. */
export const errorKind = (error: DispatchError): string => {
  switch (error._tag) {
    case "TemplateNotFound":
      return "template_not_found"
    case "InstanceNotFound":
      return "instance_not_found"
    case "NoHealthyInstance":
      return "no_healthy_instance"
    case "InstanceUnavailable":
      return "instance_unavailable"
    case "AllAttemptsFailed":
      return "upstream_failed"
    case "UpstreamTimeout":
      return "upstream_timeout"
    case "RequestRejected":
      return "invalid_request"
    case "ListTooLong":
      return "list_too_long"
    case "BackendError":
      return "mcp_error"
    case "TransformFailed":
      return "transform_failed"
  }
}
