import { Http1Pool, type Http1PoolOptions } from "./Http1Client.js"

/** A pool as a connection holds it: `release` when the connection closes (idempotent). */
export interface AcquiredPool {
  readonly pool: Http1Pool
  readonly release: () => void
}

/**
 * The keep-alive pools of one Transport (created in its layer's scope, closed with it), shared
 * by every connection to the same server with the same credentials: the instance's own session
 * and each client session's. With a pool per connection, every idle MCP session held idle
 * sockets of its own (tens of KB each in the gateway, and a file descriptor); shared, idle
 * sessions hold none and requests reuse whatever socket is free. No cap on sockets: a standing
 * stream holds one for as long as it runs, and a cap would make every request to that server
 * queue behind them. A pool is closed when the last connection that uses it lets go.
 *
 * A pool is keyed by origin (scheme, host, port) AND by what the pool itself adds to every
 * request or connection: the URL's credentials (sent as Basic auth) and the TLS options. Two
 * instances on one host:port with different `user:password@` get different pools, so a socket,
 * and the credentials a pool writes, never serve another instance's requests. (Headers given
 * per request, such as an instance's `headers`, are written by each request and need no key.)
 */
export class Http1Pools {
  private readonly pools = new Map<string, { readonly pool: Http1Pool; users: number }>()
  /** TLS options told apart by identity (they may hold keys and certificates: not turned into text). */
  private readonly tlsIds = new WeakMap<object, number>()
  private nextTlsId = 1
  private closed = false

  acquire(url: URL, options: Http1PoolOptions = {}): AcquiredPool {
    const key = this.keyOf(url, options)
    let entry = this.pools.get(key)
    if (entry === undefined) {
      const pool = new Http1Pool(url, options)
      // (A pool asked for after close is closed at once: its requests fail rather than open sockets nobody closes.)
      if (this.closed) pool.close()
      entry = { pool, users: 0 }
      if (!this.closed) this.pools.set(key, entry)
    }
    entry.users++
    const acquired = entry
    let released = false
    return {
      pool: acquired.pool,
      release: () => {
        if (released) return
        released = true
        if (--acquired.users === 0) {
          if (this.pools.get(key) === acquired) this.pools.delete(key)
          acquired.pool.close()
        }
      }
    }
  }

  /** Pools open now (for tests). */
  get size(): number {
    return this.pools.size
  }

  /** Closes every pool (the Transport's layer is released): requests in progress fail, sockets close. */
  close() {
    this.closed = true
    for (const { pool } of this.pools.values()) pool.close()
    this.pools.clear()
  }

  private keyOf(url: URL, options: Http1PoolOptions): string {
    let tlsId = 0
    if (options.tls !== undefined) {
      tlsId = this.tlsIds.get(options.tls) ?? 0
      if (tlsId === 0) {
        tlsId = this.nextTlsId++
        this.tlsIds.set(options.tls, tlsId)
      }
    }
    // The credentials as the URL spells them (the pool decodes them the same way for every key).
    return `${url.protocol}//${url.host}\n${url.username}\n${url.password}\n${tlsId}`
  }
}
