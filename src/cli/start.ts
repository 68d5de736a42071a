import { Command, Options } from "@effect/cli"
import { Effect, Option } from "effect"
import { loadGatewayConfig, type LogLevelName } from "../config/GatewayConfig.js"
import type { LogFormat } from "../observability/logging.js"
import { startInBackground } from "./background.js"
import { choiceFlag, integerFlag } from "./flags.js"
import { defaultPidFile } from "./pidFile.js"
import { CommandFailed } from "./CommandFailed.js"

export const startOptions = {
  config: Options.file("config", { exists: "yes" }).pipe(
    Options.withDescription("The gateway config file (JSON); without it the gateway starts empty"),
    Options.optional
  ),
  host: Options.text("host").pipe(Options.withDescription("Address to bind (default 127.0.0.1)"), Options.optional),
  port: integerFlag("port", 0, 65535).pipe(Options.withDescription("Port to listen on (default 8080; 0 picks a free one)"), Options.optional),
  registryFile: Options.text("registry-file").pipe(
    Options.withDescription("Where run-time registrations are persisted"),
    Options.optional
  ),
  logLevel: choiceFlag("log-level", ["trace", "debug", "info", "warn", "error", "fatal", "none"]).pipe(
    Options.withDescription("Log level (default info, or gateway.log_level from the config)"),
    Options.optional
  ),
  logFormat: choiceFlag("log-format", ["text", "json", "pretty"]).pipe(
    Options.withDescription("Log line format on stderr"),
    Options.withDefault("text")
  ),
  insecure: Options.boolean("insecure").pipe(
    Options.withDescription("Listen on a non-loopback address without any auth configured (anyone who can reach it may use every tool)")
  ),
  sync: Options.boolean("sync").pipe(
    Options.withDescription("Run the config's discovery providers at start and on their intervals (the default, unless discovery.sync is false)")
  ),
  noSync: Options.boolean("no-sync").pipe(
    Options.withDescription("Do not run discovery providers by themselves: only `mcp-gateway sync` runs them")
  ),
  locked: Options.boolean("locked").pipe(
    Options.withDescription(
      "Serve only the tool definitions the tools lock file (gateway.tools_lock_file) holds: every template's pin policy is `locked`, anything else is refused"
    )
  ),
  background: Options.boolean("background").pipe(
    Options.withDescription("Run detached: returns once /gateway/health answers, printing the pid, URL, log file and pid file; `stop` ends it")
  ),
  pidFile: Options.text("pid-file").pipe(
    Options.withDescription(`With --background: where to record the pid and URL (default ${defaultPidFile()})`),
    Options.optional
  ),
  logFile: Options.text("log-file").pipe(
    Options.withDescription("With --background: where its log goes (default beside the pid file, gateway.log)"),
    Options.optional
  )
}

type StartFlags = {
  readonly config: Option.Option<string>
  readonly host: Option.Option<string>
  readonly port: Option.Option<number>
  readonly registryFile: Option.Option<string>
  readonly logLevel: Option.Option<LogLevelName>
  readonly logFormat: LogFormat
  readonly insecure: boolean
  readonly sync: boolean
  readonly noSync: boolean
  readonly locked: boolean
  readonly background: boolean
  readonly pidFile: Option.Option<string>
  readonly logFile: Option.Option<string>
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/i

/** Loads the config, builds the gateway and runs it until SIGINT/SIGTERM. */
export const runGateway = (flags: StartFlags) =>
  Effect.gen(function*() {
    if (flags.sync && flags.noSync) {
      return yield* new CommandFailed({ message: "--sync and --no-sync: give one of them", exitCode: 2 })
    }
    if (flags.background) return yield* startInBackground(flags)
    const config = yield* loadGatewayConfig({
      sync: flags.sync ? true : flags.noSync ? false : undefined,
      configFile: Option.getOrUndefined(flags.config),
      host: Option.getOrUndefined(flags.host),
      port: Option.getOrUndefined(flags.port),
      registryFile: Option.getOrUndefined(flags.registryFile),
      logLevel: Option.getOrUndefined(flags.logLevel),
      locked: flags.locked || undefined
    }).pipe(Effect.mapError((e) => new CommandFailed({ message: e.message, exitCode: 2 })))
    if (!LOOPBACK.test(config.gateway.host) && config.gateway.auth === undefined && !flags.insecure) {
      return yield* new CommandFailed({
        message: `refusing to listen on ${config.gateway.host} without authentication: anyone who can reach this address could call ` +
          `every tool of every template. Configure "auth" (API keys or JWTs, see docs/security.md), listen on 127.0.0.1, ` +
          `or pass --insecure if the network itself is trusted`,
        exitCode: 2
      })
    }
    // The gateway's modules are loaded only now: every other command starts without them.
    const { launchGateway } = yield* Effect.promise(() => import("./launch.js"))
    return yield* launchGateway(config, flags.logFormat)
  })

export const startCommand = Command.make("start", startOptions, runGateway).pipe(
  Command.withDescription("Start the gateway (the default command)")
)
