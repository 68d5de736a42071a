import { Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import type { InstanceDefinition } from "../domain/Instance.js"
import { parseServerMessage, tooDeepMessage } from "../domain/jsonText.js"
import { redactCommand } from "../domain/redact.js"
import type { SandboxSettings } from "../domain/Sandbox.js"
import { childEnvironment } from "./childEnvironment.js"
import type { ConnectionEnv, ConnectionLog } from "./Connection.js"
import { makeLineSplitter, throttled } from "./lines.js"
import { type ChannelListener, Multiplexer } from "./Multiplexer.js"
import { commandDirOf, sandboxedSpawn } from "./sandbox.js"
import { makeSandboxProbes, type SandboxProbes, type SandboxVerdict } from "./sandboxProbe.js"
import { makeSharedChannelConnection, type SessionChannelOptions, type SharedChannelConnection } from "./SharedChannel.js"
import { TransportError } from "./TransportError.js"

type StdioInstance = Extract<InstanceDefinition, { transport: "stdio" }>

/** Shutdown as the MCP spec describes it: close stdin, wait, SIGTERM, wait, SIGKILL. */
const STOP_GRACE_MS = 2000
/**
 * The wait after stdin closes when more than MANY_STOPPING processes stop at once (shutdown,
 * an instance drained with many sessions): forty Node servers left to exit on their own took
 * 2.5 s on two cores, forty SIGTERMed 0.4 s; a prompt shutdown matters more than their grace.
 */
const BUSY_STOP_GRACE_MS = 300
const MANY_STOPPING = 4

/**
 * The longest line a server may write to stdout (16 Mi characters): a longer one is dropped
 * and logged, so that a server gone wrong cannot make the gateway buffer without end.
 */
export const MAX_LINE_LENGTH = 16 * 1024 * 1024

/** How many of the last stderr lines are kept (shown in `/gateway/registry` when the process crashes). */
const STDERR_TAIL_LINES = 20
const STDERR_LINE_CHARS = 500

/** One running child process, multiplexing the requests of every caller. */
class Process extends Multiplexer {
  /** The server's answer to the gateway's `initialize`. */
  initializeResult: Record<string, unknown> = {}
  readonly exit: Promise<void>
  readonly stderrTail: Array<string> = []
  private resolveExit!: () => void

  constructor(
    readonly child: ChildProcess,
    instanceId: string,
    log: ConnectionLog,
    listeners: ReadonlySet<ChannelListener>,
    exclusive: boolean
  ) {
    super(instanceId, log, listeners, exclusive)
    this.exit = new Promise((resolve) => (this.resolveExit = resolve))
  }

  get pid() {
    return this.child.pid
  }

  get exited() {
    return this.closed
  }

  markExited(reason: string) {
    this.failAll(reason)
    this.resolveExit()
  }

  protected send(text: string): boolean {
    if (!this.child.stdin?.writable) return false
    this.child.stdin.write(text + "\n")
    return true
  }
}

/**
 * One long-lived child process per instance (or per client session, see SessionChannelOptions),
 * started on first use and initialized once; concurrent requests share it, each under an id of
 * the gateway's choosing. If the shared process dies, in-flight requests fail at once and it is
 * restarted with backoff (see SharedChannel.ts). The process runs in its own process group,
 * which is stopped as a whole on `close`.
 */
export const makeStdioConnection = (
  instance: StdioInstance,
  env: ConnectionEnv,
  options: SessionChannelOptions & {
    /** A process started ahead of need (WarmProcesses.ts), waiting for its `initialize`: used for the first start if it still runs. */
    readonly prestarted?: ChildProcess | undefined
  } = {}
): SharedChannelConnection => {
  const log = env.log
  let stopping = false
  let prestarted = options.prestarted
  // What a server prints is its own business (it may print secrets): the lines go to the log at
  // debug level, like its stderr; a warning only says that it happens.
  const nonJsonWarning = throttled((_: string) => "dropped lines on stdout that are not JSON-RPC (their text is logged at debug level)", log.warn)
  const nonJsonText = throttled((line: string) => `not JSON-RPC on stdout: ${line.slice(0, 200)}`, log.debug, { everyMs: 1000, burst: 20 })
  const nonJson = (line: string) => {
    nonJsonText(line)
    nonJsonWarning(line)
  }
  const oversized = throttled(
    (length: number) => `dropped a line of ${length} characters on stdout (the limit is ${MAX_LINE_LENGTH})`,
    log.warn
  )
  const stderrLog = throttled((line: string) => `stderr: ${line.slice(0, STDERR_LINE_CHARS)}`, log.debug, { everyMs: 1000, burst: 100 })

  let toldUnavailable = false
  // (A connection made on its own, in tests, probes for itself; the Transport's share one.)
  let ownProbes: SandboxProbes | undefined
  const probes = () =>
    env.sandboxProbes ?? (ownProbes ??= makeSandboxProbes({ runtime: env.runtime, scope: env.scope, asRoot: runsAsRoot(), warn: log.warn }))
  /** The sandbox a process starts in, with what the probe found for it (its first start waits for the probe). */
  const sandboxFor = (inheritEnv: ReadonlyArray<string>): Effect.Effect<ServerSandbox | undefined> => {
    const settings = env.sandbox?.()
    if (settings === undefined) return Effect.succeed(undefined)
    return Effect.map(probes().verdict(serverPath(instance, inheritEnv)), (verdict) => ({ settings, verdict }))
  }
  const spawnProcess = (listeners: ReadonlySet<ChannelListener>, inheritEnv: ReadonlyArray<string>, sandbox: ServerSandbox | undefined): Process => {
    const warm = prestarted !== undefined && prestarted.pid !== undefined && prestarted.exitCode === null && prestarted.signalCode === null
      ? prestarted
      : undefined
    if (prestarted !== undefined && warm === undefined) log.info(`a warm process had exited (${prestarted.pid ?? "?"}); starting one`)
    prestarted = undefined
    const child = warm ?? spawnServer(instance, inheritEnv, sandbox)
    const proc = new Process(child, instance.id, log, listeners, options.forSession !== undefined)
    child.stdout!.setEncoding("utf8")
    child.stdout!.on(
      "data",
      makeLineSplitter((line) => {
        // Anything but a JSON object is not a message: skip it without parsing.
        if (line.charCodeAt(0) !== 123 /* { */) return nonJson(line)
        const parsed = parseServerMessage(line)
        if (parsed.ok) return proc.receive(parsed.value)
        if (parsed.reason === "not JSON") return nonJson(line)
        // (Its request, if it answers one, times out: nothing of it can be passed on.)
        log.warn(`dropped a message: ${tooDeepMessage}`)
      }, { maxLineLength: MAX_LINE_LENGTH, onOversized: oversized })
    )
    child.stderr!.setEncoding("utf8")
    child.stderr!.on(
      "data",
      makeLineSplitter((line) => {
        proc.stderrTail.push(line.length > STDERR_LINE_CHARS ? line.slice(0, STDERR_LINE_CHARS) + "…" : line)
        if (proc.stderrTail.length > STDERR_TAIL_LINES) proc.stderrTail.shift()
        stderrLog(line)
      }, { maxLineLength: 64 * 1024, onOversized: () => {} })
    )
    // A write to a process that just died raises EPIPE here; the exit handler does the rest.
    child.stdin!.on("error", () => {})
    child.on("error", (e) => {
      log.warn(`cannot run ${JSON.stringify(redactCommand(instance.command).join(" "))}: ${e.message}`)
      proc.markExited(`cannot start process: ${e.message}`)
    })
    child.on("exit", (code, signal) => {
      const reason = `process exited (${signal ?? `code ${code}`})`
      if (!stopping) log.warn(reason)
      proc.markExited(reason)
    })
    if (warm === undefined) log.info(`started process ${child.pid ?? "(failed)"}: ${redactCommand(instance.command).join(" ")}`)
    else log.debug(`took warm process ${child.pid}`)
    return proc
  }

  const connection = makeSharedChannelConnection(env, {
    instanceId: instance.id,
    start: (listeners) => {
      const inheritEnv = env.inheritEnv?.() ?? []
      return Effect.flatMap(sandboxFor(inheritEnv), (sandbox) =>
        Effect.try({
          try: () => spawnProcess(listeners, inheritEnv, sandbox),
          catch: (e) => {
            if (!(e instanceof SandboxUnavailable)) throw e
            // Said once, as a warning; each further start fails with the same reason (in last_exit).
            if (!toldUnavailable) log.warn(`${e.message}; the instance does not start (it never runs unsandboxed when its config asks for a sandbox)`)
            toldUnavailable = true
            return new TransportError({ instanceId: instance.id, reason: "unavailable", message: e.message, reachedBackend: false })
          }
        }))
    },
    stop: (proc) => {
      const stopping = env.stopping
      if (stopping === undefined) return stopProcess(proc, STOP_GRACE_MS)
      stopping.count++
      return stopProcess(proc, stopping.count > MANY_STOPPING ? BUSY_STOP_GRACE_MS : STOP_GRACE_MS).finally(() => void stopping.count--)
    },
    initializeParams: options.forSession?.initializeParams
  })
  return {
    ...connection,
    close: Effect.suspend(() => {
      stopping = true
      return connection.close
    })
  }
}

/** A sandbox was asked for and cannot be set up here (bwrap missing, namespaces refused): the server must not start. */
export class SandboxUnavailable extends Error {}

/** The sandbox a server starts in, and what the probe found out about sandboxes here (sandboxProbe.ts). */
export interface ServerSandbox {
  readonly settings: SandboxSettings
  readonly verdict: SandboxVerdict
}

/** Whether the gateway runs as root (its sandboxed servers then run as an unprivileged user). */
export const runsAsRoot = () => process.getuid?.() === 0

/** The PATH an instance's processes get (what their sandbox is probed with). */
export const serverPath = (instance: StdioInstance, inheritEnv: ReadonlyArray<string>) => childEnvironment(instance.env, inheritEnv).PATH

/**
 * Starts an instance's server, in its own process group (so that stopping it also stops what it
 * started: npx, sh -c, ...); in its sandbox if it has one (bwrap leads the group then, the
 * server and its children stay in it). Throws SandboxUnavailable rather than start a server
 * unsandboxed that asked for a sandbox.
 */
export const spawnServer = (instance: StdioInstance, inheritEnv: ReadonlyArray<string>, sandbox?: ServerSandbox | undefined): ChildProcess => {
  const [command, ...args] = instance.command
  // Never the gateway's whole environment (its keys and secrets): see childEnvironment.ts.
  const childEnv = childEnvironment(instance.env, inheritEnv)
  let run = { command: command!, args, env: childEnv }
  if (sandbox !== undefined) {
    const problem = sandbox.verdict.unavailable
    if (problem !== undefined) throw new SandboxUnavailable(problem)
    const cwd = instance.working_dir ?? process.cwd()
    run = sandboxedSpawn(sandbox.settings, {
      command: command!,
      args,
      cwd,
      env: childEnv,
      commandDir: commandDirOf(command!, cwd, childEnv.PATH, isExecutable),
      asRoot: runsAsRoot(),
      ownUserNamespace: sandbox.verdict.ownUserNamespace === true
    }) as typeof run
  }
  return spawn(run.command, run.args, {
    cwd: instance.working_dir,
    env: run.env,
    stdio: ["pipe", "pipe", "pipe"],
    // Its own process group, so that stopping it also stops what it started (npx, sh -c, ...).
    detached: true
  })
}

/** Stops a process that was never handed to a connection (a warm one): as stopProcess does. */
export const stopChild = async (child: ChildProcess): Promise<void> => {
  const exit = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once("exit", () => resolve())
  })
  child.stdin?.end()
  if (!(await waitFor(exit, STOP_GRACE_MS))) {
    signalGroup(child, "SIGTERM")
    if (!(await waitFor(exit, STOP_GRACE_MS))) {
      signalGroup(child, "SIGKILL")
      await waitFor(exit, STOP_GRACE_MS)
    }
  }
  if (groupAlive(child)) signalGroup(child, "SIGKILL")
}

