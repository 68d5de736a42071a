import * as fs from "node:fs"
import type * as net from "node:net"
import { repeat, type TimerShape } from "../clock/Timer.js"

/**
 * Caps on the gateway's client connections, in all and per client address, so that a flood of
 * connections cannot take the file descriptors its backends, health checks and config watcher
 * need. At a cap, room is made by shedding first a connection that has not sent a request yet
 * (the oldest), then an idle keep-alive one (the least recently used); only when every connection
 * carries a request is the new one refused (503, closed). Connections that send no request within
 * `first_request_timeout` are closed anyway, by one sweep a second.
 */
export interface ConnectionLimits {
  readonly maxConnections: number
  readonly maxConnectionsPerAddress: number
  readonly firstRequestTimeoutMs: number
}

/** When the limit cannot be read (not Linux): the usual soft limit. */
const FALLBACK_DESCRIPTOR_LIMIT = 1024
/** Descriptors kept for everything but clients: backends' sockets and pipes, files, the config watcher, Redis. */
const RESERVED_DESCRIPTORS = 256

/** The soft limit on open files of this process (Node has no getrlimit: /proc/self/limits on Linux). */
export const descriptorLimit = (): number => {
  try {
    const limits = fs.readFileSync("/proc/self/limits", "utf8")
    const line = /^Max open files\s+(\d+|unlimited)/m.exec(limits)
    if (line !== null) return line[1] === "unlimited" ? 1_048_576 : Number(line[1])
  } catch {
    // (Not Linux: the fallback.)
  }
  return FALLBACK_DESCRIPTOR_LIMIT
}

/**
 * The caps left unset, from the descriptor limit: clients get what is left after a reserve, at
 * most 80% of it; one address at most half of that (a reverse proxy in front is one address).
 */
export const defaultConnectionCaps = (descriptors: number) => {
  const maxConnections = Math.max(16, Math.min(Math.floor(descriptors * 0.8), descriptors - RESERVED_DESCRIPTORS))
  return { maxConnections, maxConnectionsPerAddress: Math.max(8, Math.floor(maxConnections / 2)) }
}

interface AddressEntry {
  readonly address: string
  count: number
  /** Its connections that have sent no request yet, oldest first (with their time of arrival). */
  readonly fresh: Map<net.Socket, number>
  /** Its connections kept alive between requests, least recently used first. */
  readonly kept: Set<net.Socket>
}

const REFUSED = (() => {
  const body = JSON.stringify({ error: { type: "too_many_connections", message: "the gateway has too many open connections; retry later" } })
  return `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n${body}`
})()

export const makeConnectionGate = (
  limits: ConnectionLimits,
  /** The clock of the first-request timeout and its sweep (the Timer: tests drive it with TestClock). */
  timer: TimerShape,
  onShed: (what: "shed_unused" | "shed_idle" | "refused" | "first_request_timeout") => void
) => {
  const byAddress = new Map<string, AddressEntry>()
  const addressOf = new WeakMap<net.Socket, AddressEntry>()
  /** Every connection that has sent no request yet, oldest first. */
  const fresh = new Map<net.Socket, number>()
  /** Every connection kept alive between requests, least recently used first. */
  const kept = new Set<net.Socket>()
  let open = 0

  const oldest = <T>(set: Map<net.Socket, T> | Set<net.Socket>): net.Socket | undefined => set.keys().next().value

  /** Closes the oldest connection of one of the sets (which the socket's 'close' removes it from): whether there was one. */
  const shedFrom = (set: Map<net.Socket, number> | Set<net.Socket>, what: "shed_unused" | "shed_idle"): boolean => {
    const socket = oldest(set)
    if (socket === undefined) return false
    forget(socket)
    socket.destroy()
    onShed(what)
    return true
  }

  const forget = (socket: net.Socket) => {
    const entry = addressOf.get(socket)
    if (entry === undefined) return
    addressOf.delete(socket)
    open--
    entry.count--
    entry.fresh.delete(socket)
    entry.kept.delete(socket)
    fresh.delete(socket)
    kept.delete(socket)
    if (entry.count === 0 && byAddress.get(entry.address) === entry) byAddress.delete(entry.address)
  }

  /** A new connection: admitted (possibly by shedding another), or refused and closed. */
  const admit = (socket: net.Socket): boolean => {
    const address = socket.remoteAddress ?? ""
    let entry = byAddress.get(address)
    if (entry !== undefined && entry.count >= limits.maxConnectionsPerAddress) {
      if (!shedFrom(entry.fresh, "shed_unused") && !shedFrom(entry.kept, "shed_idle")) return refuse(socket)
    }
    if (open >= limits.maxConnections) {
      if (!shedFrom(fresh, "shed_unused") && !shedFrom(kept, "shed_idle")) return refuse(socket)
    }
    entry = byAddress.get(address)
    if (entry === undefined) {
      entry = { address, count: 0, fresh: new Map(), kept: new Set() }
      byAddress.set(address, entry)
    }
    entry.count++
    open++
    const now = timer.now()
    entry.fresh.set(socket, now)
    fresh.set(socket, now)
    addressOf.set(socket, entry)
    socket.once("close", () => forget(socket))
    return true
  }

  const refuse = (socket: net.Socket): false => {
    onShed("refused")
    socket.on("error", () => {})
    socket.end(REFUSED)
    // (A client that does not read its 503 does not keep the descriptor.)
    // raw timer: a socket's last second, real time whatever clock the gateway runs on, and
    // unref'd (a refused client must not hold the process up).
    setTimeout(() => socket.destroy(), 1000).unref()
    return false
  }

  /** A request arrived on the connection: it is neither unused nor idle while it is served. */
  const requestStarted = (socket: net.Socket) => {
    const entry = addressOf.get(socket)
    if (entry === undefined) return
    if (fresh.delete(socket)) entry.fresh.delete(socket)
    else if (kept.delete(socket)) entry.kept.delete(socket)
  }

  /** The connection's last request in progress ended: idle, kept alive, the first to shed after unused ones. */
  const requestsDone = (socket: net.Socket) => {
    const entry = addressOf.get(socket)
    if (entry === undefined || socket.destroyed) return
    kept.add(socket)
    entry.kept.add(socket)
  }

  /** Still silent: in the unused set, and not a byte of a request read (a request being received is the server's headersTimeout's). */
  const silent = (socket: net.Socket) => fresh.has(socket) && (socket.bytesRead ?? 0) === 0

  // Connections that have sent no request in time go, oldest first (the map is in arrival order).
  const stopSweeping = repeat(timer, Math.max(50, Math.min(1000, Math.floor(limits.firstRequestTimeoutMs / 4))), () => {
    const deadline = timer.now() - limits.firstRequestTimeoutMs
    const due: Array<net.Socket> = []
    for (const [socket, since] of fresh) {
      if (since > deadline) break
      if (silent(socket)) due.push(socket)
    }
    if (due.length === 0) return
    // raw timer: the sweep runs in the timers phase, before this turn of the event loop reads the
    // sockets; a request that arrived while the loop was busy (a loaded machine) is read in the
    // poll phase, and setImmediate runs after it. Closing at once closed connections whose first
    // request was already in their socket (the many-clients test's "other side closed" failures).
    setImmediate(() => {
      for (const socket of due) {
        if (!silent(socket)) continue
        forget(socket)
        socket.destroy()
        onShed("first_request_timeout")
      }
    })
  })

  return {
    admit,
    requestStarted,
    requestsDone,
    /** Open client connections now. */
    size: () => open,
    close: stopSweeping
  }
}
