import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as net from "node:net"
import { it as effectIt } from "@effect/vitest"
import { Duration, Effect, TestClock } from "effect"
import { EventEmitter } from "node:events"
import { afterEach, describe, expect, it } from "vitest"
import { FlowWriter, lagKeyOf, ResponseFlow, type ResponseWriter, responseWriter, type StallReason, writeAnswer } from "../../src/http/ResponseFlow.js"
import { systemTimer, Timer } from "../../src/clock/Timer.js"

/** A server whose responses go through a flow; `handle` gets each response's writer. */
const serve = async (settings: Partial<ResponseFlow["settings"]>, handle: (res: http.ServerResponse, stalls: Array<StallReason>) => void) => {
  const flow = new ResponseFlow({ writeTimeoutMs: 30_000, maxBufferedBytesPerResponse: 1024 * 1024, maxBufferedBytes: 8 * 1024 * 1024, ...settings }, systemTimer)
  const stalls: Array<StallReason> = []
  const server = http.createServer((_req, res) => handle(res, stalls))
  flow.attach(server)
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as AddressInfo).port
  return {
    flow,
    stalls,
    port,
    close: () => {
      flow.close()
      server.closeAllConnections()
      return new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

/** A client that sends a GET and does not read until told to; `readAll` reads everything to the end. */
const lazyClient = (port: number) => {
  const socket = net.connect({ host: "127.0.0.1", port })
  socket.on("error", () => {})
  socket.pause()
  socket.write(`GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n`)
  let closed = false
  socket.on("close", () => (closed = true))
  return {
    socket,
    closed: () => closed,
    readAll: () =>
      new Promise<string>((resolve) => {
        const chunks: Array<Buffer> = []
        socket.on("data", (d: Buffer) => chunks.push(d))
        socket.on("close", () => resolve(Buffer.concat(chunks).toString("utf8")))
        socket.resume()
      })
  }
}

const waitFor = async (condition: () => boolean, ms = 10_000) => {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("timed out")
    await new Promise((r) => setTimeout(r, 20))
  }
}

const progress = (n: number) =>
  `event: message\ndata: ${JSON.stringify({ jsonrpc: "2.0", method: "notifications/progress", params: { progressToken: "p", progress: n, message: "x".repeat(500) } })}\n\n`

describe("ResponseFlow", () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => {
    while (cleanups.length > 0) await cleanups.pop()!()
  })

  it("coalesces progress while the client lags: what is held stays small, and the client gets the newest", async () => {
    let writer: ResponseWriter | undefined
    const server = await serve({}, (res) => {
      res.writeHead(200, { "content-type": "text/event-stream" })
      writer = responseWriter(res)
    })
    cleanups.push(server.close)
    const client = lazyClient(server.port)
    cleanups.push(() => client.socket.destroy())
    await waitFor(() => writer !== undefined)
    // Far more than the socket and the kernel take: 40 MB of progress.
    for (let n = 1; n <= 80_000; n++) writer!.event(progress(n), lagKeyOf({ method: "notifications/progress", params: { progressToken: "p" } }))
    expect(server.flow.held).toBeLessThan(2_000)
    writer!.end()
    const text = await client.readAll()
    expect(text).toContain(`"progress":80000`)
    expect(server.stalls).toEqual([])
  }, 30_000)

  it("keeps every message that is not droppable, in order, while the client lags; log messages are dropped", async () => {
    let writer: ResponseWriter | undefined
    const server = await serve({ maxBufferedBytesPerResponse: 4 * 1024 * 1024 }, (res) => {
      res.writeHead(200, { "content-type": "text/event-stream" })
      writer = responseWriter(res)
    })
    cleanups.push(server.close)
    const client = lazyClient(server.port)
    cleanups.push(() => client.socket.destroy())
    await waitFor(() => writer !== undefined)
    const frame = (message: unknown) => `data: ${JSON.stringify(message)}\n\n`
    const log = { jsonrpc: "2.0", method: "notifications/message", params: { level: "info", data: "l".repeat(300) } }
    for (let i = 0; i < 6000; i++) {
      const request = { jsonrpc: "2.0", id: i, method: "sampling/createMessage", params: { pad: "r".repeat(300) } }
      writer!.event(frame(request), lagKeyOf(request))
      writer!.event(frame(log), lagKeyOf(log))
    }
    expect(server.flow.held).toBeGreaterThan(0)
    writer!.end()
    const text = await client.readAll()
    const ids = Array.from(text.matchAll(/"id":(\d+)/g), (m) => Number(m[1]))
    expect(ids).toEqual(Array.from({ length: 6000 }, (_, i) => i))
    // (Those written before the client fell behind went out; the rest were dropped.)
    expect(text.match(/notifications\/message/g)!.length).toBeLessThan(6000)
    expect(server.stalls).toEqual([])
  }, 30_000)

  it("bounds a pipelined response too (it has no socket of its own until the one before it ends)", async () => {
    let second: ResponseWriter | undefined
    let requests = 0
    const server = await serve({}, (res) => {
      if (++requests === 1) return void setTimeout(() => res.end("first"), 300)
      res.writeHead(200, { "content-type": "text/event-stream" })
      second = responseWriter(res)
    })
    cleanups.push(server.close)
    const socket = net.connect({ host: "127.0.0.1", port: server.port })
    cleanups.push(() => socket.destroy())
    socket.on("error", () => {})
    socket.write("GET /1 HTTP/1.1\r\nhost: x\r\n\r\nGET /2 HTTP/1.1\r\nhost: x\r\n\r\n")
    await waitFor(() => second !== undefined)
    expect(second).toBeInstanceOf(FlowWriter)
    for (let n = 1; n <= 20_000; n++) second!.event(progress(n), "progress:p")
    expect(server.flow.held).toBeLessThan(2_000)
  })

  it("closes a response whose waiting events pass max_buffered_bytes_per_response, and says why", async () => {
    const server = await serve({ maxBufferedBytesPerResponse: 64 * 1024 }, (res, stalls) => {
      res.writeHead(200, { "content-type": "text/event-stream" })
      const writer = responseWriter(res, (reason) => stalls.push(reason))
      // Responses (not droppable) until past the bound.
      for (let i = 0; i < 20_000 && !res.destroyed; i++) writer.event(`data: ${JSON.stringify({ jsonrpc: "2.0", id: i, result: { pad: "y".repeat(200) } })}\n\n`)
    })
    cleanups.push(server.close)
    const client = lazyClient(server.port)
    cleanups.push(() => client.socket.destroy())
    await waitFor(() => server.stalls.length > 0)
    expect(server.stalls).toEqual(["response_buffer_full"])
    expect(server.flow.held).toBe(0)
  })

  it("disconnects a client that takes nothing for the write timeout", async () => {
    let writer: ResponseWriter | undefined
    const server = await serve({ writeTimeoutMs: 300 }, (res, stalls) => {
      res.writeHead(200, { "content-type": "text/event-stream" })
      writer = responseWriter(res, (reason) => stalls.push(reason))
    })
    cleanups.push(server.close)
    const client = lazyClient(server.port)
    cleanups.push(() => client.socket.destroy())
    await waitFor(() => writer !== undefined)
    // A server that keeps reporting progress, as fast as it can.
    let n = 0
    const producer = setInterval(() => {
      for (let i = 0; i < 1000; i++) writer!.event(progress(++n), `progress:p`)
    }, 10)
    cleanups.push(() => clearInterval(producer))
    await waitFor(() => server.stalls.length > 0)
    clearInterval(producer)
    expect(server.stalls).toEqual(["write_timeout"])
    await client.readAll()
    expect(client.closed()).toBe(true)
  })

  it("writes a large answer a slice at a time, intact (multi-byte characters across the slices)", async () => {
    const body = "é😀x".repeat(100_000)
    const server = await serve({}, (res) => writeAnswer(res, 200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) }, body))
    cleanups.push(server.close)
    const response = await fetch(`http://127.0.0.1:${server.port}/`)
    expect(await response.text()).toBe(body)
    expect(server.flow.held).toBe(0)
  })

  it("past the total, cuts off the client that has taken nothing for the longest, not one that reads", async () => {
    // (Larger than what the kernel's buffers take of an answer nobody reads.)
    const big = "z".repeat(16 * 1024 * 1024)
    const server = await serve({ maxBufferedBytes: 20 * 1024 * 1024 }, (res, stalls) => {
      res.on("close", () => {
        if (!res.writableFinished) stalls.push("gateway_buffer_full")
      })
      writeAnswer(res, 200, { "content-type": "text/plain", "content-length": big.length }, big)
    })
    cleanups.push(server.close)
    const stalled = lazyClient(server.port)
    cleanups.push(() => stalled.socket.destroy())
    await waitFor(() => server.flow.held > 8 * 1024 * 1024)
    // A second later, a reading client's answer takes the total past the bound. (A fixed wait: a
    // client counts as stalled after a second without progress, STALLED_MS in ResponseFlow.ts,
    // read from Date.now, which a test cannot move.)
    await new Promise((r) => setTimeout(r, 1100))
    const response = await fetch(`http://127.0.0.1:${server.port}/`)
    expect((await response.text()).length).toBe(big.length)
    expect(server.flow.closed.gateway_buffer_full).toBe(1)
    await stalled.readAll()
    expect(stalled.closed()).toBe(true)
  })
})

