import * as net from "node:net"
import { StringDecoder } from "node:string_decoder"
import * as tls from "node:tls"

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
 * What it does, as node:http did for the gateway: `Host` and `Content-Length` set, header
 * names and values checked before anything is sent (a forwarded header cannot inject lines),
 * bodies by Content-Length, chunked, or until the connection closes; 1xx answers skipped; a
 * socket kept for the next request only after a complete answer, never after `Connection:
 * close`, an abort, or an error. Idle sockets are closed after the server's `Keep-Alive:
 * timeout` hint less a second, or 4 s without one (servers commonly close idle connections
 * after 5 s; reusing one as they close it fails the request).
 */

/**
 * The head of an answer: its status and headers (names lower-cased; repeated ones joined with
 * ", "). A value may share the memory of the whole head: copy one kept for long (flatString).
 */
export interface Http1Head {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
}

/** What a request is told, in this order: the head once, the body's text (UTF-8) as it comes, then its end, or an error at any point. */
export interface Http1Handler {
  readonly onHead: (head: Http1Head) => void
  readonly onData: (text: string) => void
  readonly onEnd: () => void
  readonly onError: (error: Http1Error) => void
}

/**
 * A request that failed below HTTP. `code` is the system's (ECONNREFUSED, ENOTFOUND, ...), or
 * ECONNRESET when the connection ended before the answer did, or HPE_INVALID when the answer is
 * not HTTP. `answered`: part of an answer had arrived.
 */
export class Http1Error extends Error {
  constructor(readonly code: string, message: string, readonly answered: boolean) {
    super(message)
  }
}

/** A copy of `s` that shares no memory with the string it was cut from (a header value kept for hours). */
export const flatString = (s: string): string => Buffer.from(s, "latin1").toString("latin1")

/** A header the client refuses to send (a name that is not a token, a value with a line break): nothing was sent. */
export class Http1HeaderError extends Error {}

export type Http1Headers = Readonly<Record<string, string | number | ReadonlyArray<string> | undefined>>

/** One request on its way; `abort` closes its connection (how Streamable HTTP cancels a request). */
export interface Http1Exchange {
  readonly abort: () => void
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** Characters no header value may hold (the set node:http refuses). */
const INVALID_VALUE = /[^\t\x20-\x7e\x80-\xff]/
const NON_ASCII = /[^\x00-\x7f]/
const CRLFCRLF = Buffer.from("\r\n\r\n")
/** Largest answer head read (node:http's default). */
const MAX_HEAD_BYTES = 16 * 1024
/** How long an idle socket is kept when the server gives no Keep-Alive hint. */
const DEFAULT_IDLE_MS = 4_000
const KEEP_ALIVE_TIMEOUT = /(?:^|[,\s])timeout\s*=\s*(\d+)/i

/** Body framing of the answer being read. */
const enum Body {
  None,
  Length,
  Chunked,
  UntilClose
}

/** Where a chunked body is. */
const enum Chunk {
  Size,
  Data,
  DataEnd,
  Trailers
}

/** Names checked once: the same few headers go out on every request. */
const checkedNames = new Set<string>()
const checkName = (name: string) => {
  if (checkedNames.has(name)) return
  if (!TOKEN.test(name)) throw new Http1HeaderError(`invalid header name ${JSON.stringify(name)}`)
  if (checkedNames.size < 1024) checkedNames.add(name)
}
const checkValue = (name: string, value: string) => {
  if (INVALID_VALUE.test(value)) throw new Http1HeaderError(`invalid character in the value of header ${JSON.stringify(name)}`)
}

/** One request: what is written (kept for a resend on a new connection) and where it is now. */
class Request implements Http1Exchange {
  pooled: PooledSocket | undefined = undefined
  /** Sent again once already (see PooledSocket.fail). */
  resent = false

  constructor(private readonly pool: Http1Pool, readonly payload: string | Buffer, readonly handler: Http1Handler) {}

  abort() {
    const pooled = this.pooled
    if (pooled !== undefined && pooled.exchange === this) {
      pooled.exchange = undefined
      this.pool.forget(pooled)
      pooled.socket.destroy()
    }
  }
}

/**
 * One connection to the origin. Its fields hold the state of the answer being read, reset for
 * each request, so that a request allocates little beyond its own text.
 */
class PooledSocket {
  /** The request being answered on this connection, if any. */
  exchange: Request | undefined
  /** Handed out again after an answer (not a new connection): a stale one, if the server closed it meanwhile. */
  reused = false
  idleSince = 0
  idleMs = DEFAULT_IDLE_MS
  private head: Buffer | undefined
  private answered = false
  private body = Body.None
  private remaining = 0
  private chunk = Chunk.Size
  private line = ""
  private keepAlive = true
  private decoder: StringDecoder | undefined

  constructor(readonly socket: net.Socket, private readonly pool: Http1Pool) {
    socket.setNoDelay(true)
    socket.on("data", (data: Buffer) => this.onData(data))
    socket.on("end", () => this.onEnd())
    socket.on("error", (e: NodeJS.ErrnoException) => this.fail(e.code ?? "ECONNRESET", e.message))
    socket.on("close", () => this.fail("ECONNRESET", "the connection closed before the answer ended"))
  }

  start(exchange: Request) {
    this.exchange = exchange
    exchange.pooled = this
    this.head = undefined
    this.answered = false
    this.body = Body.None
    this.keepAlive = true
  }

  private onData(data: Buffer) {
    if (this.exchange === undefined) {
      // Nothing was asked: a server that speaks out of turn is not one to reuse.
      this.socket.destroy()
      return
    }
    this.answered = true
    let at = 0
    while (at < data.length && this.exchange !== undefined) {
      at = this.head !== undefined || this.body === Body.None ? this.readHead(data, at) : this.readBody(data, at)
      if (at < 0) return
    }
  }

  /** Reads (part of) the head; the offset where the body starts, or -1 when the exchange failed. */
  private readHead(data: Buffer, from: number): number {
    let bytes = from === 0 ? data : data.subarray(from)
    if (this.head !== undefined) bytes = Buffer.concat([this.head, bytes])
    // (The terminator may straddle two reads: searched in the joined bytes.)
    const end = bytes.indexOf(CRLFCRLF)
    if (end === -1) {
      if (bytes.length > MAX_HEAD_BYTES) return this.invalid("the answer's head is too large")
      this.head = bytes
      return data.length
    }
    if (end > MAX_HEAD_BYTES) return this.invalid("the answer's head is too large")
    const consumed = data.length - (bytes.length - (end + 4))
    this.head = undefined
    // One string for the head, cut into lines and fields. (Values longer than a dozen characters
    // are slices of it, and keep it alive while they live: whoever keeps one for long copies it,
    // as http.ts does with a session id.)
    const text = bytes.toString("latin1", 0, end)
    const statusEnd = text.indexOf("\r\n")
    const statusLine = statusEnd === -1 ? text : text.slice(0, statusEnd)
    const status = /^HTTP\/1\.([01]) (\d{3})(?: |$)/.exec(statusLine)
    if (status === null) return this.invalid(`not an HTTP/1.1 answer: ${JSON.stringify(statusLine.slice(0, 40))}`)
    const code = Number(status[2])
    const headers: Record<string, string> = {}
    for (let lineStart = statusEnd === -1 ? text.length : statusEnd + 2; lineStart < text.length;) {
      let lineEnd = text.indexOf("\r\n", lineStart)
      if (lineEnd === -1) lineEnd = text.length
      const colon = text.indexOf(":", lineStart)
      const first = text.charCodeAt(lineStart)
      if (colon <= lineStart || colon >= lineEnd || first === 32 || first === 9) return this.invalid("a malformed header line in the answer")
      const name = text.slice(lineStart, colon).toLowerCase()
      const value = text.slice(colon + 1, lineEnd).trim()
      const previous = headers[name]
      headers[name] = previous === undefined ? value : `${previous}, ${value}`
      lineStart = lineEnd + 2
    }
    if (code < 200) {
      // 100 Continue, 103 Early Hints: the answer is still to come. (101 is never asked for.)
      if (code === 101) return this.invalid("the server switched protocols unasked")
      this.body = Body.None
      return consumed
    }
    const connection = headers.connection?.toLowerCase()
    this.keepAlive = status[1] === "1" ? connection === undefined || !/(?:^|,)\s*close\s*(?:,|$)/.test(connection) : connection !== undefined && /keep-alive/.test(connection)
    const hint = headers["keep-alive"] === undefined ? null : KEEP_ALIVE_TIMEOUT.exec(headers["keep-alive"])
    this.idleMs = hint === null ? DEFAULT_IDLE_MS : Math.max(0, Number(hint[1]) * 1000 - 1000)
    const encoding = headers["transfer-encoding"]
    const length = headers["content-length"]
    if (code === 204 || code === 304) {
      this.body = Body.Length
      this.remaining = 0
    } else if (encoding !== undefined) {
      if (!/(?:^|,)\s*chunked\s*$/i.test(encoding)) {
        this.body = Body.UntilClose
        this.keepAlive = false
      } else {
        this.body = Body.Chunked
        this.chunk = Chunk.Size
        this.line = ""
      }
    } else if (length !== undefined) {
      // Repeated equal lengths are one length; different ones are an answer nobody can frame.
      const lengths = length.split(",")
      const first = lengths[0]!.trim()
      if (!/^\d+$/.test(first) || lengths.some((l) => l.trim() !== first)) return this.invalid("an invalid Content-Length in the answer")
      this.body = Body.Length
      this.remaining = Number(first)
    } else {
      this.body = Body.UntilClose
      this.keepAlive = false
    }
    const exchange = this.exchange!
    exchange.handler.onHead({ status: code, headers })
    if (this.exchange !== exchange) return -1
    if (this.body === Body.Length && this.remaining === 0) {
      this.complete(consumed === data.length)
      return -1
    }
    return consumed
  }

  /** Reads body bytes from `from`; the offset after what it took, or -1 once the exchange ended. */
  private readBody(data: Buffer, from: number): number {
    const exchange = this.exchange!
    switch (this.body) {
      case Body.Length: {
        const end = Math.min(data.length, from + this.remaining)
        this.remaining -= end - from
        if (this.remaining === 0 && this.decoder === undefined) {
          // The whole body in one read (the usual case): decoded at once, no decoder state.
          exchange.handler.onData(data.toString("utf8", from, end))
        } else {
          this.text(exchange, data.subarray(from, end))
        }
        if (this.exchange !== exchange) return -1
        if (this.remaining === 0) {
          // More than the server said it would send: the connection is not one to reuse.
          this.complete(end === data.length)
          return -1
        }
        return end
      }
      case Body.UntilClose:
        this.text(exchange, from === 0 ? data : data.subarray(from))
        return data.length
      case Body.Chunked:
        return this.readChunked(data, from)
      default:
        return data.length
    }
  }

  private readChunked(data: Buffer, from: number): number {
    const exchange = this.exchange!
    let at = from
    while (at < data.length) {
      if (this.chunk === Chunk.Data) {
        const end = Math.min(data.length, at + this.remaining)
        this.text(exchange, data.subarray(at, end))
        if (this.exchange !== exchange) return -1
        this.remaining -= end - at
        at = end
        if (this.remaining === 0) this.chunk = Chunk.DataEnd
        continue
      }
      // Size lines, the CRLF after data, trailers: line by line.
      const newline = data.indexOf(10, at)
      if (newline === -1) {
        this.line += data.toString("latin1", at, data.length)
        if (this.line.length > 4096) return this.invalid("a malformed chunk in the answer")
        return data.length
      }
      const line = (this.line + data.toString("latin1", at, newline)).replace(/\r$/, "")
      this.line = ""
      at = newline + 1
      if (this.chunk === Chunk.DataEnd) {
        if (line !== "") return this.invalid("a malformed chunk in the answer")
        this.chunk = Chunk.Size
      } else if (this.chunk === Chunk.Size) {
        const size = /^([0-9a-fA-F]{1,12})\s*(?:;.*)?$/.exec(line)
        if (size === null) return this.invalid("a malformed chunk size in the answer")
        this.remaining = parseInt(size[1]!, 16)
        this.chunk = this.remaining === 0 ? Chunk.Trailers : Chunk.Data
      } else if (line === "") {
        // The blank line after the (usually absent) trailers: the body is complete.
        this.complete(at === data.length)
        return -1
      }
    }
    return at
  }

  private text(exchange: Request, bytes: Buffer) {
    const text = (this.decoder ??= new StringDecoder("utf8")).write(bytes)
    if (text !== "") exchange.handler.onData(text)
  }

  /** The answer is complete; `reusable` unless the server sent more than it framed. */
  private complete(reusable = true) {
    const exchange = this.exchange!
    this.exchange = undefined
    if (this.decoder !== undefined) {
      const rest = this.decoder.end()
      this.decoder = undefined
      if (rest !== "") exchange.handler.onData(rest)
    }
    if (reusable && this.keepAlive && !this.socket.destroyed) this.pool.release(this)
    else {
      this.pool.forget(this)
      this.socket.destroy()
    }
    exchange.handler.onEnd()
  }

  private onEnd() {
    if (this.exchange === undefined) {
      // The server closed an idle connection (its keep-alive time ran out): not to be handed out.
      this.pool.forget(this)
      this.socket.destroy()
      return
    }
    // The server finished writing: an answer read until close ends here; any other is cut short.
    if (this.body === Body.UntilClose && this.head === undefined) {
      this.keepAlive = false
      this.complete(false)
    }
  }

  private invalid(message: string): number {
    this.fail("HPE_INVALID", message)
    this.socket.destroy()
    return -1
  }

  /** The connection failed or closed: the request in progress (if any) fails; the socket is no longer pooled. */
  fail(code: string, message: string) {
    this.pool.forget(this)
    const exchange = this.exchange
    if (exchange === undefined) return
    this.exchange = undefined
    this.decoder = undefined
    this.socket.destroy()
    // A kept connection the server had closed: the write itself failed (EPIPE), so nothing of
    // the request reached the server, and it goes again, once, on a new connection.
    if (code === "EPIPE" && this.reused && !this.answered && !exchange.resent) {
      exchange.resent = true
      return this.pool.send(exchange)
    }
    exchange.handler.onError(new Http1Error(code, message, this.answered))
  }
}

export interface Http1PoolOptions {
  /** Extra TLS options for https origins (tests give their own certificate authority). */
  readonly tls?: tls.ConnectionOptions | undefined
}

/**
 * Keep-alive sockets to one origin (scheme, host, port) with one set of URL credentials and TLS
 * options, shared by every connection to it with those (see Http1Pools.ts).
 */
export class Http1Pool {
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
    let head = `${method} ${path} HTTP/1.1\r\n`
    let hasHost = false
    let hasAuthorization = false
    for (const name in headers) {
      const value = headers[name]
      if (value === undefined) continue
      checkName(name)
      if (!hasHost && name.length === 4 && name.toLowerCase() === "host") hasHost = true
      if (!hasAuthorization && name.length === 13 && name.toLowerCase() === "authorization") hasAuthorization = true
      if (typeof value === "object") {
        for (const v of value) {
          checkValue(name, v)
          head += `${name}: ${v}\r\n`
        }
      } else {
        const text = typeof value === "string" ? value : String(value)
        checkValue(name, text)
        head += `${name}: ${text}\r\n`
      }
    }
    if (!hasHost) head += `host: ${this.host}\r\n`
    // Credentials in the endpoint's URL (user:password@host) go as Basic auth, as node:http sent them.
    if (!hasAuthorization && this.authorization !== undefined) head += `authorization: ${this.authorization}\r\n`
    if (body !== undefined) head += `content-length: ${Buffer.byteLength(body)}\r\n`
    head += "\r\n"
    // One write: headers are Latin-1 and the body UTF-8, the same bytes when the head is ASCII.
    const payload = body === undefined
      ? Buffer.from(head, "latin1")
      : !NON_ASCII.test(head)
      ? head + body
      : Buffer.concat([Buffer.from(head, "latin1"), Buffer.from(body, "utf8")])
    const exchange = new Request(this, payload, handler)
    this.send(exchange)
    return exchange
  }

  /** Writes a request on an idle socket or a new one (again, for a request whose kept connection had gone stale). */
  send(exchange: Request) {
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
