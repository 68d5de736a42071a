import type * as net from "node:net"
import { StringDecoder } from "node:string_decoder"
import { Http1Error, type Http1Exchange, type Http1Handler } from "./Http1Exchange.js"

/**
 * One keep-alive connection of a pool (Http1Client.ts) and the answer read on it: the head, then
 * the body by Content-Length, chunked, or until the connection closes; 1xx answers skipped. The
 * socket goes back to its pool only after a complete answer, never after `Connection: close`, an
 * abort, or an error.
 */

/** What a socket needs of the pool it belongs to. */
export interface SocketPool {
  /** A socket whose answer is complete: kept for the next request. */
  readonly release: (pooled: PooledSocket) => void
  /** A socket that failed or closed: no longer handed out. */
  readonly forget: (pooled: PooledSocket) => void
  /** Writes a request on an idle socket or a new one. */
  readonly send: (exchange: PooledRequest) => void
}

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

/** One request: what is written (kept for a resend on a new connection) and where it is now. */
export class PooledRequest implements Http1Exchange {
  pooled: PooledSocket | undefined = undefined
  /** Sent again once already (see PooledSocket.fail). */
  resent = false

  constructor(private readonly pool: SocketPool, readonly payload: string | Buffer, readonly handler: Http1Handler) {}

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
export class PooledSocket {
  /** The request being answered on this connection, if any. */
  exchange: PooledRequest | undefined
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

  constructor(readonly socket: net.Socket, private readonly pool: SocketPool) {
    socket.setNoDelay(true)
    socket.on("data", (data: Buffer) => this.onData(data))
    socket.on("end", () => this.onEnd())
    socket.on("error", (e: NodeJS.ErrnoException) => this.fail(e.code ?? "ECONNRESET", e.message))
    socket.on("close", () => this.fail("ECONNRESET", "the connection closed before the answer ended"))
  }

  start(exchange: PooledRequest) {
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

  private text(exchange: PooledRequest, bytes: Buffer) {
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
