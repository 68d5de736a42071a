import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import { Cause, Schema } from "effect"
import type { DispatchError } from "../domain/GatewayError.js"

/**
 * The one error shape of every answer: `{"error":{"status","type","message","request_id",...}}`.
 * `status` repeats the HTTP status; it also tells the error classes below apart when HttpApi
 * encodes them (classes of the same fields would otherwise all encode as the first).
 */
const errorBody = <S extends number>(status: S) =>
  Schema.Struct({
    status: Schema.Literal(status),
    type: Schema.String,
    message: Schema.String,
    request_id: Schema.String,
    /** JSON-RPC error code, for `mcp_error` (a backend's own error, passed through). */
    code: Schema.optional(Schema.Number),
    data: Schema.optional(Schema.Unknown),
    /** One line per problem, each naming the field, for `invalid_request`. */
    problems: Schema.optional(Schema.Array(Schema.String)),
    /** The instance whose answer this is, when one answered. */
    instance_id: Schema.optional(Schema.String),
    /** The scope the credential lacks, for `forbidden` when that is why. */
    scope: Schema.optional(Schema.String)
  })

export interface ErrorBody {
  readonly status: number
  readonly type: string
  readonly message: string
  readonly request_id: string
  readonly code?: number | undefined
  readonly data?: unknown
  readonly problems?: ReadonlyArray<string> | undefined
  readonly instance_id?: string | undefined
  readonly scope?: string | undefined
}

const errorClass = <S extends number>(status: S) => ({ error: errorBody(status) })

export class BadRequest extends Schema.Class<BadRequest>("BadRequest")(errorClass(400), HttpApiSchema.annotations({ status: 400 })) {}
export class Forbidden extends Schema.Class<Forbidden>("Forbidden")(errorClass(403), HttpApiSchema.annotations({ status: 403 })) {}
export class NotFound extends Schema.Class<NotFound>("NotFound")(errorClass(404), HttpApiSchema.annotations({ status: 404 })) {}
export class Conflict extends Schema.Class<Conflict>("Conflict")(errorClass(409), HttpApiSchema.annotations({ status: 409 })) {}
export class PayloadTooLarge extends Schema.Class<PayloadTooLarge>("PayloadTooLarge")(errorClass(413), HttpApiSchema.annotations({ status: 413 })) {}
export class InternalError extends Schema.Class<InternalError>("InternalError")(errorClass(500), HttpApiSchema.annotations({ status: 500 })) {}
export class BadGateway extends Schema.Class<BadGateway>("BadGateway")(errorClass(502), HttpApiSchema.annotations({ status: 502 })) {}
export class ServiceUnavailable extends Schema.Class<ServiceUnavailable>("ServiceUnavailable")(errorClass(503), HttpApiSchema.annotations({ status: 503 })) {}
export class GatewayTimeout extends Schema.Class<GatewayTimeout>("GatewayTimeout")(errorClass(504), HttpApiSchema.annotations({ status: 504 })) {}

export type ApiError =
  | BadRequest
  | Forbidden
  | NotFound
  | Conflict
  | PayloadTooLarge
  | InternalError
  | BadGateway
  | ServiceUnavailable
  | GatewayTimeout

const classes = {
  400: BadRequest,
  403: Forbidden,
  404: NotFound,
  409: Conflict,
  413: PayloadTooLarge,
  500: InternalError,
  502: BadGateway,
  503: ServiceUnavailable,
  504: GatewayTimeout
} as const
export type ErrorStatus = keyof typeof classes

/** An error answer as status + body (+ headers such as Retry-After): what the lean request path writes directly. */
export interface ErrorAnswer {
  readonly status: number
  readonly body: { readonly error: ErrorBody }
  readonly headers?: Readonly<Record<string, string>> | undefined
}

export const errorAnswer = (
  status: number,
  type: string,
  message: string,
  requestId: string,
  extra?: Partial<Omit<ErrorBody, "status" | "type" | "message" | "request_id">>
): ErrorAnswer => ({ status, body: { error: { status, type, message, request_id: requestId, ...extra } } })

/** The same answer as the HttpApi error class of its status. */
export const toApiError = (answer: ErrorAnswer): ApiError => {
  const Class: new(body: any) => ApiError = classes[answer.status as ErrorStatus] ?? InternalError
  return new Class(Class === InternalError ? { error: { ...answer.body.error, status: 500 } } : answer.body)
}

/** A dispatch error as the error envelope: its status, kind and message are the error's own (domain/GatewayError.ts). */
export const dispatchErrorAnswer = (error: DispatchError, requestId: string): ErrorAnswer => {
  const answer = errorAnswer(error.httpStatus, error.kind, error.message, requestId, detailsOf(error))
  return error._tag === "NoHealthyInstance" || error._tag === "InstanceUnavailable" ? retryLater(answer, error.retryAfterSeconds) : answer
}

/** What the envelope says beyond the message: the instance that answered or refused, a backend's own code and data. */
const detailsOf = (error: DispatchError): Partial<ErrorBody> | undefined => {
  switch (error._tag) {
    case "InstanceUnavailable":
    case "RequestRejected":
    case "ListTooLong":
      return { instance_id: error.instanceId }
    case "BackendError":
      return {
        code: error.error.code,
        // (None when the gateway refused it for the server: a hidden tool, a transform's refusal.)
        ...(error.instanceId === "" ? {} : { instance_id: error.instanceId }),
        ...(error.error.data === undefined ? {} : { data: error.error.data })
      }
    default:
      return undefined
  }
}

/** A 503 says when to come back: the soonest an instance may be available again. */
const retryLater = (answer: ErrorAnswer, seconds: number): ErrorAnswer => ({
  ...answer,
  headers: { "retry-after": String(Math.max(1, Math.ceil(seconds))) }
})

/** A defect (a bug of ours, or of a plugin): logged in full by the caller, answered without internals. */
export const defectAnswer = (cause: Cause.Cause<unknown>, requestId: string): ErrorAnswer =>
  errorAnswer(
    500,
    "internal_error",
    Cause.isInterruptedOnly(cause) ? "the request was interrupted" : "the gateway failed to handle the request; see its log",
    requestId
  )
