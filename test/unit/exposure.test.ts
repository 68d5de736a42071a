import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, TestClock } from "effect"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type { ExposureInput } from "../../src/domain/Exposure.js"
import { restOperations, runRestOperation } from "../../src/http/RestOperations.js"
import { ClientSessions } from "../../src/sessions/ClientSessions.js"
import { Dispatcher } from "../../src/dispatch/Dispatcher.js"
import type { SessionAnswer } from "../../src/sessions/EndpointSession.js"
import { Exposure } from "../../src/exposure/Exposure.js"
import { testConfig } from "../support/testConfig.js"
import { testGateway } from "../support/testGateway.js"

const here = path.dirname(fileURLToPath(import.meta.url))

const TOOLS = [{ name: "read_file" }, { name: "write_file" }, { name: "list" }]

/** A gateway over one fake instance "a" of template "t" that lists TOOLS and answers a call with what it got. */
const gateway = (exposure: ExposureInput) => {
  const config = testConfig({ t: { instances: ["a"], exposure } })
  const { fake, layer } = testGateway({ ...config, gateway: { ...config.gateway, baseDir: here } })
  fake.set("a", (method, params) =>
    Effect.succeed(
      method === "tools/list"
        ? { tools: TOOLS }
        : method === "tools/call"
        ? { content: [{ type: "text", text: JSON.stringify({ ok: true, secret: "s3cr3t" }) }], structuredContent: { ok: true, secret: "s3cr3t" }, received: params }
        : {}
    ))
  return { fake, layer }
}

const session = (owner = "alice") =>
  Effect.map(Effect.flatMap(ClientSessions, (s) => s.open("t", { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "c", version: "1" } }, owner)), (o) => o.session)

const resultOf = (answer: SessionAnswer): any => {
  if (answer._tag !== "Answer" || !("result" in answer.message)) throw new Error(`expected a result, got ${JSON.stringify(answer)}`)
  return answer.message.result
}
const errorOf = (answer: SessionAnswer): any => (answer._tag === "Answer" && "error" in answer.message ? answer.message.error : answer)

describe("what a template shows: filters", () => {
  it.scoped("a denied or not allowed tool is neither listed nor called; the server never hears of the call", () => {
    const { fake, layer } = gateway({ tools: { allow: ["read_*", "list"], deny: ["list"] } })
    return Effect.gen(function*() {
      const s = yield* session()
      expect(resultOf(yield* s.request("tools/list", undefined, {})).tools.map((t: any) => t.name)).toEqual(["read_file"])
      expect(errorOf(yield* s.request("tools/call", { name: "write_file", arguments: {} }, {}))).toEqual({ code: -32602, message: "Unknown tool: write_file" })
      expect(errorOf(yield* s.request("tools/call", { name: "list" }, {}))).toEqual({ code: -32602, message: "Unknown tool: list" })
      expect(fake.calls.filter((c) => c.method === "tools/call")).toHaveLength(0)
      expect(resultOf(yield* s.request("tools/call", { name: "read_file" }, {})).received.name).toBe("read_file")

      // The REST face shows the same, its count included.
      const dispatcher = yield* Dispatcher
      const exposure = yield* Exposure
      const rest = yield* runRestOperation(dispatcher, "t", restOperations["tools/list"]!, undefined, { maxPages: 10, exposure, caller: "bob" })
      expect(rest.result).toEqual({ tools: [{ name: "read_file" }], count: 1 })
      const refused = yield* Effect.flip(runRestOperation(dispatcher, "t", restOperations["tools/call"]!, { name: "write_file" }, { maxPages: 10, exposure }))
      expect(refused).toMatchObject({ _tag: "BackendError", error: { code: -32602 } })
    }).pipe(Effect.provide(layer))
  })
})

