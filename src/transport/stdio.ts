import { Effect, type Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import type { InstanceDefinition } from "../domain/Instance.js"
import type { Connection, ConnectionLog } from "./Connection.js"
import { makeLineSplitter } from "./lines.js"
import { type ChannelListener, Multiplexer } from "./Multiplexer.js"
import { makeSharedChannelConnection, type SessionChannelOptions } from "./SharedChannel.js"

type StdioInstance = Extract<InstanceDefinition, { transport: "stdio" }>

/** Shutdown as the MCP spec describes it: close stdin, wait, SIGTERM, wait, SIGKILL. */
const STOP_GRACE_MS = 2000

/** One running child process, multiplexing the requests of every caller. */
class Process extends Multiplexer {
  /** The server's answer to the gateway's `initialize`. */
  initializeResult: Record<string, unknown> = {}
  readonly exit: Promise<void>
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

  get exited() {
    return this.closed
  }

  markExited(reason: string) {
    this.failAll(reason)
    this.resolveExit()
  }

  protected send(message: unknown): boolean {
    if (!this.child.stdin?.writable) return false
    this.child.stdin.write(JSON.stringify(message) + "\n")
    return true
  }
}

/**
 * One long-lived child process per instance (or per client session, see SessionChannelOptions),
 * started on first use and initialized once; concurrent requests share it, each under an id of the gateway's choosing.
 * If the process dies, in-flight requests fail and the next use starts a new one.
 * The process runs in its own process group, which is stopped as a whole on `close`.
 */
export const makeStdioConnection = (
  instance: StdioInstance,
  log: ConnectionLog,
  scope: Scope.Scope,
  options: SessionChannelOptions = {}
): Connection => {
  let stopping = false

  const spawnProcess = (listeners: ReadonlySet<ChannelListener>): Process => {
    const [command, ...args] = instance.command
    const child = spawn(command!, args, {
      cwd: instance.working_dir,
      env: { ...process.env, ...instance.env },
      stdio: ["pipe", "pipe", "pipe"],
      // Its own process group, so that stopping it also stops what it started (npx, sh -c, ...).
      detached: true
    })
    const proc = new Process(child, instance.id, log, listeners, options.forSession !== undefined)
    child.stdout!.setEncoding("utf8")
    child.stdout!.on("data", makeLineSplitter((line) => {
      let message: unknown
      try {
        message = JSON.parse(line)
      } catch {
        log.debug(`non-JSON line on stdout: ${line.slice(0, 200)}`)
        return
      }
      proc.receive(message)
    }))
    child.stderr!.setEncoding("utf8")
    child.stderr!.on("data", makeLineSplitter((line) => log.debug(`stderr: ${line}`)))
    // A write to a process that just died raises EPIPE here; the exit handler does the rest.
    child.stdin!.on("error", () => {})
    child.on("error", (e) => {
      log.warn(`cannot run ${JSON.stringify(instance.command.join(" "))}: ${e.message}`)
      proc.markExited(`cannot start process: ${e.message}`)
    })
    child.on("exit", (code, signal) => {
      if (!stopping) log.warn(`process exited (${signal ?? `code ${code}`})`)
      proc.markExited(`process exited (${signal ?? `code ${code}`})`)
    })
    log.info(`started process ${child.pid ?? "(failed)"}: ${instance.command.join(" ")}`)
    return proc
  }

  const connection = makeSharedChannelConnection({
    instanceId: instance.id,
    log,
    scope,
    start: (listeners) => Effect.sync(() => spawnProcess(listeners)),
    stop: stopProcess,
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
    const timer = setTimeout(() => resolve(false), ms)
    promise.then(() => {
      clearTimeout(timer)
      resolve(true)
    })
  })

/** close stdin → wait → SIGTERM the group → wait → SIGKILL the group. */
const stopProcess = async (proc: Process): Promise<void> => {
  const child = proc.child
  if (!proc.exited) {
    child.stdin?.end()
    if (!(await waitFor(proc.exit, STOP_GRACE_MS))) {
      signalGroup(child, "SIGTERM")
      if (!(await waitFor(proc.exit, STOP_GRACE_MS))) {
        signalGroup(child, "SIGKILL")
        await waitFor(proc.exit, STOP_GRACE_MS)
      }
    }
  }
  // The leader is gone; anything it started in its group goes too.
  signalGroup(child, "SIGTERM")
  proc.markExited("process stopped")
}
