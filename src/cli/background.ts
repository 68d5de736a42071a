import { Command, Options } from "@effect/cli"
import { Clock, Console, Duration, Effect, Option } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { integerFlag } from "./flags.js"
import { CommandFailed } from "./CommandFailed.js"
import { defaultPidFile, describeStale, isAlive, logFileFor, processIdentity, readPidFile, recordedState, removePidFile, writePidFile } from "./pidFile.js"
import { isoTime } from "../clock/Timer.js"

/** Where the detached gateway writes its URL once it serves (see start.ts). */
export const READY_FILE_ENV = "MCP_GATEWAY_READY_FILE"

/** How long `start --background` waits for the gateway to answer `/gateway/health`. */
const READY_TIMEOUT_MS = 60_000

/** The last lines of what a gateway wrote to its log since `from`, for a failure message. */
const tail = (file: string, from: number, lines = 20) => {
  try {
    const text = fs.readFileSync(file, "utf8").slice(from)
    return text.trimEnd().split("\n").slice(-lines).join("\n")
  } catch {
    return ""
  }
}

const sleep = (ms: number) => Effect.sleep(Duration.millis(ms))

const healthy = (url: string) =>
  Effect.promise(() =>
    fetch(`${url}/gateway/health`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.ok, () => false)
  )

/**
 * Claims `{pidFile}.starting` (created exclusively, holding this command's pid) for the time a
 * start takes: two `start --background` at once on one pid file both found no gateway running,
 * both started one, read each other's URL from the one ready file, and the pid file named one
 * of them (at the other's URL), the other left running with no pid file. The second is refused;
 * a claim whose command is gone (killed mid-start) is taken over. Returns the release.
 */
const claimStart = (pidFile: string) =>
  Effect.gen(function*() {
    const claim = `${pidFile}.starting`
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = fs.openSync(claim, "wx", 0o600)
        fs.writeSync(fd, String(process.pid))
        fs.closeSync(fd)
        return () => fs.rmSync(claim, { force: true })
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
      }
      // (Removed meanwhile by the start that held it: NaN, taken over below.)
      const holder = Number((() => {
        try {
          return fs.readFileSync(claim, "utf8").trim()
        } catch {
          return ""
        }
      })())
      if (Number.isInteger(holder) && holder > 0 && isAlive(holder)) {
        return yield* new CommandFailed({
          message: `another start --background is under way on ${pidFile} (pid ${holder}); ` +
            "wait for it, then `mcp-gateway status`, or give this one another --pid-file",
          exitCode: 1
        })
      }
      fs.rmSync(claim, { force: true })
    }
    return yield* new CommandFailed({ message: `cannot claim ${claim}: another start keeps creating it`, exitCode: 1 })
  })

/**
 * `start --background`: the same command line without `--background`, run detached with its
 * output appended to the log file; returns once the gateway answers `/gateway/health` (its URL
 * and pid recorded in the pid file), or fails with the log's last lines if it exits or never
 * answers.
 */
export const startInBackground = (options: { readonly pidFile: Option.Option<string>; readonly logFile: Option.Option<string>; readonly config: Option.Option<string> }) =>
  Effect.gen(function*() {
    const pidFile = path.resolve(Option.getOrElse(options.pidFile, defaultPidFile))
    fs.mkdirSync(path.dirname(pidFile), { recursive: true })
    const release = yield* claimStart(pidFile)
    return yield* startClaimed(pidFile, options).pipe(Effect.ensuring(Effect.sync(release)))
  })

