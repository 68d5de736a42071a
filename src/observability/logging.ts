import { Layer, Logger, LogLevel } from "effect"
import type { LogLevelName } from "../config/GatewayConfig.js"
import { redactUrlsIn } from "../domain/redact.js"

export type LogFormat = "text" | "json" | "pretty"

const levels: Record<LogLevelName, LogLevel.LogLevel> = {
  trace: LogLevel.Trace,
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warn: LogLevel.Warning,
  error: LogLevel.Error,
  fatal: LogLevel.Fatal,
  none: LogLevel.None
}

/**
 * URLs in a log message lose their user:password and query values (a token in an endpoint must
 * not reach the log). For the pretty logger, which writes itself, control characters of the
 * message are escaped here too (the other formats escape whole lines: writeLogLine).
 */
const redacting = <O>(logger: Logger.Logger<unknown, O>, escape = false) => {
  const clean = escape ? (m: string) => escapeControls(redactUrlsIn(m)) : redactUrlsIn
  return Logger.mapInput(logger, (message: unknown) =>
    typeof message === "string"
      ? clean(message)
      : Array.isArray(message)
      ? message.map((m) => (typeof m === "string" ? clean(m) : m))
      : message)
}

/**
 * Lines for stderr, written together once per turn of the event loop. With a request line per
 * request, one write per line (console.error: a synchronous syscall each, on pipes and files)
 * was a tenth of the gateway's CPU under load; a batch costs one. Whatever is pending when the
 * process exits is written then, so no line is lost to an orderly exit.
 */
// Process-wide on purpose: stderr is the process's, whichever gateway (or CLI command) writes.
let pending = ""
let scheduled = false

/**
 * How much may wait in stderr's own buffer. stderr is asynchronous on pipes: when the reader
 * falls behind (a log shipper, a terminal paused, a supervisor busy), what the gateway writes
 * queues in its memory, without bound (a gateway logging a line per request grew by 200 MB a
 * minute behind a reader that stalled). Past this, lines are dropped and counted, and the count
 * is written once the reader has caught up.
 */
const MAX_QUEUED_BYTES = 8 * 1024 * 1024
let dropped = 0
let noticeFormat: LogFormat = "text"

const droppedNotice = (count: number) => {
  const message = `${count} log lines dropped: stderr did not keep up`
  // wall clock: the process-wide stderr writer sits below every runtime (it has no Clock to read).
  const timestamp = new Date().toISOString()
  return noticeFormat === "json"
    ? JSON.stringify({ message, logLevel: "WARN", timestamp, annotations: {}, spans: {}, fiberId: "#0" })
    : `timestamp=${timestamp} level=WARN fiber=#0 message="${message}"`
}

/** Writes the log lines not written yet (before writing to stderr directly, to keep the order). */
export const flushLogs = () => {
  scheduled = false
  if (pending === "") return
  let text = pending
  pending = ""
  if (process.stderr.writableLength > MAX_QUEUED_BYTES) {
    for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) dropped++
    return
  }
  if (dropped > 0) {
    text = droppedNotice(dropped) + "\n" + text
    dropped = 0
  }
  process.stderr.write(text)
}
process.on("exit", flushLogs)

/** C0 and C1 control characters (ESC, CSI, BEL, CR, LF...): what a terminal acts on instead of showing. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/
const CONTROLS = /[\u0000-\u001f\u007f-\u009f]/g

/**
 * A line with its control characters written as `\u001b` escapes. Log lines carry what clients
 * sent (tool and prompt names, URIs, method names): raw, an ESC could clear or recolour an
 * operator's terminal, and a line feed forge a log line. (Inside a JSON string, the same escape
 * is valid JSON; a formatted line has no control character of its own.)
 */
export const escapeControls = (line: string) =>
  CONTROL.test(line) ? line.replace(CONTROLS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`) : line

/**
 * One line for stderr, batched with the others of this turn of the event loop; `urgent` lines
 * (warnings and worse: rare, and wanted at once) go out now, with what is pending before them.
 */
export const writeLogLine = (line: string, urgent = false) => {
  pending += escapeControls(line) + "\n"
  // Bounded: a burst larger than this goes out at once rather than growing the buffer.
  if (urgent || pending.length > 1 << 16) return flushLogs()
  if (!scheduled) {
    scheduled = true
    setImmediate(flushLogs)
  }
}

const toStderr = (logger: Logger.Logger<unknown, string>) =>
  Logger.make<unknown, void>((options) => writeLogLine(logger.log(options), options.logLevel.ordinal >= LogLevel.Warning.ordinal))

/**
 * Every log line goes to stderr, never stdout: stdout belongs to the CLI's own output
 * (and to MCP framing wherever the gateway speaks stdio).
 */
export const loggerLayer = (level: LogLevelName, format: LogFormat): Layer.Layer<never> => {
  noticeFormat = format
  return Layer.merge(
    Logger.replace(
      Logger.defaultLogger,
      redacting(
        format === "json"
          ? toStderr(Logger.jsonLogger)
          : format === "pretty"
          ? Logger.prettyLogger({ stderr: true })
          : toStderr(Logger.logfmtLogger),
        format === "pretty"
      )
    ),
    Logger.minimumLogLevel(levels[level])
  )
}
