import { Layer, Logger, LogLevel } from "effect"
import type { LogLevelName } from "./config/GatewayConfig.js"
import { redactUrlsIn } from "./domain/redact.js"

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

/** URLs in a log message lose their user:password and query values (a token in an endpoint must not reach the log). */
const redacting = <O>(logger: Logger.Logger<unknown, O>) =>
  Logger.mapInput(logger, (message: unknown) =>
    typeof message === "string"
      ? redactUrlsIn(message)
      : Array.isArray(message)
      ? message.map((m) => (typeof m === "string" ? redactUrlsIn(m) : m))
      : message)

/**
 * Every log line goes to stderr, never stdout: stdout belongs to the CLI's own output
 * (and to MCP framing wherever the gateway speaks stdio).
 */
export const loggerLayer = (level: LogLevelName, format: LogFormat): Layer.Layer<never> =>
  Layer.merge(
    Logger.replace(
      Logger.defaultLogger,
      redacting(
        format === "json"
          ? Logger.withConsoleError(Logger.jsonLogger)
          : format === "pretty"
          ? Logger.prettyLogger({ stderr: true })
          : Logger.withConsoleError(Logger.logfmtLogger)
      )
    ),
    Logger.minimumLogLevel(levels[level])
  )
