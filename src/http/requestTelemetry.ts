import { type Clock, Context, Effect, type Exit, type Fiber, Option, Tracer } from "effect"
import type * as http from "node:http"
import { requestRefs } from "../observability/requestRefs.js"
import type { RunEffect } from "./raw.js"

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/

/** The client's trace, when it sent a W3C `traceparent`. */
const clientSpanOf = (req: http.IncomingMessage) => {
  const given = TRACEPARENT.exec(String(req.headers.traceparent ?? ""))
  return given === null ? undefined : Tracer.externalSpan({ traceId: given[1]!, spanId: given[2]!, sampled: given[3] === "01" })
}

/** A request's `gateway.request` span made without a fiber (the request path): `end` when answered. */
export interface RequestSpan {
  readonly span: Tracer.Span
  readonly end: (exit: Exit.Exit<unknown, unknown>) => void
}

/**
 * Starts a request's work in the server's runtime with what it carries: its request id on every
 * log line, and, with tracing on, a `gateway.request` span (server kind) that continues the
 * client's trace when it sent a W3C `traceparent`. With tracing off no span is made: the request
 * path pays nothing for it.
 * (The request id goes on as the fiber is forked: observability/requestRefs.ts.)
 * `spanNow` is the same span for a request served without a fiber (Dispatcher.callNow), made
 * with the same tracer and clock: tracing observes the request path, it does not choose it.
 */
export const makeRequestTelemetry = (tracing: boolean, tracer: Tracer.Tracer, clock: Clock.Clock) =>
  Object.assign(
    (run: RunEffect, req: http.IncomingMessage, requestId: string, attributes: () => Record<string, unknown>) =>
    <A, E>(effect: Effect.Effect<A, E>): Fiber.RuntimeFiber<A, E> => {
      const options = { updateRefs: requestRefs(requestId) }
      if (!tracing) return run(effect, options)
      const parent = clientSpanOf(req)
      return run(
        Effect.withSpan(effect, "gateway.request", {
          kind: "server",
          // No call-site stack trace on every span: a cost per request that tells an operator nothing.
          captureStackTrace: false,
          attributes: { "http.request.method": req.method, "http.request.id": requestId, ...attributes() },
          ...(parent === undefined ? {} : { parent })
        }),
        options
      )
    },
    {
      /** With tracing on, the request's span for the request path (undefined with tracing off: nothing made). */
      spanNow: (req: http.IncomingMessage, requestId: string, attributes: () => Record<string, unknown>): RequestSpan | undefined => {
        if (!tracing) return undefined
        const parent = clientSpanOf(req)
        const span = tracer.span("gateway.request", parent === undefined ? Option.none() : Option.some(parent), Context.empty(), [], clock.unsafeCurrentTimeNanos(), "server", { captureStackTrace: false })
        span.attribute("http.request.method", req.method)
        span.attribute("http.request.id", requestId)
        const more = attributes()
        for (const key in more) span.attribute(key, more[key])
        return { span, end: (exit) => span.end(clock.unsafeCurrentTimeNanos(), exit) }
      }
    }
  )

/** The telemetry of the server's runtime: its tracer (the OTLP one with tracing on) and clock. */
export const requestTelemetry = (tracing: boolean) =>
  Effect.zipWith(Effect.tracer, Effect.clock, (tracer, clock) => makeRequestTelemetry(tracing, tracer, clock))
