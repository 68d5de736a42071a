import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { api, initializeRaw, repoRoot, type RunningGateway, startGateway, tempDir, waitUntil, writeJson } from "../support/processes.js"

const floodServer = path.join(repoRoot, "test/fixtures/flood-server.mjs")

/** The resident memory of a process, in MB (VmRSS). */
const rssMb = (pid: number) => {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) / 1024
}

/** The highest RSS seen until `stop` is called, sampled every 100 ms. */
const watchRss = (pid: number) => {
  let peak = rssMb(pid)
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssMb(pid))
    } catch {
      // (The process is gone.)
    }
  }, 100)
  return { peak: () => peak, stop: () => clearInterval(timer) }
}

/**
 * A client that sends one request on its own connection and never reads a byte of the answer.
 * `closedByGateway` resolves once the gateway closed the connection: the client then reads what
 * the kernel held for it, until the end.
 */
const neverReading = (url: string, request: { path: string; headers: Record<string, string>; body: string }) => {
  const { hostname, port } = new URL(url)
  const socket = net.connect({ host: hostname, port: Number(port) })
  socket.on("error", () => {})
  socket.pause()
  const head = Object.entries({ host: `${hostname}:${port}`, "content-length": String(Buffer.byteLength(request.body)), ...request.headers })
    .map(([name, value]) => `${name}: ${value}\r\n`).join("")
  socket.write(`POST ${request.path} HTTP/1.1\r\n${head}\r\n${request.body}`)
  const ended = () =>
    new Promise<void>((resolve) => {
      if (socket.destroyed) return resolve()
      socket.once("close", () => resolve())
      socket.on("data", () => {})
      socket.resume()
    })
  return { socket, ended }
}

const mcpHeaders = (sessionId: string) => ({
  "content-type": "application/json",
  accept: "application/json, text/event-stream",
  "mcp-session-id": sessionId,
  "mcp-protocol-version": "2025-11-25"
})

const openSession = async (gateway: RunningGateway, template: string) => {
  const response = await initializeRaw(`${gateway.url}/mcp/${template}`)
  await response.text()
  const sessionId = response.headers.get("mcp-session-id")!
  expect(sessionId).toBeTruthy()
  return sessionId
}

