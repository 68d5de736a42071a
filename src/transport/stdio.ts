import { Deferred, Effect, FiberId, type Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import type { InstanceDefinition } from "../domain/Instance.js"
import {
  isNotification,
  isObject,
  isRequest,
  isResponse,
  type JsonRpcNotification,
  type JsonRpcResponse
} from "../domain/JsonRpc.js"
import { initializeParams, SUPPORTED_PROTOCOL_VERSIONS } from "../domain/Protocol.js"
import type { Connection, ConnectionLog, RequestOptions } from "./Connection.js"
import { makeLineSplitter } from "./lines.js"
import { answerServerRequest } from "./serverRequests.js"
import { RequestTimeout, TransportError } from "./TransportError.js"

type StdioInstance = Extract<InstanceDefinition, { transport: "stdio" }>

/** How long a fresh process may take to answer `initialize` before it is killed. */
const INITIALIZE_TIMEOUT_MS = 30_000
/** Shutdown as the MCP spec describes it: close stdin, wait, SIGTERM, wait, SIGKILL. */
const STOP_GRACE_MS = 2000

type Pending = (response: JsonRpcResponse | TransportError) => void

/** One running child process and the requests waiting on it. */
class Process {
  readonly pending = new Map<number, Pending>()
  nextId = 1
  /**
   * Progress tokens in use, by the token the process knows: callers share the process, so each
   * request's token is replaced by one of the gateway's and mapped back on the way out.
   */
  readonly progress = new Map<string, { readonly token: unknown; readonly onNotification: (n: JsonRpcNotification) => void }>()
  /** The server's answer to the gateway's `initialize`. */
  initializeResult: Record<string, unknown> = {}
  exited = false
  readonly exit: Promise<void>
  private resolveExit!: () => void

  constructor(readonly child: ChildProcess, readonly instanceId: string) {
    this.exit = new Promise((resolve) => (this.resolveExit = resolve))
  }

  markExited(reason: string) {
    if (this.exited) return
    this.exited = true
    const error = new TransportError({ instanceId: this.instanceId, message: reason, reachedBackend: true })
    for (const resume of this.pending.values()) resume(error)
    this.pending.clear()
    this.resolveExit()
  }

  write(message: unknown): boolean {
    if (this.exited || !this.child.stdin?.writable) return false
    this.child.stdin.write(JSON.stringify(message) + "\n")
    return true
  }

  /** Sends a request under a fresh id; the backend never sees the caller's id, so callers cannot collide. */
  call(
    method: string,
    params: Record<string, unknown> | undefined,
    timeoutMs?: number,
    onNotification?: (n: JsonRpcNotification) => void
  ): Effect.Effect<JsonRpcResponse, TransportError | RequestTimeout> {
    return Effect.async<JsonRpcResponse, TransportError | RequestTimeout>((resume) => {
      const id = this.nextId++
      let timer: ReturnType<typeof setTimeout> | undefined
      const meta = params?._meta
      let progressToken: string | undefined
      if (onNotification !== undefined && isObject(meta) && meta.progressToken !== undefined) {
        progressToken = `gateway-${id}`
        this.progress.set(progressToken, { token: meta.progressToken, onNotification })
        params = { ...params, _meta: { ...meta, progressToken } }
      }
      this.pending.set(id, (r) => {
        if (timer !== undefined) clearTimeout(timer)
        if (progressToken !== undefined) this.progress.delete(progressToken)
        resume(r instanceof TransportError ? Effect.fail(r) : Effect.succeed(r))
      })
      const message = params === undefined ? { jsonrpc: "2.0", id, method } : { jsonrpc: "2.0", id, method, params }
      if (!this.write(message)) {
        this.pending.delete(id)
        resume(Effect.fail(new TransportError({ instanceId: this.instanceId, message: "process is not running", reachedBackend: false })))
        return
      }
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.cancel(id)
          resume(Effect.fail(new RequestTimeout({ instanceId: this.instanceId, timeoutMs })))
        }, timeoutMs)
      }
      return Effect.sync(() => {
        if (timer !== undefined) clearTimeout(timer)
        if (progressToken !== undefined) this.progress.delete(progressToken)
        this.cancel(id)
      })
    })
  }

  /** The caller gave up (timeout, client gone): tell the server to stop working on it. */
  private cancel(id: number) {
    if (this.pending.delete(id)) {
      this.write({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: id, reason: "cancelled by the gateway" } })
    }
  }

  onMessage(message: unknown, log: ConnectionLog, listeners: ReadonlySet<(n: JsonRpcNotification) => void>) {
    if (isResponse(message)) {
      const id = message.id
      const resume = typeof id === "number" ? this.pending.get(id) : undefined
      if (resume !== undefined) {
        this.pending.delete(id as number)
        resume(message)
      } else {
        log.debug(`response to an unknown or cancelled request id ${JSON.stringify(id)}`)
      }
    } else if (isRequest(message)) {
      this.write(answerServerRequest(message))
    } else if (isNotification(message)) {
      const token = message.method === "notifications/progress" && isObject(message.params) ? message.params.progressToken : undefined
      const waiting = typeof token === "string" ? this.progress.get(token) : undefined
      if (waiting !== undefined) {
        waiting.onNotification({ ...message, params: { ...message.params, progressToken: waiting.token } })
      } else if (listeners.size > 0) {
        for (const listener of listeners) listener(message)
      } else {
        log.debug(`notification ${message.method}`)
      }
    } else {
      log.debug(`ignoring a stdout line that is not JSON-RPC`)
    }
  }
}

