import { Layer, Logger, LogLevel } from "effect"
import type { LogLevelName } from "./config/GatewayConfig.js"

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
 * Every log line goes to stderr, never stdout: stdout belongs to the CLI's own output
 * (and to MCP framing wherever the gateway speaks stdio).
 */
export const loggerLayer = (level: LogLevelName, format: LogFormat): Layer.Layer<never> =>
  Layer.merge(
    Logger.replace(
      Logger.defaultLogger,
      format === "json"
        ? Logger.withConsoleError(Logger.jsonLogger)
        : format === "pretty"
        ? Logger.prettyLogger({ stderr: true })
        : Logger.withConsoleError(Logger.logfmtLogger)
    ),
    Logger.minimumLogLevel(levels[level])
  )
