import type { ChildProcess } from "node:child_process"
import type { InstanceDefinition } from "../domain/Instance.js"
import type { ConnectionLog } from "./Connection.js"
import type { SandboxSettings } from "../domain/Sandbox.js"
import type { SandboxProbes } from "./sandboxProbe.js"
import { SandboxUnavailable, serverPath, spawnServer, stopChild } from "./stdio.js"

type StdioInstance = Extract<InstanceDefinition, { transport: "stdio" }>

/**
 * Processes of stdio instances started ahead of need (`warm_processes`), waiting for a new
 * session's `initialize`, so that a session with a process of its own does not wait for a cold
 * start (`npx`, an interpreter, the server's own start-up). The gateway says how many each
 * instance keeps (`keep`: within its process bound, see ClientSessions); a session takes one
 * (`take`), and the next `keep` replaces it. A warm process that exits on its own is dropped.
 */
export class WarmProcesses {
  private readonly byInstance = new Map<InstanceDefinition, Array<ChildProcess>>()
  /** Warm processes being stopped (no longer wanted): shutdown waits for them too. */
  private readonly stopping = new Set<Promise<void>>()
  /** Set at shutdown: no warm process starts after it (a session ending late asks for one). */
  private closed = false

  constructor(
    private readonly logFor: (instance: InstanceDefinition) => ConnectionLog,
    /** What of the gateway's environment the instance's processes may see (its inherit_env list). */
    private readonly inheritEnvOf: (instance: InstanceDefinition) => ReadonlyArray<string>,
    /** The sandbox its processes start in (undefined: none). */
    private readonly sandboxOf: (instance: InstanceDefinition) => SandboxSettings | undefined = () => undefined,
    /** Whether sandboxes can be set up here (the Transport's probes); absent: a sandboxed instance keeps none warm. */
    private readonly sandboxProbes?: SandboxProbes | undefined
  ) {}

  /** Starts or stops warm processes of the instance until it has `count`. */
  keep(instance: InstanceDefinition, count: number) {
    if (instance.transport !== "stdio" || this.closed) return
    let warm = this.byInstance.get(instance)
    if (warm === undefined) {
      if (count === 0) return
      this.byInstance.set(instance, warm = [])
    }
    const pool = warm
    const inheritEnv = this.inheritEnvOf(instance)
    const settings = pool.length < count ? this.sandboxOf(instance) : undefined
    // Sandboxed: only once the probe has spoken (the instance's first process waited for it; a
    // warm process never does, being only an optimisation: the next keep starts it).
    const verdict = settings === undefined ? undefined : this.sandboxProbes?.known(serverPath(instance as StdioInstance, inheritEnv))
    const sandbox = settings === undefined || verdict === undefined ? undefined : { settings, verdict }
    while (pool.length < count && (settings === undefined || sandbox !== undefined)) {
      const log = this.logFor(instance)
      let child: ChildProcess
      try {
        child = spawnServer(instance as StdioInstance, inheritEnv, sandbox)
      } catch (e) {
        // (The instance's own start says why, once; a warm process is only an optimisation.)
        if (e instanceof SandboxUnavailable) break
        throw e
      }
      // (A write to a process that just died raises EPIPE; a command that cannot run raises `error`.)
      child.stdin?.on("error", () => {})
      const drop = (why: string) => {
        const at = pool.indexOf(child)
        if (at < 0) return
        pool.splice(at, 1)
        log.warn(why)
      }
      child.on("error", (e) => drop(`cannot run a warm process: ${e.message}`))
      child.once("exit", (code, signal) => drop(`a warm process exited before any session took it (${signal ?? `code ${code}`})`))
      pool.push(child)
      log.debug(`started warm process ${child.pid ?? "(failed)"}`)
    }
    while (pool.length > count) this.stopTracked(pool.pop()!)
    if (pool.length === 0) this.byInstance.delete(instance)
  }

  /** A warm process of the instance for a session, if one runs. */
  take(instance: InstanceDefinition): ChildProcess | undefined {
    const pool = this.byInstance.get(instance)
    while (pool !== undefined && pool.length > 0) {
      const child = pool.shift()!
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) return child
    }
    return undefined
  }

  count(instance: InstanceDefinition): number {
    return this.byInstance.get(instance)?.length ?? 0
  }

  /** Stops the instance's warm processes (removed), or every one (shutdown), and waits for them. */
  stop(instance?: InstanceDefinition): Promise<void> {
    if (instance === undefined) this.closed = true
    for (const [key, pool] of this.byInstance) {
      if (instance !== undefined && key !== instance) continue
      for (const child of pool.splice(0)) this.stopTracked(child)
      this.byInstance.delete(key)
    }
    // (At shutdown also those stopped earlier and still in their grace period: the gateway
    // must not exit while one runs, orphaned with nobody left to SIGKILL it.)
    return Promise.all(this.stopping).then(() => {})
  }

  private stopTracked(child: ChildProcess) {
    const stopped: Promise<void> = stopChild(child).finally(() => this.stopping.delete(stopped))
    this.stopping.add(stopped)
  }

  get size(): number {
    let n = 0
    for (const pool of this.byInstance.values()) n += pool.length
    return n
  }
}