describe("slow and many clients", () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => {
    while (cleanups.length > 0) await cleanups.pop()!()
  })
  const gatewayWith = async (config: Record<string, unknown>) => {
    const dir = tempDir()
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, config)
    const gateway = await startGateway({ configFile })
    cleanups.push(() => gateway.stop())
    return { gateway, dir, configFile }
  }

  it("cuts off a client that never reads a progress flood, and cancels its call down to the stdio server", async () => {
    const log = path.join(tempDir(), "flood.log")
    const { gateway } = await gatewayWith({
      gateway: { write_timeout: 2 },
      templates: { flood: { instances: [{ id: "f", transport: "stdio", command: ["node", floodServer], env: { FLOOD_LOG: log } }] } }
    })
    const sessionId = await openSession(gateway, "flood")
    const rss = watchRss(gateway.process.pid!)
    cleanups.push(rss.stop)
    const client = neverReading(gateway.url, {
      path: "/mcp/flood",
      headers: mcpHeaders(sessionId),
      body: JSON.stringify({ jsonrpc: "2.0", id: 7, method: "tools/call", params: { name: "progress-flood", arguments: {}, _meta: { progressToken: "p" } } })
    })
    cleanups.push(() => client.socket.destroy())
    // The write timeout runs out; the server hears notifications/cancelled for its request.
    await waitUntil(() => fs.existsSync(log) && fs.readFileSync(log, "utf8").includes("cancelled"), 30_000, "the flood to be cancelled")
    await client.ended()
    expect(rss.peak()).toBeLessThan(300)
    // The gateway, and the session, still serve.
    const echo = await fetch(`${gateway.url}/mcp/flood`, {
      method: "POST",
      headers: mcpHeaders(sessionId),
      body: JSON.stringify({ jsonrpc: "2.0", id: 8, method: "tools/call", params: { name: "echo", arguments: { message: "after" } } })
    })
    expect(await echo.text()).toContain("Echo: after")
  }, 60_000)

  it("keeps memory flat under 60 clients that never read 7 MB answers", async () => {
    const { gateway } = await gatewayWith({
      gateway: { write_timeout: 5 },
      // (Three processes: one writes its answers one after another, and the test is of the gateway.)
      templates: { big: { instances: ["b1", "b2", "b3"].map((id) => ({ id, transport: "stdio", command: ["node", floodServer] })) } }
    })
    const sessionId = await openSession(gateway, "big")
    const rss = watchRss(gateway.process.pid!)
    cleanups.push(rss.stop)
    const clients = Array.from({ length: 60 }, (_, i) =>
      // Half through the REST API, half through the MCP endpoint.
      i % 2 === 0
        ? neverReading(gateway.url, {
          path: "/mcp/big/tools/call",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ name: "big-answer", arguments: { mb: 7 } })
        })
        : neverReading(gateway.url, {
          path: "/mcp/big",
          headers: mcpHeaders(sessionId),
          body: JSON.stringify({ jsonrpc: "2.0", id: i, method: "tools/call", params: { name: "big-answer", arguments: { mb: 7 } } })
        }))
    cleanups.push(() => clients.forEach((c) => c.socket.destroy()))
    // Every one of them is cut off: past the gateway's bound at once, the others after the write timeout.
    const cutOff = () => gateway.stderr().match(/closed a client's response/g)?.length ?? 0
    await waitUntil(() => cutOff() >= 60, 150_000, "every client to be cut off")
    await Promise.all(clients.map((c) => c.ended()))
    expect(rss.peak()).toBeLessThan(300)
    const after = await api(`${gateway.url}/mcp/big/tools/call`, { json: { name: "echo", arguments: { message: "still here" } } })
    expect(after.status).toBe(200)
  }, 200_000)

  /** Opens `count` TCP connections that send nothing; counts those the gateway closes. */
  const idleFlood = async (url: string, count: number) => {
    const { hostname, port } = new URL(url)
    const sockets: Array<net.Socket> = []
    let closed = 0
    cleanups.push(() => sockets.forEach((s) => s.destroy()))
    for (let at = 0; at < count; at += 500) {
      // (In batches: a SYN backlog of thousands at once would drop some.)
      await Promise.all(Array.from({ length: Math.min(500, count - at) }, () =>
        new Promise<void>((resolve) => {
          const socket = net.connect({ host: hostname, port: Number(port) })
          socket.on("error", () => resolve())
          socket.on("close", () => closed++)
          socket.once("connect", () => resolve())
          sockets.push(socket)
        })))
    }
    return { closed: () => closed, sockets }
  }

  const openDescriptors = (pid: number) => fs.readdirSync(`/proc/${pid}/fd`).length

  it("sheds idle connections of a flood from one address; health, tool calls and the config watcher go on", async () => {
    const config = (templates: Record<string, unknown>) => ({
      gateway: { max_connections: 1500, max_connections_per_address: 1000, first_request_timeout: 120 },
      templates
    })
    const flood = { instances: [{ id: "f", transport: "stdio", command: ["node", floodServer] }] }
    const { configFile, gateway } = await gatewayWith(config({ flood }))
    const idle = await idleFlood(gateway.url, 3000)
    // The gateway keeps at most its per-address cap; the oldest unused ones went to make room.
    await waitUntil(() => idle.closed() >= 2000, 30_000, "the flood's connections to be shed")
    expect(openDescriptors(gateway.process.pid!)).toBeLessThan(1000 + 200)

    const health = await api(`${gateway.url}/gateway/health`)
    expect(health.status).toBe(200)
    const client = new Client({ name: "e2e", version: "1.0.0" })
    await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp/flood`)))
    cleanups.push(() => client.close())
    const echo = await client.callTool({ name: "echo", arguments: { message: "under a flood" } })
    expect(JSON.stringify(echo.content)).toContain("Echo: under a flood")

    // The config watcher (it needs descriptors too) still applies an edit.
    writeJson(configFile, config({ flood, second: flood }))
    await waitUntil(async () => (await api(`${gateway.url}/mcp/second/health`)).status === 200, 30_000, "the new template")
    const second = await api(`${gateway.url}/mcp/second/tools/call`, { json: { name: "echo", arguments: { message: "new" } } })
    expect(second.status).toBe(200)
  }, 120_000)

  it("closes a connection that sends no request within first_request_timeout, and keeps one that does", async () => {
    const { gateway } = await gatewayWith({ gateway: { first_request_timeout: 1 } })
    const idle = await idleFlood(gateway.url, 1)
    const { hostname, port } = new URL(gateway.url)
    const busy = net.connect({ host: hostname, port: Number(port) })
    cleanups.push(() => busy.destroy())
    let busyClosed = false
    busy.on("close", () => (busyClosed = true))
    busy.on("data", () => {})
    busy.write(`GET /gateway/health HTTP/1.1\r\nhost: ${hostname}:${port}\r\n\r\n`)
    await waitUntil(() => idle.closed() === 1, 10_000, "the idle connection to be closed")
    expect(busyClosed).toBe(false)
  }, 30_000)
})
