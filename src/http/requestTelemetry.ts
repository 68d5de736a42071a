import { Effect, type Fiber, FiberRef, FiberRefs, HashMap, Option, Tracer } from "effect"
import type * as http from "node:http"
import type { RunEffect } from "./raw.js"

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/

/**
 * Starts a request's work in the server's runtime with what it carries: its request id on every
 * log line, and, with tracing on, a `gateway.request` span (server kind) that continues the
 * client's trace when it sent a W3C `traceparent`. With tracing off no span is made: the request
 * path pays nothing for it.
 *
 * The request id is set on the new fiber's log annotations as it is forked (`updateRefs`), not
 * with `Effect.annotateLogs`: the same annotation, at a tenth of the cost on every request.
 */
export const makeRequestTelemetry = (tracing: boolean) =>
  Object.assign(
    (run: RunEffect, req: http.IncomingMessage, requestId: string, attributes: () => Record<string, unknown>) =>
    <A, E>(effect: Effect.Effect<A, E>): Fiber.RuntimeFiber<A, E> => {
      const options = {
        updateRefs: (refs: FiberRefs.FiberRefs, fiberId: Parameters<typeof FiberRefs.updateAs>[1]["fiberId"]) =>
          FiberRefs.updateManyAs(refs, {
            entries: [
              [FiberRef.currentLogAnnotations, [[fiberId, HashMap.set(FiberRefs.getOrDefault(refs, FiberRef.currentLogAnnotations), "request_id", requestId as unknown)]]],
              // A request that fails is answered (4xx, 5xx, a JSON-RPC error) and counted: not an
              // "unhandled error" for the runtime to log, with a stack trace, at debug.
              [FiberRef.unhandledErrorLogLevel, [[fiberId, Option.none()]]]
            ]
          })
      }
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
