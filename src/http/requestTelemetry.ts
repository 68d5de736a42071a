import { Effect, type Fiber, Tracer } from "effect"
import type * as http from "node:http"
import { requestRefs } from "../observability/requestRefs.js"
import type { RunEffect } from "./raw.js"

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/

/**
 * Starts a request's work in the server's runtime with what it carries: its request id on every
 * log line, and, with tracing on, a `gateway.request` span (server kind) that continues the
 * client's trace when it sent a W3C `traceparent`. With tracing off no span is made: the request
 * path pays nothing for it.
 * (The request id goes on as the fiber is forked: observability/requestRefs.ts.)
 */
export const makeRequestTelemetry = (tracing: boolean) =>
  Object.assign(
    (run: RunEffect, req: http.IncomingMessage, requestId: string, attributes: () => Record<string, unknown>) =>
    <A, E>(effect: Effect.Effect<A, E>): Fiber.RuntimeFiber<A, E> => {
      const options = { updateRefs: requestRefs(requestId) }
      if (!tracing) return run(effect, options)
      const given = TRACEPARENT.exec(String(req.headers.traceparent ?? ""))
      const parent = given === null ? undefined : Tracer.externalSpan({ traceId: given[1]!, spanId: given[2]!, sampled: given[3] === "01" })
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
      /**
       * Whether requests are traced: a request served without a fiber (Dispatcher.callNow) has
       * no span, so with tracing on the request paths take their fibers.
       */
      tracing
    }
  )