const signalGroup = (child: ChildProcess, signal: NodeJS.Signals) => {
  if (child.pid === undefined) return
  try {
    process.kill(-child.pid, signal)
  } catch {
    // ESRCH: the group is already gone.
  }
}

const waitFor = (promise: Promise<void>, ms: number) =>
  new Promise<boolean>((resolve) => {
    // raw timer: a real process's grace period (close stdin → SIGTERM → SIGKILL) is real time.
    const timer = setTimeout(() => resolve(false), ms)
    promise.then(() => {
      clearTimeout(timer)
      resolve(true)
    })
  })

/** close stdin → wait → SIGTERM the group → wait → SIGKILL the group. */
const stopProcess = async (proc: Process, graceMs: number): Promise<void> => {
  const child = proc.child
  if (!proc.exited) {
    child.stdin?.end()
    if (!(await waitFor(proc.exit, graceMs))) {
      signalGroup(child, "SIGTERM")
      if (!(await waitFor(proc.exit, STOP_GRACE_MS))) {
        signalGroup(child, "SIGKILL")
        await waitFor(proc.exit, STOP_GRACE_MS)
      }
    }
  }
  // The leader is gone; anything it started in its group goes too: SIGTERM, and SIGKILL for
  // what is still there after the grace period (a grandchild must not outlive the gateway).
  if (groupAlive(child)) {
    signalGroup(child, "SIGTERM")
    // wall clock, raw timer: polls a real process group for a real grace period.
    const until = Date.now() + STOP_GRACE_MS
    // wall clock, raw timer: see above.
    while (groupAlive(child) && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
    signalGroup(child, "SIGKILL")
  }
  proc.markExited("process stopped")
}

const groupAlive = (child: ChildProcess) => {
  if (child.pid === undefined) return false
  try {
    process.kill(-child.pid, 0)
    return true
  } catch {
    return false
  }
}

const isExecutable = (file: string) => {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return true
  } catch {
    return false
  }
}
