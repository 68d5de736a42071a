import { Effect, Exit, Runtime, Scope } from "effect"
import { describe, expect, it } from "vitest"
import { defineInstance } from "../../src/domain/Instance.js"
import { Deadline } from "../../src/dispatch/Deadline.js"
import { Timer } from "../../src/clock/Timer.js"
import type { Connection, ConnectionEnv, ConnectionLog } from "../../src/transport/Connection.js"
import { makeHttpConnection } from "../../src/transport/http.js"
import { makeLegacySseConnection } from "../../src/transport/legacySse.js"
import { makeStdioConnection } from "../../src/transport/stdio.js"
import { descendants, everythingServer, isAlive, startEverythingHttp, startEverythingSse } from "../support/processes.js"

const quiet: ConnectionLog = { debug: () => {}, info: () => {}, warn: () => {} }

const stdio = (command: ReadonlyArray<string>) =>
  defineInstance("t", "s", { transport: "stdio", command, working_dir: process.cwd() }, "config") as any

const liveTimer = Effect.runSync(Effect.provide(Timer, Timer.live))

/** A request deadline of `ms`, on the real clock. */
const deadline = (ms: number) => new Deadline(liveTimer, Date.now(), ms, ms, false)

/** Runs `use` with a connection whose scope is closed (and process stopped) afterwards. */
const withConnection = async <A, C extends Connection>(
  make: (env: ConnectionEnv) => C,
  use: (c: C) => Promise<A>
) => {
  const scope = Effect.runSync(Scope.make())
  const connection = make({ log: quiet, scope, runtime: Runtime.defaultRuntime })
  try {
    return await use(connection)
  } finally {
    await Effect.runPromise(connection.close)
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

describe("stdio transport", () => {
  it("multiplexes concurrent requests over one process, each getting its own answer", async () => {
    const before = descendants(process.pid)
    await withConnection((env) => makeStdioConnection(stdio(["node", everythingServer, "stdio"]), env), async (c) => {
      const answers = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          Effect.runPromise(c.request("tools/call", { name: "echo", arguments: { message: `m${i}` } })))
      )
      answers.forEach((a, i) => expect((a as any).result.content[0].text).toBe(`Echo: m${i}`))
      // One process served all of them.
      expect(descendants(process.pid).filter((p) => !before.includes(p))).toHaveLength(1)
    })
    expect(descendants(process.pid).filter((p) => !before.includes(p))).toEqual([])
  })

  it("a process that cannot start fails the request as never having reached it", async () => {
    await withConnection((env) => makeStdioConnection(stdio(["node", "-e", "process.exit(3)"]), env), async (c) => {
      const exit = await Effect.runPromiseExit(c.request("tools/call", { name: "echo" }))
      expect(Exit.isFailure(exit)).toBe(true)
      const error = Exit.isFailure(exit) ? (exit.cause as any).error : undefined
      expect(error).toMatchObject({ _tag: "TransportError", reachedBackend: false })
      expect(error.message).toContain("process exited (code 3)")
    })
    await withConnection((env) => makeStdioConnection(stdio(["/nonexistent/server"]), env), async (c) => {
      const exit = await Effect.runPromiseExit(c.request("ping", undefined))
      expect(Exit.isFailure(exit) && (exit.cause as any).error.message).toContain("ENOENT")
    })
  })

  it("times out a slow call, cancels it at the server, and stays usable", async () => {
    await withConnection((env) => makeStdioConnection(stdio(["node", everythingServer, "stdio"]), env), async (c) => {
      const slow = await Effect.runPromiseExit(
        c.request("tools/call", { name: "trigger-long-running-operation", arguments: { duration: 5, steps: 5 } }, { deadline: deadline(300) })
      )
      expect(Exit.isFailure(slow) && (slow.cause as any).error._tag).toBe("RequestTimeout")
      const ok = await Effect.runPromise(c.request("ping", undefined, { deadline: deadline(5000) }))
      expect(ok).toMatchObject({ result: {} })
    })
  })

  it("stops the whole process group on close", async () => {
    // A shell that starts the server as its child: both must go.
    const command = ["sh", "-c", `node ${JSON.stringify(everythingServer)} stdio; sleep 1000`]
    let pids: Array<number> = []
    const before = descendants(process.pid)
    await withConnection((env) => makeStdioConnection(stdio(command), env), async (c) => {
      await Effect.runPromise(c.request("ping", undefined))
      pids = descendants(process.pid).filter((p) => !before.includes(p))
      expect(pids.length).toBeGreaterThanOrEqual(2)
    })
    for (const pid of pids) expect(isAlive(pid), `process ${pid}`).toBe(false)
  })
})

