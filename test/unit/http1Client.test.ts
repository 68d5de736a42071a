import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { Http1Pool } from "../../src/transport/Http1Client.js"
import type { Http1Error, Http1Head } from "../../src/transport/Http1Exchange.js"
import { Http1HeaderError } from "../../src/transport/http1RequestHead.js"
import { waitFor } from "../support/waitFor.js"

/** What a request was told, in order. */
interface Outcome {
  readonly head?: Http1Head
  readonly text: string
  readonly chunks: number
  readonly error?: Http1Error
}

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c()
})

/** A server on 127.0.0.1:0 that counts its connections; its URL. */
const serve = async (handler: http.RequestListener, options: http.ServerOptions = {}) => {
  const server = http.createServer({ keepAliveTimeout: 5_000, ...options }, handler)
  let connections = 0
  server.on("connection", () => connections++)
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  cleanups.push(() => server.close())
  cleanups.push(() => server.closeAllConnections())
  return { url: new URL(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}/mcp?x=1`), connections: () => connections, server }
}

/** A raw TCP server that answers every request with `answer` (bytes of its choosing). */
const serveRaw = async (answer: (socket: net.Socket, request: string) => void) => {
  const server = net.createServer((socket) => {
    let text = ""
    socket.on("data", (d) => {
      text += d.toString("latin1")
      if (text.includes("\r\n\r\n")) {
        const request = text
        text = ""
        answer(socket, request)
      }
    })
    socket.on("error", () => {})
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  cleanups.push(() => server.close())
  return new URL(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}/`)
}

const poolFor = (url: URL, options?: ConstructorParameters<typeof Http1Pool>[1]) => {
  const pool = new Http1Pool(url, options)
  cleanups.push(() => pool.close())
  return pool
}

const send = (pool: Http1Pool, options: { method?: string; headers?: Record<string, string>; body?: string; onData?: (text: string) => void } = {}) =>
  new Promise<Outcome>((resolve) => {
    let head: Http1Head | undefined
    let text = ""
    let chunks = 0
    pool.request(options.method ?? "POST", "/mcp?x=1", options.headers ?? { "content-type": "application/json" }, options.body, {
      onHead: (h) => (head = h),
      onData: (t) => {
        text += t
        chunks++
        options.onData?.(t)
      },
      onEnd: () => resolve({ head, text, chunks }),
      onError: (error) => resolve({ head, text, chunks, error })
    })
  })

