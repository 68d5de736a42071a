import { Duration, Layer, List, Logger, LogLevel, Option, Tracer } from "effect"
import type { GatewayConfigShape } from "../../src/config/GatewayConfig.js"
import type { Via } from "./dispatchVia.js"

/**
 * The table every dispatcher case runs through: both drivers (`call`, the Effect driver;
 * `callNow`, the callback driver), each plain, with tracing on, and with routing lines at debug.
 * Observing a request must never change what a client, the stats or an instance can tell.
 */
export interface DispatchMode {
  readonly via: Via
  readonly observe: "nothing" | "tracing" | "debug"
}

export const dispatchModes: ReadonlyArray<DispatchMode> = (["call", "callNow"] as const).flatMap((via) =>
  (["nothing", "tracing", "debug"] as const).map((observe) => ({ via, observe }))
)

export const modeName = (mode: DispatchMode) => `${mode.via}, observing ${mode.observe}`

/** A span as the recording tracer keeps it. */
export interface RecordedSpan {
  readonly name: string
  readonly spanId: string
  readonly parentSpanId: string | undefined
  readonly attributes: Map<string, unknown>
  ended: boolean
}

/** A log line as the recording logger keeps it. */
export interface RecordedLine {
  readonly message: unknown
  readonly level: string
  readonly annotations: Record<string, unknown>
}

let ids = 0

/** A tracer that keeps every span it makes (what an OTLP exporter would be given). */
const recordingTracer = (spans: Array<RecordedSpan>) =>
  Tracer.make({
    span: (name, parent, context, links, _startTime, kind) => {
      const spanId = (++ids).toString(16).padStart(16, "0")
      const parentSpan = Option.getOrUndefined(parent)
      const traceId = parentSpan?.traceId ?? spanId.padStart(32, "0")
      const recorded: RecordedSpan = { name, spanId, parentSpanId: parentSpan?.spanId, attributes: new Map(), ended: false }
      spans.push(recorded)
      const span: Tracer.Span = {
        _tag: "Span",
        name,
        spanId,
        traceId,
        parent,
        context,
        status: { _tag: "Started", startTime: 0n },
        attributes: recorded.attributes,
        links,
        sampled: true,
        kind,
        end: () => {
          recorded.ended = true
        },
        attribute: (key, value) => void recorded.attributes.set(key, value),
        event: () => {},
        addLinks: () => {}
      }
      return span
    },
    context: (f) => f()
  })

/**
 * What a mode adds to a test gateway: its config (tracing on, or the debug log level), and the
 * layer that records what the observing produced (spans, log lines).
 */
export const observing = (mode: DispatchMode) => {
  const spans: Array<RecordedSpan> = []
  const lines: Array<RecordedLine> = []
  const configure = (config: GatewayConfigShape): GatewayConfigShape =>
    mode.observe === "tracing"
      ? {
        ...config,
        tracing: {
          endpoint: "http://127.0.0.1:1/v1/traces",
          serviceName: "test",
          exportInterval: Duration.seconds(5),
          exportTimeout: Duration.seconds(5),
          maxQueuedSpans: 100
        }
      }
      : mode.observe === "debug"
      ? { ...config, gateway: { ...config.gateway, logLevel: "debug" } }
      : config
  const recorder = Logger.make(({ annotations, logLevel, message }) => {
    const kept: Record<string, unknown> = {}
    for (const [key, value] of annotations) kept[key] = value
    lines.push({ message: List.isList(message) ? List.toArray(message) : message, level: logLevel.label, annotations: kept })
  })
  const layer: Layer.Layer<never> = mode.observe === "tracing"
    ? Layer.setTracer(recordingTracer(spans))
    : mode.observe === "debug"
    ? Layer.merge(Logger.replace(Logger.defaultLogger, recorder), Logger.minimumLogLevel(LogLevel.Debug))
    : Layer.empty
  return { spans, lines, configure, layer }
}
