import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, TestClock } from "effect"
import { DEFAULT_AGGREGATION } from "../../src/config/GatewayConfig.js"
import type { Identity } from "../../src/domain/Identity.js"
import { AggregateSessions } from "../../src/aggregation/AggregateSessions.js"
import type { SessionAnswer } from "../../src/sessions/EndpointSession.js"
import { testConfig } from "../support/testConfig.js"
import { testGateway } from "../support/testGateway.js"

const anonymous: Identity = { kind: "anonymous", id: "ip:127.0.0.1", scopes: new Set() }
const scoped = (templates: ReadonlyArray<string>): Identity => ({ kind: "api_key", id: "k", scopes: new Set(templates.map((t) => `mcp:call:${t}`)) })
const hello = { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "unit", version: "1" } }

const result = (answer: SessionAnswer): any => {
  if (answer._tag !== "Answer" || !("result" in answer.message)) throw new Error(`expected a result, got ${JSON.stringify(answer)}`)
  return answer.message.result
}

/** Three templates of one fake instance each; "a" and "b" without prefixes (so their names can meet). */
const gateway = () => {
  const config = testConfig({
    a: { instances: ["a1"], exposure: { prefix: "" } },
    b: { instances: ["b1"], exposure: { prefix: "" } },
    c: { instances: ["c1"] }
  })
  const { fake, layer } = testGateway({ ...config, aggregation: { ...DEFAULT_AGGREGATION, listTimeout: DEFAULT_AGGREGATION.listTimeout } })
  const tools = (names: ReadonlyArray<string>) => ({ tools: names.map((name) => ({ name, inputSchema: { type: "object" } })) })
  fake.set("a1", (method, params) => Effect.succeed(method === "tools/list" ? tools(["echo", "only-a"]) : { served: "a", params }))
  fake.set("b1", (method, params) => Effect.succeed(method === "tools/list" ? tools(["echo", "only-b"]) : { served: "b", params }))
  fake.set("c1", (method, params) => Effect.succeed(method === "tools/list" ? tools(["echo"]) : { served: "c", params }))
  return { fake, layer }
}

describe("aggregate sessions", () => {
  it.scoped("the first template's name wins a collision; calls route by prefix or by the list", () => {
    const { layer } = gateway()
    return Effect.gen(function*() {
      const { session } = yield* (yield* AggregateSessions).endpoint.open("*", hello, anonymous)
      const names = result(yield* session.request("tools/list", undefined, {})).tools.map((t: any) => t.name)
      expect(names).toEqual(["echo", "only-a", "only-b", "c__echo"])
      expect(result(yield* session.request("tools/call", { name: "echo" }, {}))).toMatchObject({ served: "a", params: { name: "echo" } })
      expect(result(yield* session.request("tools/call", { name: "only-b" }, {})).served).toBe("b")
      expect(result(yield* session.request("tools/call", { name: "c__echo" }, {}))).toMatchObject({ served: "c", params: { name: "echo" } })
    }).pipe(Effect.provide(layer))
  })

  it.scoped("with several templates without a prefix, a bare name is found before the client listed", () => {
    const { layer } = gateway()
    return Effect.gen(function*() {
      const { session } = yield* (yield* AggregateSessions).endpoint.open("*", hello, anonymous)
      expect(result(yield* session.request("tools/call", { name: "only-b" }, {})).served).toBe("b")
      const malformed = yield* session.request("tools/call", { name: 42 }, {})
      expect(malformed).toEqual({ _tag: "Answer", message: { error: { code: -32602, message: "Invalid params: name must be a non-empty string" } } })
      const level = yield* session.request("logging/setLevel", { level: "loud" }, {})
      expect(level).toMatchObject({ message: { error: { code: -32602 } } })
    }).pipe(Effect.provide(layer))
  })

  it.scoped("a caller sees only the templates its scopes allow; the others are unknown to it", () => {
    const { layer } = gateway()
    return Effect.gen(function*() {
      const { session } = yield* (yield* AggregateSessions).endpoint.open("*", hello, scoped(["c"]))
      // (Prefixes are the aggregate's, whoever asks: c keeps its own among three templates.)
      expect(result(yield* session.request("tools/list", undefined, {})).tools.map((t: any) => t.name)).toEqual(["c__echo"])
      const refused = yield* session.request("tools/call", { name: "only-a" }, {})
      expect(refused).toEqual({ _tag: "Answer", message: { error: { code: -32602, message: "Unknown tool: only-a" } } })
    }).pipe(Effect.provide(layer))
  })

  it.scoped("every request is authorized with its credential: a key narrowed since initialize loses the template at once; a token of other scopes is not the session's caller", () => {
    const { layer } = gateway()
    return Effect.gen(function*() {
      const sessions = (yield* AggregateSessions).endpoint
      const broad = scoped(["a", "c"])
      const { session } = yield* sessions.open("*", hello, broad)
      const resolved = (caller: Identity) => sessions.resolve(session.id, "*", caller)
      expect(resolved(broad)).toBe(session)
      const listed = result(yield* session.request("tools/list", undefined, {}))
      expect(listed.tools.map((t: any) => t.name)).toEqual(["echo", "only-a", "c__echo"])
      // The operator narrows the key (a reload: a new identity object for the same key id).
      const narrowed = scoped(["c"])
      expect(resolved(narrowed)).toBe(session)
      expect(result(yield* session.request("tools/list", undefined, {})).tools.map((t: any) => t.name)).toEqual(["c__echo"])
      // Names the client learnt before are refused, and so are pages of the list made before.
      const call = yield* session.request("tools/call", { name: "only-a" }, {})
      expect(call._tag === "Answer" && "error" in call.message).toBe(true)
      // A token of the same subject with narrower (or other) scopes cannot use the session.
      const token = (templates: ReadonlyArray<string>): Identity => ({ kind: "jwt", id: "jwt:alice", scopes: new Set(templates.map((t) => `mcp:call:${t}`)) })
      const opened = yield* sessions.open("*", hello, token(["a", "c"]))
      expect("id" in (sessions.resolve(opened.session.id, "*", token(["a", "c"])) as object)).toBe(true)
      expect(sessions.resolve(opened.session.id, "*", token(["c"]))).toMatchObject({ status: 404 })
      // Nor another owner.
      expect(sessions.resolve(opened.session.id, "*", { ...token(["a", "c"]), id: "jwt:bob" })).toMatchObject({ status: 404 })
    }).pipe(Effect.provide(layer))
  })

  it.scoped("a template that does not answer in list_timeout is left out, and named in _meta", () => {
    const { fake, layer } = gateway()
    fake.set("b1", () => Effect.never)
    return Effect.gen(function*() {
      const { session } = yield* (yield* AggregateSessions).endpoint.open("*", hello, anonymous)
      const listing = yield* Effect.fork(session.request("tools/list", undefined, {}))
      yield* TestClock.adjust("11 seconds")
      const list = result(yield* Fiber.join(listing))
      expect(list.tools.map((t: any) => t.name)).toEqual(["echo", "only-a", "c__echo"])
      expect(list._meta).toEqual({ "mcp-gateway/unavailable": [{ template: "b", error: "no answer within the list timeout" }] })
    }).pipe(Effect.provide(layer))
  })
})