describe("Http1Client", () => {
  it("sends one message and reads a Content-Length answer; the socket is reused for the next request", async () => {
    const seen: Array<{ method?: string; url?: string; host?: string; length?: string; body: string }> = []
    const { url, connections } = await serve((req, res) => {
      let body = ""
      req.setEncoding("utf8")
      req.on("data", (c) => (body += c))
      req.on("end", () => {
        seen.push({ method: req.method, url: req.url, host: req.headers.host, length: req.headers["content-length"], body })
        res.writeHead(200, { "content-type": "application/json", "mcp-session-id": "s-1" }).end(JSON.stringify({ echo: body }))
      })
    })
    const pool = poolFor(url)
    const body = JSON.stringify({ text: "héllo ✓" })
    const first = await send(pool, { body })
    const second = await send(pool, { body })
    expect(first.error).toBeUndefined()
    expect(first.head?.status).toBe(200)
    expect(first.head?.headers["mcp-session-id"]).toBe("s-1")
    expect(JSON.parse(first.text)).toEqual({ echo: body })
    expect(second.text).toBe(first.text)
    // Content-Length counts bytes (UTF-8), the Host is the origin's, the path keeps its query.
    expect(seen[0]).toEqual({ method: "POST", url: "/mcp?x=1", host: url.host, length: String(Buffer.byteLength(body)), body })
    expect(connections()).toBe(1)
    expect(pool.size).toBe(1)
  })

  it("reads a chunked answer whose characters and chunk lines are split across reads", async () => {
    const url = await serveRaw((socket) => {
      const body = Buffer.from("{\"text\":\"añb€c\"}")
      // Split inside the multi-byte characters and inside the chunk framing.
      const framed = Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n${body.length.toString(16)};ext=1\r\n`), body, Buffer.from("\r\n0\r\nx-trailer: 1\r\n\r\n")])
      let at = 0
      const next = () => {
        if (at >= framed.length) return
        socket.write(framed.subarray(at, at + 3))
        at += 3
        setImmediate(next)
      }
      next()
    })
    const pool = poolFor(url)
    const outcome = await send(pool, { body: "{}" })
    expect(outcome.error).toBeUndefined()
    expect(outcome.text).toBe("{\"text\":\"añb€c\"}")
    // Complete and well framed: kept for the next request.
    expect(pool.size).toBe(1)
  })

  it("delivers an SSE stream as it arrives, before the answer ends", async () => {
    let finish: () => void = () => {}
    const { url } = await serve((req, res) => {
      req.resume()
      res.writeHead(200, { "content-type": "text/event-stream" })
      res.write("data: one\n\n")
      finish = () => res.end("data: two\n\n")
    })
    const pool = poolFor(url)
    const texts: Array<string> = []
    const outcome = send(pool, {
      body: "{}",
      onData: (t) => {
        texts.push(t)
        if (texts.length === 1) finish()
      }
    })
    const done = await outcome
    expect(done.head?.headers["content-type"]).toBe("text/event-stream")
    expect(texts.join("")).toBe("data: one\n\ndata: two\n\n")
    expect(texts[0]).toBe("data: one\n\n")
  })

  it("reads an answer without a length until the server closes, and does not reuse that socket", async () => {
    const url = await serveRaw((socket) => {
      socket.end("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"until\":\"close\"}")
    })
    const pool = poolFor(url)
    const outcome = await send(pool, { body: "{}" })
    expect(outcome.error).toBeUndefined()
    expect(outcome.text).toBe("{\"until\":\"close\"}")
    expect(pool.size).toBe(0)
  })

  it("skips 1xx answers before the real one", async () => {
    const url = await serveRaw((socket) => {
      socket.write("HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
    })
    const outcome = await send(poolFor(url), { body: "{}" })
    expect(outcome.head?.status).toBe(200)
    expect(outcome.head?.headers.link).toBeUndefined()
    expect(outcome.text).toBe("{}")
  })

  it("a refused connection fails with its code, and nothing of an answer", async () => {
    const closed = net.createServer()
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r))
    const port = (closed.address() as net.AddressInfo).port
    await new Promise<void>((r) => closed.close(() => r()))
    const outcome = await send(poolFor(new URL(`http://127.0.0.1:${port}/`)), { body: "{}" })
    expect(outcome.error?.code).toBe("ECONNREFUSED")
    expect(outcome.error?.answered).toBe(false)
  })

  it("a connection cut in the middle of the body fails the request as answered", async () => {
    const url = await serveRaw((socket) => {
      socket.write("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial\":")
      setTimeout(() => socket.destroy(), 20)
    })
    const pool = poolFor(url)
    const outcome = await send(pool, { body: "{}" })
    expect(outcome.head?.status).toBe(200)
    expect(outcome.error?.code).toBe("ECONNRESET")
    expect(outcome.error?.answered).toBe(true)
    expect(pool.size).toBe(0)
  })

  it("an answer that is not HTTP fails the request and closes the socket", async () => {
    const url = await serveRaw((socket) => socket.write("HELLO THERE\r\n\r\n"))
    const pool = poolFor(url)
    const outcome = await send(pool, { body: "{}" })
    expect(outcome.error?.code).toBe("HPE_INVALID")
    expect(pool.size).toBe(0)
  })

  it("two different Content-Lengths are refused (an answer nobody can frame)", async () => {
    const url = await serveRaw((socket) => socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}"))
    const outcome = await send(poolFor(url), { body: "{}" })
    expect(outcome.error?.code).toBe("HPE_INVALID")
  })

  it("an abort closes the connection and nothing more is told", async () => {
    let serverSawClose = false
    const { url } = await serve((req, res) => {
      req.resume()
      res.writeHead(200, { "content-type": "text/event-stream" })
      res.write("data: first\n\n")
      res.on("close", () => (serverSawClose = true))
    })
    const pool = poolFor(url)
    const told: Array<string> = []
    await new Promise<void>((resolve) => {
      const exchange = pool.request("POST", "/", {}, "{}", {
        onHead: () => told.push("head"),
        onData: () => {
          told.push("data")
          exchange.abort()
          resolve()
        },
        onEnd: () => told.push("end"),
        onError: () => told.push("error")
      })
    })
    await waitFor(() => serverSawClose, { what: "the server to see the connection closed" })
    // Nothing after the abort: no end, no error, though the connection has closed by now.
    expect(told).toEqual(["head", "data"])
    expect(pool.size).toBe(0)
  })

  it("refuses a header value with a line break (no header injection) and sends nothing", async () => {
    let requests = 0
    const { url } = await serve((_req, res) => {
      requests++
      res.end()
    })
    const pool = poolFor(url)
    const handler = { onHead: () => {}, onData: () => {}, onEnd: () => {}, onError: () => {} }
    expect(() => pool.request("POST", "/", { "x-forwarded": "a\r\nx-injected: 1" }, "{}", handler)).toThrow(Http1HeaderError)
    expect(() => pool.request("POST", "/", { "bad name": "a" }, "{}", handler)).toThrow(Http1HeaderError)
    // A fixed wait, for something that must NOT happen: a request sent would reach this local
    // server well within 50 ms.
    await new Promise((r) => setTimeout(r, 50))
    expect(requests).toBe(0)
    expect(pool.size).toBe(0)
  })

  it("does not reuse a socket after Connection: close, nor after an answer longer than it said", async () => {
    const { url, connections } = await serve((req, res) => {
      req.resume()
      res.writeHead(200, { connection: "close", "content-length": 2 }).end("{}")
    })
    const pool = poolFor(url)
    await send(pool, { body: "{}" })
    await send(pool, { body: "{}" })
    expect(connections()).toBe(2)

    const extra = await serveRaw((socket) => socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}GARBAGE"))
    const second = poolFor(extra)
    expect((await send(second, { body: "{}" })).text).toBe("{}")
    expect(second.size).toBe(0)
  })

  it("a socket the server closed while idle is not used again: the next request opens a new one", async () => {
    const { url, connections } = await serve((req, res) => {
      req.resume()
      res.writeHead(200, { "content-length": 2 }).end("{}")
    }, { keepAliveTimeout: 50 })
    const pool = poolFor(url)
    expect((await send(pool, { body: "{}" })).error).toBeUndefined()
    await waitFor(() => pool.size === 0, { what: "the idle socket the server closed to leave the pool" })
    expect((await send(pool, { body: "{}" })).error).toBeUndefined()
    expect(connections()).toBe(2)
  })

  it("closes idle sockets after the server's Keep-Alive hint less a second", async () => {
    const url = await serveRaw((socket) => socket.write("HTTP/1.1 200 OK\r\nkeep-alive: timeout=1\r\ncontent-length: 2\r\n\r\n{}"))
    const pool = poolFor(url)
    await send(pool, { body: "{}" })
    // A hint of one second leaves no time to reuse it.
    expect(pool.size).toBe(0)
  })

  it("speaks HTTPS, checking the server's certificate", async () => {
    const dir = new URL("../fixtures/tls/", import.meta.url)
    const cert = fs.readFileSync(new URL("cert.pem", dir))
    const server = https.createServer({ cert, key: fs.readFileSync(new URL("key.pem", dir)) }, (req, res) => {
      req.resume()
      res.writeHead(200, { "content-type": "application/json" }).end("{\"secure\":true}")
    })
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    cleanups.push(() => server.close())
    cleanups.push(() => server.closeAllConnections())
    const port = (server.address() as net.AddressInfo).port
    const trusted = await send(poolFor(new URL(`https://localhost:${port}/`), { tls: { ca: cert } }), { body: "{}" })
    expect(trusted.error).toBeUndefined()
    expect(trusted.text).toBe("{\"secure\":true}")
    // Without the certificate's authority: refused before anything is sent.
    const untrusted = await send(poolFor(new URL(`https://localhost:${port}/`)), { body: "{}" })
    expect(untrusted.error?.code).toBe("DEPTH_ZERO_SELF_SIGNED_CERT")
    expect(untrusted.error?.answered).toBe(false)
  })

  it("a closed pool fails what is in flight as possibly delivered, and what comes after as never sent", async () => {
    let received = 0
    const { url } = await serve((req) => {
      received++
      req.resume()
    })
    const pool = poolFor(url)
    const pending = send(pool, { body: "{}" })
    await waitFor(() => received === 1, { what: "the request at the server" })
    pool.close()
    // Written to the server: it may be running it (a tools/call must not go to another instance).
    expect((await pending).error?.code).toBe("ECONNRESET")
    expect((await send(pool, { body: "{}" })).error).toMatchObject({ code: "ECONNABORTED", answered: false })
  })

  it("sends credentials in the endpoint's URL as Basic auth, unless an Authorization header is given", async () => {
    const seen: Array<string | undefined> = []
    const { url } = await serve((req, res) => {
      seen.push(req.headers.authorization)
      req.resume()
      res.writeHead(200, { "content-length": 2 }).end("{}")
    })
    const withUser = new URL(url)
    withUser.username = "us%40er"
    withUser.password = "p%3Ass"
    const pool = poolFor(withUser)
    await send(pool, { body: "{}" })
    await send(pool, { body: "{}", headers: { authorization: "Bearer token" } })
    expect(seen).toEqual([`Basic ${Buffer.from("us@er:p:ss").toString("base64")}`, "Bearer token"])
  })

  it("does not hand out a kept socket the server closed while it was idle", async () => {
    // Keep-alive answers, each connection closed by the server a moment after (no hint given).
    const url = await serveRaw((socket) => {
      socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
      setTimeout(() => socket.end(), 5)
    })
    const pool = poolFor(url)
    for (let i = 0; i < 5; i++) {
      expect((await send(pool, { body: "{}" })).error).toBeUndefined()
      // The server's FIN arrives: the socket leaves the pool, and the next request opens another.
      await waitFor(() => pool.size === 0, { what: "the socket the server closed to leave the pool" })
    }
  })

})
