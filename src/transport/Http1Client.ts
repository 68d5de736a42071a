import * as net from "node:net"
import * as tls from "node:tls"
import { Http1Error, type Http1Exchange, type Http1Handler } from "./Http1Exchange.js"
import { type Http1Headers, requestPayload } from "./http1RequestHead.js"
import { PooledRequest, PooledSocket, type SocketPool } from "./PooledSocket.js"

/**
 * The HTTP/1.1 client under the HTTP transports: keep-alive sockets per origin, one request at
 * a time on each, the answer parsed as it arrives (a JSON body, or an SSE stream that may run
 * for hours).
 *
 * Why not node:http: its ClientRequest, Agent and IncomingMessage are general streams, and
 * they were a third of the gateway's CPU per proxied request and 12 KB of its allocations
 * (measured in bench/: a JSON-reading proxy on this client used half the user CPU of the same
 * proxy on node:http's Agent). The gateway sends one message per request, as one write, and
 * reads one answer: that needs a small parser, not streams.
 *
 * Its parts: the pool of one origin (this file), a request's framing (http1RequestHead.ts), a
 * pooled connection and the answer read on it (PooledSocket.ts), what a caller is told
 * (Http1Exchange.ts).
 *
 * What it does, as node:http did for the gateway: `Host` and `Content-Length` set, header
 * names and values checked before anything is sent (a forwarded header cannot inject lines),
 * bodies by Content-Length, chunked, or until the connection closes; 1xx answers skipped; a
 * socket kept for the next request only after a complete answer, never after `Connection:
 * close`, an abort, or an error. Idle sockets are closed after the server's `Keep-Alive:
 * timeout` hint less a second, or 4 s without one (servers commonly close idle connections
 * after 5 s; reusing one as they close it fails the request).
 */

export interface Http1PoolOptions {
  /** Extra TLS options for https origins (tests give their own certificate authority). */
  readonly tls?: tls.ConnectionOptions | undefined
}

/**
 * Keep-alive sockets to one origin (scheme, host, port) with one set of URL credentials and TLS
 * options, shared by every connection to it with those (see Http1Pools.ts).
 */
export class Http1Pool implements SocketPool {
  private readonly idle: Array<PooledSocket> = []
  private readonly active = new Set<PooledSocket>()
  private sweeper: ReturnType<typeof setInterval> | undefined
  private closed = false
  private tlsSession: Buffer | undefined
  /** The Host header, as node:http wrote it (the port only when it is not the scheme's default). */
  readonly host: string

  /** `Basic …` for credentials in the URL, if any. */
  private readonly authorization: string | undefined

  constructor(readonly url: URL, private readonly options: Http1PoolOptions = {}) {
    this.host = url.host
    this.authorization = url.username === "" && url.password === ""
      ? undefined
      : `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString("base64")}`
  }

  /**
   * Sends one request: the head and body in one write, on an idle socket or a new one. Throws
   * Http1HeaderError (before anything is sent) for a header no HTTP message may carry.
   */
  request(method: string, path: string, headers: Http1Headers, body: string | undefined, handler: Http1Handler): Http1Exchange {
    const exchange = new PooledRequest(this, requestPayload(method, path, headers, body, this.host, this.authorization), handler)
    this.send(exchange)
    return exchange
  }

  /** Writes a request on an idle socket or a new one (again, for a request whose kept connection had gone stale). */
  send(exchange: PooledRequest) {
    if (this.closed) {
      queueMicrotask(() => exchange.handler.onError(new Http1Error("ECONNABORTED", "the connection pool was closed", false)))
      return
    }
    const pooled = this.take()
    pooled.start(exchange)
    this.active.add(pooled)
    if (typeof exchange.payload === "string") pooled.socket.write(exchange.payload, "utf8")
    else pooled.socket.write(exchange.payload)
  }

  /** The most recently used idle socket that is still good, or a new one. */
  private take(): PooledSocket {
    // wall clock: a socket's keep-alive age is measured as the server measures it, in real time.
    const now = Date.now()
    for (let pooled = this.idle.pop(); pooled !== undefined; pooled = this.idle.pop()) {
      const socket = pooled.socket
      if (!socket.destroyed && !socket.readableEnded && socket.writable && now - pooled.idleSince < pooled.idleMs) {
        pooled.reused = true
        return pooled
      }
      socket.destroy()
    }
    const port = Number(this.url.port) || (this.url.protocol === "https:" ? 443 : 80)
    const host = this.url.hostname.startsWith("[") ? this.url.hostname.slice(1, -1) : this.url.hostname
    let socket: net.Socket
    if (this.url.protocol === "https:") {
      const secure = tls.connect({
        host,
        port,
        servername: net.isIP(host) === 0 ? host : undefined,
        ALPNProtocols: ["http/1.1"],
        session: this.tlsSession,
        ...this.options.tls
      })
      secure.on("session", (session: Buffer) => {
        this.tlsSession = session
      })
      socket = secure
    } else {
      socket = net.connect({ host, port })
    }
    socket.setKeepAlive(true, 1_000)
    return new PooledSocket(socket, this)
  }

  /** A socket whose answer is complete: kept for the next request (the newest is reused first). */
  release(pooled: PooledSocket) {
    this.active.delete(pooled)
    if (this.closed || pooled.idleMs === 0) return void pooled.socket.destroy()
    // wall clock: see take.
    pooled.idleSince = Date.now()
    this.idle.push(pooled)
    if (this.sweeper === undefined) {
      // Idle sockets past their time are closed even when no request comes to find them.
      // raw timer: it checks sockets against the server's keep-alive, in real time, unref'd.
      this.sweeper = setInterval(() => this.sweep(), 1_000)
      this.sweeper.unref()
    }
  }

  /** A socket that failed or closed: no longer handed out. */
  forget(pooled: PooledSocket) {
    this.active.delete(pooled)
    const at = this.idle.indexOf(pooled)
    if (at !== -1) this.idle.splice(at, 1)
  }

  private sweep() {
    // wall clock: see take.
    const now = Date.now()
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const pooled = this.idle[i]!
      if (now - pooled.idleSince >= pooled.idleMs) {
        this.idle.splice(i, 1)
        pooled.socket.destroy()
      }
    }
    if (this.idle.length === 0 && this.sweeper !== undefined) {
      clearInterval(this.sweeper)
      this.sweeper = undefined
    }
  }

  /** Sockets open now, idle and in use (for tests and the bench's descriptor counts). */
  get size(): number {
    return this.idle.length + this.active.size
  }

  /** Closes every socket; requests in progress fail. */
  close() {
    this.closed = true
    if (this.sweeper !== undefined) clearInterval(this.sweeper)
    for (const pooled of this.idle.splice(0)) pooled.socket.destroy()
    // A request already written may have reached the server (ECONNRESET: not "never sent");
    // one whose connection was still being made did not.
    for (const pooled of [...this.active]) {
      if (pooled.socket.connecting) pooled.fail("ECONNABORTED", "the connection pool was closed before the request was sent")
      else pooled.fail("ECONNRESET", "the connection pool was closed while the request was in flight")
    }
  }
}
