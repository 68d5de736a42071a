import { Effect } from "effect"
import type { InstanceDefinition } from "../domain/Instance.js"
import type { Connection, RequestNow } from "./Connection.js"

/** One caller's connection to one instance, with what tells whether it may be stopped. */
export interface CallerEntry {
  readonly caller: string
  connection: Connection
  /** Stops it (its process, its session) and releases what it holds. */
  readonly close: Effect.Effect<void>
  /** Requests in flight on it. */
  inflight: number
  /** Client sessions that use it as their backend. */
  holders: number
  /** When it was last used (epoch ms, the Clock's). */
  lastUsed: number
}

/**
 * With auth on, a process (legacy SSE or HTTP session) is shared only within one caller: each
 * credential's requests to an instance go to a connection of that caller's own, made on its
 * first request, never to one another credential uses (a server's session resources, tasks,
 * subscriptions and log level are then the caller's alone). Bounded per instance by
 * `max_sessions_per_instance`: a new caller that finds every one taken stops the least recently
 * used one that serves nothing now, or is refused when every one is busy. One nobody used for
 * `session_process_idle_timeout` stops (`idle`).
 */
export class CallerConnections {
  private readonly byInstance = new Map<InstanceDefinition, Map<string, CallerEntry>>()

  constructor(
    private readonly open: (instance: InstanceDefinition, caller: string) => { readonly connection: Connection; readonly close: Effect.Effect<void> },
    private readonly now: () => number
  ) {}

  /**
   * The caller's connection to the instance, made if need be; a string (why not) when every one
   * of the instance's `max` is busy. `evicted` gets what had to stop to make room.
   */
  get(instance: InstanceDefinition, caller: string, max: number, evicted: (entry: CallerEntry) => void): CallerEntry | string {
    let entries = this.byInstance.get(instance)
    const known = entries?.get(caller)
    if (known !== undefined) return known
    if (entries !== undefined && entries.size >= max) {
      let oldest: CallerEntry | undefined
      for (const entry of entries.values()) {
        if (entry.inflight === 0 && entry.holders === 0 && (oldest === undefined || entry.lastUsed < oldest.lastUsed)) oldest = entry
      }
      if (oldest === undefined) {
        return `every one of its ${max} callers' processes (max_sessions_per_instance) is busy`
      }
      entries.delete(oldest.caller)
      evicted(oldest)
    }
    if (entries === undefined) this.byInstance.set(instance, entries = new Map())
    const made = this.open(instance, caller)
    const entry: CallerEntry = { caller, connection: made.connection, close: made.close, inflight: 0, holders: 0, lastUsed: this.now() }
    entry.connection = this.counted(entry, made.connection)
    entries.set(caller, entry)
    return entry
  }

  /** Its requests counted in flight, so that it is never stopped under them. */
  private counted(entry: CallerEntry, base: Connection): Connection {
    const now = this.now
    const begin = () => {
      entry.inflight++
      entry.lastUsed = now()
    }
    const end = () => {
      entry.inflight--
      entry.lastUsed = now()
    }
    const requestNow: RequestNow | undefined = base.requestNow === undefined ? undefined : (method, params, options, done) => {
      let finished = false
      const finish = () => {
        if (finished) return
        finished = true
        end()
      }
      begin()
      const cancel = base.requestNow!(method, params, options, (exit) => {
        finish()
        done(exit)
      })
      if (cancel === undefined) {
        finish()
        return undefined
      }
      return () => {
        finish()
        cancel()
      }
    }
    return {
      ...base,
      requestNow,
      request: (method, params, options) =>
        Effect.suspend(() => {
          begin()
          return Effect.ensuring(base.request(method, params, options), Effect.sync(end))
        })
    }
  }

  /** Entries nobody used for their instance's `idle` ms, taken out (the caller closes them). */
  takeIdle(idleMs: (instance: InstanceDefinition) => number): Array<CallerEntry> {
    const now = this.now()
    const taken: Array<CallerEntry> = []
    for (const [instance, entries] of this.byInstance) {
      const limit = idleMs(instance)
      for (const entry of entries.values()) {
        if (entry.inflight === 0 && entry.holders === 0 && now - entry.lastUsed > limit) {
          entries.delete(entry.caller)
          taken.push(entry)
        }
      }
      if (entries.size === 0) this.byInstance.delete(instance)
    }
    return taken
  }

  /** Every entry of an instance (removed), or of all of them (shutdown), taken out. */
  take(instance?: InstanceDefinition): Array<CallerEntry> {
    const taken: Array<CallerEntry> = []
    for (const [key, entries] of this.byInstance) {
      if (instance !== undefined && key !== instance) continue
      taken.push(...entries.values())
      this.byInstance.delete(key)
    }
    return taken
  }

  get size(): number {
    let n = 0
    for (const entries of this.byInstance.values()) n += entries.size
    return n
  }
}