describe("what a template shows: hidden resources", () => {
  it.scoped("a hidden resource cannot be reached by spelling its URI another way, nor by what a read returns", () => {
    const config = testConfig({ t: { instances: ["a"], exposure: { resources: { deny: ["demo://docs/secret*"] } } } })
    const { fake, layer } = testGateway({ ...config, gateway: { ...config.gateway, baseDir: here } })
    // The server cleans URIs up before it serves them, as servers do.
    fake.set("a", (method, params) =>
      Effect.succeed(method === "resources/read" ? { contents: [{ uri: new URL(String(params?.uri)).href.replace("alias", "secret"), text: "s3cr3t" }] } : {}))
    return Effect.gen(function*() {
      const s = yield* session()
      for (const uri of ["demo://docs/secret.md", "DEMO://docs/secret.md", "demo://docs/./secret.md", "demo://docs/x/../secret.md", "demo://docs/%73ecret.md"]) {
        expect(errorOf(yield* s.request("resources/read", { uri }, {})), uri).toEqual({ code: -32002, message: `Resource not found: ${uri}` })
      }
      // A URI the filter lets through, which the server answers with a hidden one.
      expect(errorOf(yield* s.request("resources/read", { uri: "demo://docs/alias.md" }, {}))).toMatchObject({ code: -32002 })
      expect(resultOf(yield* s.request("resources/read", { uri: "demo://docs/public.md" }, {})).contents[0].text).toBe("s3cr3t")
    }).pipe(Effect.provide(layer))
  })
})