const startClaimed = (pidFile: string, options: { readonly logFile: Option.Option<string>; readonly config: Option.Option<string>; readonly pidFile: Option.Option<string> }) =>
  Effect.gen(function*() {
    const logFile = path.resolve(Option.getOrElse(options.logFile, () => logFileFor(pidFile)))
    const running = readPidFile(pidFile)
    if (running?.alive === true) {
      return yield* new CommandFailed({
        message: `a gateway is already running from ${pidFile} (pid ${running.pid}, ${running.url}); ` +
          "stop it with `mcp-gateway stop`, or give this one another --pid-file",
        exitCode: 1
      })
    }
    if (running !== undefined) {
      // (A gateway that crashed, or was killed, left it: its pid is free, or another process's now.)
      removePidFile(pidFile)
      yield* Console.error(`mcp-gateway: removed the stale pid file ${pidFile} (${describeStale(running)})`)
    }
    fs.mkdirSync(path.dirname(logFile), { recursive: true })
    fs.mkdirSync(path.dirname(pidFile), { recursive: true })
    const from = fs.existsSync(logFile) ? fs.statSync(logFile).size : 0
    // (Appended, never through a symlink put in its place: that would append the gateway's log,
    // which clients' requests fill, to a file of someone else's choosing.)
    let log: number
    try {
      log = fs.openSync(logFile, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o644)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ELOOP") throw e
      return yield* new CommandFailed({
        message: `the log file ${logFile} is a symbolic link, which the gateway does not write through: remove it, or give --log-file`,
        exitCode: 1
      })
    }
    const args = process.argv.slice(2).filter((a) => a !== "--background")
    if (args[0] !== "start") args.unshift("start")
    const readyFile = `${pidFile}.ready`
    fs.rmSync(readyFile, { force: true })
    // (With the Node flags this one was started with: `node --max-old-space-size=… … --background` keeps its flag.)
    const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...args], {
      detached: true,
      stdio: ["ignore", log, log],
      env: { ...process.env, [READY_FILE_ENV]: readyFile }
    })
    fs.closeSync(log)
    let exitCode: number | null | undefined
    child.once("exit", (code) => (exitCode = code ?? 1))
    child.unref()

    const started = yield* Clock.currentTimeMillis
    let url: string | undefined
    while ((yield* Clock.currentTimeMillis) - started < READY_TIMEOUT_MS) {
      if (exitCode !== undefined) {
        fs.rmSync(readyFile, { force: true })
        return yield* new CommandFailed({
          message: `the gateway exited (code ${exitCode}) before it served; the end of ${logFile}:\n${tail(logFile, from)}`,
          exitCode: exitCode === 2 ? 2 : 1
        })
      }
      url ??= fs.existsSync(readyFile) ? fs.readFileSync(readyFile, "utf8").trim() || undefined : undefined
      if (url !== undefined && (yield* healthy(url))) {
        fs.rmSync(readyFile, { force: true })
        writePidFile(pidFile, {
          pid: child.pid!,
          url,
          log_file: logFile,
          config: Option.match(options.config, { onNone: () => null, onSome: (c) => path.resolve(c) }),
          started_at: isoTime(yield* Clock.currentTimeMillis),
          ...processIdentity(child.pid!)
        })
        yield* Console.log(`mcp-gateway started in the background: pid ${child.pid}, ${url}\n  log:      ${logFile}\n  pid file: ${pidFile}\n  stop it:  mcp-gateway stop${options.pidFile._tag === "Some" ? ` --pid-file ${pidFile}` : ""}`)
        return
      }
      yield* sleep(100)
    }
    child.kill("SIGTERM")
    fs.rmSync(readyFile, { force: true })
    return yield* new CommandFailed({
      message: `the gateway did not answer /gateway/health within ${READY_TIMEOUT_MS / 1000}s (stopped it); the end of ${logFile}:\n${tail(logFile, from)}`,
      exitCode: 1
    })
  })

/**
 * `stop`: SIGTERM to the gateway in the pid file, then wait until it has drained and exited.
 * `--config` is accepted as `status`, `registry` and `sync` accept it; since a gateway is stopped
 * through its pid, the config only says which gateway is meant: the one in the pid file must
 * have been started with that file, else nothing is stopped.
 */
export const stopCommand = Command.make(
  "stop",
  {
    pidFile: Options.text("pid-file").pipe(
      Options.withDescription(`The pid file \`start --background\` wrote (default ${defaultPidFile()})`),
      Options.optional
    ),
    config: Options.file("config", { exists: "yes" }).pipe(
      Options.withDescription("The config file the gateway was started with: stop it only if the pid file's gateway runs that config"),
      Options.optional
    ),
    timeout: integerFlag("timeout", 1, 3600).pipe(
      Options.withDescription("Seconds to wait for it to finish its requests and exit (default 60)"),
      Options.withDefault(60)
    )
  },
  ({ config, pidFile: given, timeout }) =>
    Effect.gen(function*() {
      const pidFile = path.resolve(Option.getOrElse(given, defaultPidFile))
      const record = readPidFile(pidFile)
      if (record === undefined) {
        return yield* new CommandFailed({
          message: `no gateway recorded in ${pidFile}: nothing to stop (only a gateway started with --background has one; give --pid-file if it used another)`,
          exitCode: 1
        })
      }
      if (Option.isSome(config) && record.config !== path.resolve(config.value)) {
        return yield* new CommandFailed({
          message: `the gateway recorded in ${pidFile} (pid ${record.pid}) was started with ${record.config ?? "no --config"}, ` +
            `not ${path.resolve(config.value)}: nothing stopped (give the --pid-file it was started with)`,
          exitCode: 1
        })
      }
      if (record.state === "gone") {
        removePidFile(pidFile)
        yield* Console.log(`mcp-gateway (pid ${record.pid}) was not running; removed its stale pid file`)
        return
      }
      if (record.state === "reused") {
        // Never signalled: whatever has the pid now is not the gateway this file recorded.
        removePidFile(pidFile)
        return yield* new CommandFailed({
          message: `not stopping pid ${record.pid}: the pid file ${pidFile} is stale (${describeStale(record)}); ` +
            "the gateway it recorded is gone; removed the stale pid file",
          exitCode: 1
        })
      }
      process.kill(record.pid, "SIGTERM")
      const deadline = (yield* Clock.currentTimeMillis) + timeout * 1000
      while (recordedState(record) === "running") {
        if ((yield* Clock.currentTimeMillis) > deadline) {
          return yield* new CommandFailed({
            message: `the gateway (pid ${record.pid}) is still running after ${timeout}s (draining?); see ${record.log_file}, or force it with kill -9 ${record.pid}`,
            exitCode: 1
          })
        }
        yield* sleep(100)
      }
      removePidFile(pidFile)
      yield* Console.log(`mcp-gateway stopped (pid ${record.pid})`)
    })
).pipe(Command.withDescription("Stop a gateway started with `start --background`: it finishes its requests in flight, stops its processes and exits"))