/**
 * One long-lived child process per instance, started on first use (or `connect`) and
 * initialized once; concurrent requests share it, each under an id of the gateway's choosing.
 * If the process dies, in-flight requests fail and the next use starts a new one.
 * The process runs in its own process group, which is stopped as a whole on `close`.
 */
export const makeStdioConnection = (
  instance: StdioInstance,
  log: ConnectionLog,
  scope: Scope.Scope
): Connection => {
  let current: { readonly process: Process; readonly ready: Deferred.Deferred<Process, TransportError> } | undefined
  /** The process once initialized: requests go straight to it, without awaiting anything. */
  let initialized: Process | undefined
  /** Who hears the process's notifications that belong to no request (every client session on it). */
  const listeners = new Set<(n: JsonRpcNotification) => void>()
  let closed = false

  const notRunning = (message: string) => new TransportError({ instanceId: instance.id, message, reachedBackend: false })

  const spawnProcess = (): Process => {
    const [command, ...args] = instance.command
    const child = spawn(command!, args, {
      cwd: instance.working_dir,
      env: { ...process.env, ...instance.env },
      stdio: ["pipe", "pipe", "pipe"],
      // Its own process group, so that stopping it also stops what it started (npx, sh -c, ...).
      detached: true
    })
    const proc = new Process(child, instance.id)
    child.stdout!.setEncoding("utf8")
    child.stdout!.on("data", makeLineSplitter((line) => {
      let message: unknown
      try {
        message = JSON.parse(line)
      } catch {
        log.debug(`non-JSON line on stdout: ${line.slice(0, 200)}`)
        return
      }
      proc.onMessage(message, log, listeners)
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
      if (!closed) log.warn(`process exited (${signal ?? `code ${code}`})`)
      proc.markExited(`process exited (${signal ?? `code ${code}`})`)
    })
    return proc
  }

  const initialize = (proc: Process) =>
    Effect.gen(function*() {
      const response = yield* proc.call("initialize", initializeParams(), INITIALIZE_TIMEOUT_MS).pipe(
        Effect.catchTag("RequestTimeout", () => notRunning(`no answer to initialize within ${INITIALIZE_TIMEOUT_MS} ms`))
      )
      if ("error" in response) {
        return yield* notRunning(`initialize failed: ${response.error.message}`)
      }
      const version = isObject(response.result) ? response.result.protocolVersion : undefined
      if (typeof version !== "string" || !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
        return yield* notRunning(`server answered initialize with unsupported protocol version ${JSON.stringify(version)}`)
      }
      proc.initializeResult = response.result as Record<string, unknown>
      proc.write({ jsonrpc: "2.0", method: "notifications/initialized" })
      initialized = proc
      return proc
    })

  /** The running, initialized process: the current one, or a new one if there is none or it died. */
  const ready: Effect.Effect<Process, TransportError> = Effect.suspend(() => {
    if (closed) return Effect.fail(notRunning("instance was removed"))
    if (current !== undefined && !current.process.exited) return Deferred.await(current.ready)
    const proc = spawnProcess()
    const deferred = Deferred.unsafeMake<Process, TransportError>(FiberId.none)
    current = { process: proc, ready: deferred }
    log.info(`started process ${proc.child.pid ?? "(failed)"}: ${instance.command.join(" ")}`)
    // Initialization runs in the connection's scope, not the caller's: a caller that gives up
    // must not leave a half-initialized process behind.
    return initialize(proc).pipe(
      Effect.tapError((e) => Effect.sync(() => {
        log.warn(e.message)
        stopProcess(proc)
      })),
      Effect.intoDeferred(deferred),
      Effect.forkIn(scope),
      Effect.zipRight(Deferred.await(deferred))
    )
  })

  const request = (method: string, params: Record<string, unknown> | undefined, options?: RequestOptions) => {
    const timeoutMs = options?.timeoutMs
    const onNotification = options?.onNotification
    if (initialized !== undefined && !initialized.exited) return initialized.call(method, params, timeoutMs, onNotification)
    // Starting up: the wait for the process counts against the caller's time too. If the
    // process cannot be started, this request never reached it (so a tools/call may fail over).
    const started = Date.now()
    const starting = Effect.mapError(ready, (e) => new TransportError({ instanceId: e.instanceId, message: e.message, reachedBackend: false }))
    const waitReady = timeoutMs === undefined ? starting : starting.pipe(
      Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => new RequestTimeout({ instanceId: instance.id, timeoutMs }) })
    )
    return Effect.flatMap(waitReady, (proc) =>
      proc.call(method, params, timeoutMs === undefined ? undefined : Math.max(1, timeoutMs - (Date.now() - started)), onNotification))
  }

  const close = Effect.suspend(() => {
    closed = true
    const proc = current?.process
    current = undefined
    initialized = undefined
    return proc === undefined ? Effect.void : Effect.promise(() => stopProcess(proc))
  })

  const listen: Connection["listen"] = (onMessage) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const listener = (n: JsonRpcNotification) => onMessage(n)
        listeners.add(listener)
        return listener
      }),
      (listener) => Effect.sync(() => listeners.delete(listener))
    )

  return { request, initialize: Effect.map(ready, (proc) => proc.initializeResult), listen, close }
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
