import { type Clock, Context, Effect, FiberId, FiberRef, HashMap, Layer, Option } from "effect"
import type { LogLevelName } from "../config/GatewayConfig.js"
import { redactUrlsIn } from "../domain/redact.js"
import { type LogFormat, writeLogLine } from "./logging.js"

/** The fields of the one log line each request gets when it ends (docs/observability.md#logs). */
export interface RequestLogFields {
  readonly template: string
  readonly operation: string
  /** The tool or prompt name, or the resource URI; never arguments. */
  readonly subject: string | undefined
  readonly instance: string
  readonly strategy: string
  readonly attempts: number
  readonly outcome: string
  readonly status: number
  readonly duration_ms: number
}

export interface RequestLogShape {
  /** Writes the request line, with the request id of the fiber's log annotations. */
  readonly write: (fields: RequestLogFields) => Effect.Effect<void>
  /**
   * Writes it at once, for the request path that runs without a fiber (Dispatcher.callNow);
   * absent for the writer that goes through Effect's logger, which needs one.
   */
  readonly writeNow?: ((fields: RequestLogFields, requestId: string) => void) | undefined
}

const annotated = (fields: RequestLogFields) => {
  const { subject, ...rest } = fields
  return subject === undefined ? rest : { ...rest, subject }
}

/** Through Effect's logger, like every other line: what tests and embedders get unless told otherwise. */
const viaEffectLogger: RequestLogShape = {
  write: (fields) => Effect.logInfo("request").pipe(Effect.annotateLogs(annotated(fields)))
}

const TEXT_ONLY = /^[^\s"=]*$/
const logfmtValue = (value: string) => TEXT_ONLY.test(value) ? value : JSON.stringify(value)

/**
 * Written straight to the log's stderr batch, in the same shape Effect's logfmt and JSON loggers
 * give every other line. Why: the request line is on every request's path, and Effect's logger
 * (annotations in a persistent HashMap, then formatted generically) cost more CPU per request
 * than all the metrics together. Pretty logs, for people at a terminal, keep Effect's logger.
 */
const direct = (format: "text" | "json", clock: Clock.Clock): RequestLogShape => {
  const writeNow = (fields: RequestLogFields, requestId: string, fiberName = "-") => {
    const subject = fields.subject !== undefined && fields.subject.includes("://") ? redactUrlsIn(fields.subject) : fields.subject
    // from the clock: the time Effect's logger would stamp (it reads the fiber's Clock too).
    const timestamp = new Date(clock.unsafeCurrentTimeMillis()).toISOString()
    if (format === "json") {
      writeLogLine(JSON.stringify({
        message: "request",
        logLevel: "INFO",
        timestamp,
        annotations: { request_id: requestId, ...annotated({ ...fields, subject }) },
        spans: {},
        fiberId: fiberName
      }))
    } else {
      let line = `timestamp=${timestamp} level=INFO fiber=${fiberName} message=request request_id=${logfmtValue(requestId)}` +
        ` template=${logfmtValue(fields.template)} operation=${logfmtValue(fields.operation)}`
      if (subject !== undefined) line += ` subject=${logfmtValue(subject)}`
      line += ` instance=${logfmtValue(fields.instance)} strategy=${logfmtValue(fields.strategy)} attempts=${fields.attempts}` +
        ` outcome=${logfmtValue(fields.outcome)} status=${fields.status} duration_ms=${fields.duration_ms}`
      writeLogLine(line)
    }
  }
  return {
    writeNow,
    write: (fields) =>
      Effect.withFiberRuntime<void>((fiber) => {
        const requestId = HashMap.get(fiber.getFiberRef(FiberRef.currentLogAnnotations), "request_id").pipe(
          Option.map(String),
          Option.getOrElse(() => "")
        )
        // (FiberId.threadName, for a runtime fiber, without the HashSet it builds to get there.)
        const id = fiber.id()
        writeNow(fields, requestId, FiberId.isRuntime(id) ? `#${id.id}` : FiberId.threadName(id))
        return Effect.void
      })
  }
}

const silent: RequestLogShape = { write: () => Effect.void, writeNow: () => {} }

/**
 * Where request lines go. A Reference with a default (Effect's logger), so layers composed in
 * tests need not provide it; `start` provides the direct writer for the configured format.
 */
export class RequestLog extends Context.Reference<RequestLog>()("mcp-gateway/RequestLog", {
  defaultValue: (): RequestLogShape => viaEffectLogger
}) {
  /** For the gateway's own logger settings: nothing below `info`, direct lines for text and JSON. */
  static readonly forLogger = (level: LogLevelName, format: LogFormat): Layer.Layer<RequestLog> =>
    Layer.effect(
      RequestLog,
      Effect.map(Effect.clock, (clock) =>
        level === "warn" || level === "error" || level === "fatal" || level === "none"
          ? silent
          : format === "pretty"
          ? viaEffectLogger
          : direct(format, clock))
    )
}
