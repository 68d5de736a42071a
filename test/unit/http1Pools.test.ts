import * as http from "node:http"
import type * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import type { Http1Pool } from "../../src/transport/Http1Client.js"
import { Http1Pools } from "../../src/transport/Http1Pools.js"

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c()
})

/** A keep-alive server on 127.0.0.1:0 that records the Authorization of every request, by connection. */
const serve = async () => {
  const seen: Array<{ readonly connection: number; readonly authorization: string | undefined }> = []
  let connections = 0
  const ids = new WeakMap<net.Socket, number>()
  const server = http.createServer({ keepAliveTimeout: 5_000 }, (req, res) => {
    seen.push({ connection: ids.get(req.socket)!, authorization: req.headers.authorization })
    req.resume()
    res.writeHead(200, { "content-length": 2 }).end("{}")
  })
  server.on("connection", (socket) => ids.set(socket, ++connections))
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  cleanups.push(() => server.close())
  cleanups.push(() => server.closeAllConnections())
  return { port: (server.address() as net.AddressInfo).port, seen }
}

const send = (pool: Http1Pool) =>
  new Promise<void>((resolve, reject) =>
    pool.request("POST", "/mcp", { "content-type": "application/json" }, "{}", {
      onHead: () => {},
      onData: () => {},
      onEnd: resolve,
      onError: reject
    })
  )

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`

describe("Http1Pools", () => {
  it("never shares a pool, a socket or credentials between URLs of one origin with different credentials", async () => {
    const { port, seen } = await serve()
    const pools = new Http1Pools()
    cleanups.push(() => pools.close())
    const alice = pools.acquire(new URL(`http://alice:one@127.0.0.1:${port}/mcp`))
    const bob = pools.acquire(new URL(`http://bob:two@127.0.0.1:${port}/mcp`))
    const anonymous = pools.acquire(new URL(`http://127.0.0.1:${port}/other`))
    const aliceAgain = pools.acquire(new URL(`http://alice:one@127.0.0.1:${port}/elsewhere`))
    expect(alice.pool).not.toBe(bob.pool)
    expect(alice.pool).not.toBe(anonymous.pool)
    // The same origin and credentials: one pool (its sockets shared), whatever the path.
    expect(aliceAgain.pool).toBe(alice.pool)
    expect(pools.size).toBe(3)
    // Interleaved, sequentially (so that idle sockets are there to be reused) and at once.
    for (let i = 0; i < 5; i++) {
      await send(alice.pool)
      await send(bob.pool)
      await send(anonymous.pool)
    }
    await Promise.all(Array.from({ length: 10 }, (_, i) => send([alice.pool, bob.pool, anonymous.pool][i % 3]!)))
    const byConnection = new Map<number, Set<string | undefined>>()
    for (const s of seen) byConnection.set(s.connection, (byConnection.get(s.connection) ?? new Set()).add(s.authorization))
    // Every connection carried one identity's requests only.
    for (const identities of byConnection.values()) expect(identities.size).toBe(1)
    expect(new Set(seen.map((s) => s.authorization))).toEqual(new Set([basic("alice", "one"), basic("bob", "two"), undefined]))
    expect(seen.filter((s) => s.authorization === basic("alice", "one"))).toHaveLength(9)
    expect(seen.filter((s) => s.authorization === basic("bob", "two"))).toHaveLength(8)
  })

  it("keys pools by TLS options too", () => {
    const pools = new Http1Pools()
    cleanups.push(() => pools.close())
    const url = new URL("https://127.0.0.1:9/mcp")
    const ownCa = { ca: "-----BEGIN CERTIFICATE-----" }
    const a = pools.acquire(url)
    const b = pools.acquire(url, { tls: ownCa })
    const c = pools.acquire(url, { tls: ownCa })
    const d = pools.acquire(url, { tls: { ca: "-----BEGIN CERTIFICATE-----" } })
    expect(a.pool).not.toBe(b.pool)
    expect(b.pool).toBe(c.pool)
    // Other options (even equal-looking ones) are another pool: options are told apart by identity.
    expect(d.pool).not.toBe(b.pool)
  })

  it("closes a pool when its last user lets go, and every pool on close; a pool asked for after close is closed", async () => {
    const { port } = await serve()
    const pools = new Http1Pools()
    const url = new URL(`http://127.0.0.1:${port}/mcp`)
    const first = pools.acquire(url)
    const second = pools.acquire(url)
    await send(first.pool)
    expect(first.pool.size).toBe(1)
    first.release()
    first.release()
    expect(pools.size).toBe(1)
    second.release()
    expect(pools.size).toBe(0)
    expect(first.pool.size).toBe(0)
    const third = pools.acquire(url)
    await send(third.pool)
    pools.close()
    expect(third.pool.size).toBe(0)
    expect(pools.size).toBe(0)
    const late = pools.acquire(url)
    await expect(send(late.pool)).rejects.toMatchObject({ code: "ECONNABORTED" })
    late.release()
  })
})