/** A response as the flow sees one: `write` says whether the socket took it; 'drain' when it did. */
const fakeResponse = () => {
  const res = Object.assign(new EventEmitter(), {
    destroyed: false,
    writableEnded: false,
    writableFinished: false,
    accepting: false,
    write: (_text: string) => res.accepting,
    end: () => {
      res.writableEnded = true
    },
    destroy: () => {
      res.destroyed = true
      res.emit("close")
    }
  })
  return res
}

describe("the write timeout, on the gateway's clock", () => {
  effectIt.scoped("a response that takes nothing for write_timeout is closed; progress ('drain') starts the time again", () =>
    Effect.gen(function*() {
      const flow = new ResponseFlow({ writeTimeoutMs: 1000, maxBufferedBytesPerResponse: 1024 * 1024, maxBufferedBytes: 8 * 1024 * 1024 }, yield* Timer)
      yield* Effect.addFinalizer(() => Effect.sync(() => flow.close()))
      const res = fakeResponse()
      const stalls: Array<StallReason> = []
      const writer = flow.writer(res as unknown as http.ServerResponse, (reason) => stalls.push(reason))
      writer.event("data: 1\n\n")
      expect(writer.isLagging).toBe(true)
      // Swept every 250 ms: the client took something at 500 ms, so the timeout runs from there.
      yield* TestClock.adjust(Duration.millis(500))
      res.emit("drain")
      writer.event("data: 2\n\n")
      yield* TestClock.adjust(Duration.millis(999))
      expect(stalls).toEqual([])
      yield* TestClock.adjust(Duration.millis(1))
      expect(stalls).toEqual(["write_timeout"])
      expect(res.destroyed).toBe(true)
      expect(flow.closed.write_timeout).toBe(1)
    }).pipe(Effect.provide(Timer.layerTest)))
})
