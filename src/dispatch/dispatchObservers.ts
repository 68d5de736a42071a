import { type Clock, Context, Effect, Exit, Option, type Tracer } from "effect"
import type { InstanceState } from "../instance/InstanceState.js"
import type { TemplateState } from "../registry/Registry.js"
import type { AttemptObserver } from "./RequestAttempts.js"

/** Which driver ran a request's attempts: stamped on its `gateway.attempt` spans, so a trace says it. */
export type Driver = "callback" | "effect"

/** One attempt's spans: `traceparent` goes on to the backend; `end` when the attempt ends. */
export interface AttemptTrace {
  readonly traceparent: string
  readonly end: (exit: Exit.Exit<unknown, unknown>) => void
}

/**
 * What watches one request: the routing line at debug, and the spans with tracing on. It wraps
 * the dispatch core (RequestAttempts calls `chose`; the drivers call `attempt` around a send)
 * and never changes how the request runs: both drivers take the same observer.
 */
export interface RequestObserver extends AttemptObserver {
  /** The spans of one attempt (undefined with tracing off). */
  readonly attempt: (instance: InstanceState, attempt: number, method: string) => AttemptTrace | undefined
}

export interface ObserverSettings {
  /** Spans, through this tracer and clock (undefined: tracing off). */
  readonly tracing: { readonly tracer: Tracer.Tracer; readonly clock: Clock.Clock } | undefined
  /** Routing lines at debug (only when the log level lets them through: building them is work). */
  readonly logRouting: boolean
}

/**
 * Makes a request's observer, or undefined when nothing observes (tracing off, no routing lines):
 * then the request path allocates nothing for it.
 */
export const makeObservers = (settings: ObserverSettings): (
  template: TemplateState,
  method: string,
  driver: Driver,
  /** The request's span (`gateway.request`), the parent of the core's spans. */
  parent: Tracer.AnySpan | undefined,
  /** Writes a log line with the request's annotations (its request id). */
  log: (line: Effect.Effect<void>) => void
) => RequestObserver | undefined => {
  if (settings.tracing === undefined && !settings.logRouting) return () => undefined
  const tracing = settings.tracing
  const now = () => tracing!.clock.unsafeCurrentTimeNanos()
  const spanOf = (name: string, parent: Tracer.AnySpan | undefined, kind: Tracer.SpanKind, attributes: Record<string, unknown>) => {
    const span = tracing!.tracer.span(name, parent === undefined ? Option.none() : Option.some(parent), Context.empty(), [], now(), kind, {
      captureStackTrace: false
    })
    for (const key in attributes) span.attribute(key, attributes[key])
    return span
  }

  return (template, method, driver, parent, log) => ({
    chose: (candidates, instance, attempt) => {
      if (tracing !== undefined) {
        const span = spanOf("gateway.select", parent, "internal", { "mcp.template": template.name, "gateway.candidates": candidates.length })
        span.end(now(), Exit.void)
      }
      if (settings.logRouting && instance !== undefined) {
        log(Effect.logDebug("route").pipe(Effect.annotateLogs({
          template: template.name,
          operation: method,
          strategy: candidates.length === 1 ? "only-candidate" : template.settings.strategy,
          attempt,
          candidates: candidates.map((i) => i.id).join(","),
          instance: instance.id,
          driver
        })))
      }
    },
    attempt: (instance, attempt, method) => {
      if (tracing === undefined) return undefined
      const attemptSpan = spanOf("gateway.attempt", parent, "internal", { "mcp.instance": instance.id, "gateway.attempt": attempt, "gateway.driver": driver })
      const backend = spanOf("gateway.backend", attemptSpan, "client", {
        "mcp.instance": instance.id,
        "mcp.transport": instance.definition.transport,
        "mcp.method": method
      })
      return {
        // The backend call's span goes on as W3C trace context.
        traceparent: `00-${backend.traceId}-${backend.spanId}-${backend.sampled ? "01" : "00"}`,
        end: (exit) => {
          const at = now()
          backend.end(at, exit)
          attemptSpan.end(at, exit)
        }
      }
    }
  })
}