describe("legacy SSE transport", () => {
  it("shares one SSE session among concurrent callers and streams their progress", async () => {
    const server = await startEverythingSse()
    try {
      const instance = defineInstance("t", "l", { transport: "sse", endpoint: server.url }, "config") as any
      await withConnection((env) => makeLegacySseConnection(instance, env), async (c) => {
        const answers = await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            Effect.runPromise(c.request("tools/call", { name: "echo", arguments: { message: `m${i}` } })))
        )
        answers.forEach((a, i) => expect((a as any).result.content[0].text).toBe(`Echo: m${i}`))
        const progress: Array<unknown> = []
        await Effect.runPromise(c.request(
          "tools/call",
          { name: "trigger-long-running-operation", arguments: { duration: 1, steps: 2 }, _meta: { progressToken: "mine" } },
          { onNotification: (n) => void progress.push(n.params?.progressToken) }
        ))
        expect(progress).toEqual(["mine", "mine"])
      })
    } finally {
      await server.stop()
    }
  })
})

describe("legacy SSE transport: the endpoint event", () => {
  it("posts only to the SSE URL's origin: an endpoint event naming another one fails the channel and nothing is sent there (the official SDK's SSE client refuses it too)", async () => {
    const http = await import("node:http")
    const listen = (server: import("node:http").Server) =>
      new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as import("node:net").AddressInfo).port)))
    // Where a backend (or whoever answers for it) would send the gateway: an internal address, another host.
    const posted: Array<{ url: string; authorization: string | undefined }> = []
    const elsewhere = http.createServer((req, res) => {
      posted.push({ url: req.url ?? "", authorization: req.headers.authorization })
      res.writeHead(202).end()
    })
    const elsewherePort = await listen(elsewhere)
    const backend = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" })
      res.write(`event: endpoint\ndata: http://127.0.0.1:${elsewherePort}/internal/admin\n\n`)
    })
    const backendPort = await listen(backend)
    try {
      const instance = defineInstance("t", "l", { transport: "sse", endpoint: `http://127.0.0.1:${backendPort}/sse`, headers: { Authorization: "Bearer backend-token" } }, "config") as any
      await withConnection((env) => makeLegacySseConnection(instance, env), async (c) => {
        const exit = await Effect.runPromiseExit(c.request("ping", undefined).pipe(Effect.timeout("3 seconds")))
        expect(Exit.isFailure(exit)).toBe(true)
        expect(JSON.stringify(exit)).toContain("origin")
      })
      expect(posted).toEqual([])
    } finally {
      backend.closeAllConnections()
      elsewhere.closeAllConnections()
      await Promise.all([new Promise((r) => backend.close(r)), new Promise((r) => elsewhere.close(r))])
    }
  })
})

describe("HTTP transport", () => {
  it("answers from SSE streams and initializes once", async () => {
    const server = await startEverythingHttp()
    try {
      const instance = defineInstance("t", "h", { transport: "http", endpoint: server.url }, "config") as any
      await withConnection((env) => makeHttpConnection(instance, env), async (c) => {
        const [a, b] = await Promise.all([
          Effect.runPromise(c.request("tools/call", { name: "echo", arguments: { message: "one" } })),
          Effect.runPromise(c.request("tools/call", { name: "get-sum", arguments: { a: 1, b: 2 } }))
        ])
        expect((a as any).result.content[0].text).toBe("Echo: one")
        expect((b as any).result.content[0].text).toContain("3")
      })
    } finally {
      await server.stop()
    }
  })

  it("a refused connection is a failure that never reached the server", async () => {
    const instance = defineInstance("t", "h", { transport: "http", endpoint: "http://127.0.0.1:1/mcp" }, "config") as any
    await withConnection((env) => makeHttpConnection(instance, env), async (c) => {
      const exit = await Effect.runPromiseExit(c.request("tools/call", { name: "echo" }))
      expect(Exit.isFailure(exit) && (exit.cause as any).error).toMatchObject({ _tag: "TransportError", reachedBackend: false })
      expect(Exit.isFailure(exit) && (exit.cause as any).error.message).toContain("ECONNREFUSED")
    })
  })
})
