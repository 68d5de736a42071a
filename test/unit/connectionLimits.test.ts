import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as net from "node:net"
import { it as effectIt } from "@effect/vitest"
import { Duration, Effect, TestClock } from "effect"
import { EventEmitter } from "node:events"
import { afterEach, describe, expect, it } from "vitest"
import { defaultConnectionCaps, descriptorLimit, makeConnectionGate } from "../../src/http/connectionLimits.js"
import { systemTimer, Timer } from "../../src/clock/Timer.js"

/** A server wired to a gate as HttpServer.ts wires it; its requests are answered only when `answer` is called. */
const gatedServer = async (limits: Parameters<typeof makeConnectionGate>[0]) => {
  const shed: Array<string> = []
  const gate = makeConnectionGate(limits, systemTimer, (what) => shed.push(what))
  const waiting: Array<() => void> = []
  const server = http.createServer((req, res) => {
    gate.requestStarted(req.socket)
    res.once("close", () => gate.requestsDone(req.socket))
    waiting.push(() => res.end("ok"))
  })
  server.on("connection", (socket: net.Socket) => void gate.admit(socket))
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as AddressInfo).port
  return {
    gate,
    shed,
    port,
    answerAll: () => waiting.splice(0).forEach((answer) => answer()),
    close: () => {
      gate.close()
      server.closeAllConnections()
      return new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

const connect = (port: number) => {
  const socket = net.connect({ host: "127.0.0.1", port })
  socket.on("error", () => {})
  let received = ""
  let closed = false
  socket.on("data", (d: Buffer) => (received += d.toString()))
  socket.on("close", () => (closed = true))
  return {
    socket,
    received: () => received,
    closed: () => closed,
    connected: () => new Promise<void>((resolve) => socket.once("connect", () => resolve()))
  }
}

const waitFor = async (condition: () => boolean, ms = 10_000) => {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("timed out")
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe("connection limits", () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => {
    while (cleanups.length > 0) await cleanups.pop()!()
  })

  it("derives its caps from the descriptor limit, leaving room for everything else", () => {
    expect(defaultConnectionCaps(20_000)).toEqual({ maxConnections: 16_000, maxConnectionsPerAddress: 8_000 })
    expect(defaultConnectionCaps(1024)).toEqual({ maxConnections: 768, maxConnectionsPerAddress: 384 })
    // This process's own limit, read from /proc on Linux.
    expect(descriptorLimit()).toBeGreaterThanOrEqual(256)
  })

  it("makes room by closing the oldest unused connection, then an idle one; refuses with 503 when every one is busy", async () => {
    const server = await gatedServer({ maxConnections: 2, maxConnectionsPerAddress: 2, firstRequestTimeoutMs: 60_000 })
    cleanups.push(server.close)
    const unused = connect(server.port)
    await unused.connected()
    const busy = connect(server.port)
    await busy.connected()
    busy.socket.write("GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    await waitFor(() => server.gate.size() === 2)
    // A third: the unused one goes, not the one with a request.
    const third = connect(server.port)
    cleanups.push(() => [unused, busy, third].forEach((c) => c.socket.destroy()))
    await waitFor(() => unused.closed())
    expect(busy.closed()).toBe(false)
    expect(server.shed).toEqual(["shed_unused"])
    third.socket.write("GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    await waitFor(() => server.shed.length === 1 && server.gate.size() === 2)
    // Both carry a request now: a fourth is refused.
    const fourth = connect(server.port)
    cleanups.push(() => fourth.socket.destroy())
    await waitFor(() => fourth.closed())
    expect(fourth.received()).toContain("503 Service Unavailable")
    expect(fourth.received()).toContain("too_many_connections")
    // Answered, the two turn idle (kept alive): a new connection sheds the least recently used.
    server.answerAll()
    await waitFor(() => busy.received().includes("ok") && third.received().includes("ok"))
    const fifth = connect(server.port)
    cleanups.push(() => fifth.socket.destroy())
    await waitFor(() => busy.closed())
    expect(third.closed()).toBe(false)
    expect(server.shed).toEqual(["shed_unused", "refused", "shed_idle"])
  })

  it("counts per address", async () => {
    const server = await gatedServer({ maxConnections: 100, maxConnectionsPerAddress: 3, firstRequestTimeoutMs: 60_000 })
    cleanups.push(server.close)
    const clients = Array.from({ length: 5 }, () => connect(server.port))
    cleanups.push(() => clients.forEach((c) => c.socket.destroy()))
    await waitFor(() => clients.filter((c) => c.closed()).length === 2)
    expect(server.gate.size()).toBe(3)
  })
})

/** A socket as the gate sees one: an address, 'close' once destroyed. */
const fakeSocket = (address: string) => {
  const socket = Object.assign(new EventEmitter(), {
    remoteAddress: address,
    destroyed: false,
    bytesRead: 0,
    destroy() {
      if (socket.destroyed) return
      socket.destroyed = true
      socket.emit("close")
    }
  })
  return socket
}

/** The sweep closes in the check phase (after the loop reads its sockets): wait for it. */
const afterPoll = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

describe("the first-request timeout, on the gateway's clock", () => {
  effectIt.scoped("a connection that sends no request within first_request_timeout is closed; one that sent a request stays", () =>
    Effect.gen(function*() {
      const shed: Array<string> = []
      const gate = makeConnectionGate({ maxConnections: 10, maxConnectionsPerAddress: 10, firstRequestTimeoutMs: 1000 }, yield* Timer, (what) => shed.push(what))
      yield* Effect.addFinalizer(() => Effect.sync(gate.close))
      const silent = fakeSocket("10.0.0.1")
      const asked = fakeSocket("10.0.0.1")
      gate.admit(silent as unknown as net.Socket)
      gate.admit(asked as unknown as net.Socket)
      gate.requestStarted(asked as unknown as net.Socket)
      // Swept every 250 ms (a quarter of the timeout): still there at 999 ms, gone at 1000.
      yield* TestClock.adjust(Duration.millis(999))
      yield* afterPoll
      expect(silent.destroyed).toBe(false)
      yield* TestClock.adjust(Duration.millis(1))
      yield* afterPoll
      expect(silent.destroyed).toBe(true)
      expect(asked.destroyed).toBe(false)
      expect(shed).toEqual(["first_request_timeout"])
      expect(gate.size()).toBe(1)
    }).pipe(Effect.provide(Timer.layerTest)))

  effectIt.scoped("a connection whose first request is already arriving is not closed by the sweep", () =>
    Effect.gen(function*() {
      const shed: Array<string> = []
      const gate = makeConnectionGate({ maxConnections: 10, maxConnectionsPerAddress: 10, firstRequestTimeoutMs: 1000 }, yield* Timer, (what) => shed.push(what))
      yield* Effect.addFinalizer(() => Effect.sync(gate.close))
      const arriving = fakeSocket("10.0.0.1")
      gate.admit(arriving as unknown as net.Socket)
      // Its headers are being read (the server's 'request' has not come yet): the sweep leaves it.
      arriving.bytesRead = 25
      yield* TestClock.adjust(Duration.millis(1000))
      yield* afterPoll
      expect(arriving.destroyed).toBe(false)
      expect(shed).toEqual([])
    }).pipe(Effect.provide(Timer.layerTest)))
})