describe("what a template shows: transforms", () => {
  it.scoped("inject_arguments, rename_tool and redact do what they say, in order", () => {
    const { fake, layer } = gateway({
      // On the way in, in this order (inject sees the server's name, as rename left it); results in the reverse order.
      transforms: [
        { transform: "rename_tool", options: { from: "read_file", to: "read", title: "Read a file" } },
        { transform: "inject_arguments", options: { tools: ["read_*"], arguments: { tenant: "t1", path: "/default" } } },
        { transform: "redact", options: { fields: ["structuredContent.secret"] } }
      ]
    })
    return Effect.gen(function*() {
      const s = yield* session()
      const tools = resultOf(yield* s.request("tools/list", undefined, {})).tools
      expect(tools).toEqual([{ name: "read", title: "Read a file" }, { name: "write_file" }, { name: "list" }])
      const called = resultOf(yield* s.request("tools/call", { name: "read", arguments: { path: "/etc/x" } }, {}))
      expect(called.structuredContent).toEqual({ ok: true })
      expect(called.content[0].text).toBe(JSON.stringify({ ok: true }))
      // The server got the old name, the injected argument, and the client's own value where it gave one.
      expect(called.received).toMatchObject({ name: "read_file", arguments: { tenant: "t1", path: "/etc/x" } })
      expect(errorOf(yield* s.request("tools/call", { name: "read_file" }, {}))).toEqual({ code: -32602, message: "Unknown tool: read_file" })
      expect(fake.calls.filter((c) => c.method === "tools/call")).toHaveLength(1)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("a transform that throws fails that request with a 502 naming it, and nothing else", () => {
    const { layer } = gateway({ transforms: [{ transform: "../fixtures/plugins/throwing-transform.mjs" }] })
    return Effect.gen(function*() {
      const s = yield* session()
      const failed = yield* s.request("tools/call", { name: "boom" }, {})
      expect(failed).toEqual({
        _tag: "Failed",
        status: 502,
        error: { code: -32603, message: `transform "throwing" of t failed: cannot read properties of undefined (reading 'x')` }
      })
      expect(resultOf(yield* s.request("tools/call", { name: "read_file" }, {})).structuredContent.ok).toBe(true)
      expect(resultOf(yield* s.request("tools/list", undefined, {})).tools).toHaveLength(3)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("a transform that never finishes fails its request after the template's timeout, and gives params that are not an object fails too", () => {
    const { layer } = gateway({ transforms: [{ transform: "../fixtures/plugins/hanging-transform.mjs" }] })
    return Effect.gen(function*() {
      const s = yield* session()
      const pending = yield* Effect.fork(s.request("tools/call", { name: "read_file" }, {}))
      yield* TestClock.adjust("61 seconds")
      const failed = yield* Fiber.join(pending)
      expect(failed).toMatchObject({ _tag: "Failed", status: 502, error: { message: `transform "hanging" of t failed: it did not finish within 1m` } })
    }).pipe(Effect.provide(layer))
  })

  it.effect("a transform that cannot be loaded stops start-up with one line naming it", () =>
    Effect.gen(function*() {
      const { layer } = gateway({ transforms: [{ transform: "inject_args" }] })
      const error = yield* Effect.flip(Layer.build(layer).pipe(Effect.scoped))
      expect(error.message).toBe(
        `templates.t.transforms[0].transform: transform plugin "inject_args": no built-in transform of that name (built-ins: inject_arguments, redact, rename_tool); a plugin file is named by a path such as "./my-plugin.js"`
      )
      const bad = gateway({ transforms: [{ transform: "rename_tool", options: { from: "a" } }] })
      const optionsError = yield* Effect.flip(Layer.build(bad.layer).pipe(Effect.scoped))
      expect(optionsError.message).toMatch(/^templates\.t\.transforms\[0\]\.options: transform plugin "rename_tool": options\.to: /)
    }))
})

describe("what a template shows: the cache", () => {
  it.scoped("a second list is served from the cache, per caller; a list change empties it; tools/call is never cached", () => {
    const { fake, layer } = gateway({ cache: { ttl_seconds: 60 } })
    return Effect.gen(function*() {
      const lists = () => fake.calls.filter((c) => c.method === "tools/list").length
      const alice = yield* session("alice")
      yield* alice.request("tools/list", undefined, {})
      yield* alice.request("tools/list", undefined, {})
      expect(lists()).toBe(1)
      // Another caller has a cache of its own (private, the default).
      const bob = yield* session("bob")
      yield* bob.request("tools/list", undefined, {})
      expect(lists()).toBe(2)
      const exposure = yield* Exposure
      exposure.noticed("t", { method: "notifications/tools/list_changed" })
      yield* alice.request("tools/list", undefined, {})
      expect(lists()).toBe(3)
      yield* alice.request("tools/call", { name: "read_file" }, {})
      yield* alice.request("tools/call", { name: "read_file" }, {})
      expect(fake.calls.filter((c) => c.method === "tools/call")).toHaveLength(2)
      // (The list change dropped both callers' entries; alice's list was stored again.)
      expect(exposure.stats().t).toEqual({ hits: 1, misses: 3, entries: 1 })
    }).pipe(Effect.provide(layer))
  })

  it.scoped("an old server's lists are cached per session (it may keep state per session), a list change drops them all", () => {
    const { fake, layer } = gateway({ cache: { ttl_seconds: 60 } })
    return Effect.gen(function*() {
      const lists = () => fake.calls.filter((c) => c.method === "tools/list").length
      const first = yield* session("alice")
      const second = yield* session("alice")
      yield* first.request("tools/list", undefined, {})
      yield* second.request("tools/list", undefined, {})
      expect(lists()).toBe(2)
      yield* second.request("tools/list", undefined, {})
      expect(lists()).toBe(2)
    }).pipe(Effect.provide(layer))
  })

  it.scoped("an entry lives for its ttl on the gateway's clock: served until the ttl ends, asked again after", () => {
    const { fake, layer } = gateway({ cache: { ttl_seconds: 60 } })
    return Effect.gen(function*() {
      const lists = () => fake.calls.filter((c) => c.method === "tools/list").length
      const alice = yield* session("alice")
      yield* alice.request("tools/list", undefined, {})
      yield* TestClock.adjust("59999 millis")
      yield* alice.request("tools/list", undefined, {})
      expect(lists()).toBe(1)
      // Stored at 0 for 60 s: expired at 60 s, asked again and stored anew (for 60 s from now).
      yield* TestClock.adjust("1 millis")
      yield* alice.request("tools/list", undefined, {})
      expect(lists()).toBe(2)
      yield* TestClock.adjust("30 seconds")
      yield* alice.request("tools/list", undefined, {})
      expect(lists()).toBe(2)
      expect((yield* Exposure).stats().t).toEqual({ hits: 2, misses: 2, entries: 1 })
    }).pipe(Effect.provide(layer))
  })

  it.scoped("public: one entry for every caller who declared the same", () => {
    const { fake, layer } = gateway({ cache: { ttl_seconds: 60, scope: "public" } })
    return Effect.gen(function*() {
      yield* (yield* session("alice")).request("tools/list", undefined, {})
      yield* (yield* session("bob")).request("tools/list", undefined, {})
      expect(fake.calls.filter((c) => c.method === "tools/list")).toHaveLength(1)
    }).pipe(Effect.provide(layer))
  })
})
