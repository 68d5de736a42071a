import { describe, expect, it } from "@effect/vitest"
import { Effect, FastCheck as fc } from "effect"
import * as http from "node:http"
import * as path from "node:path"
import { afterAll, beforeAll } from "vitest"
import { hashApiKey, newApiKey } from "../../src/domain/apiKey.js"
import { api, everythingServer, isAlive, type RunningGateway, startGateway, tempDir, writeJson } from "../support/processes.js"

/** How many random requests the property throws at the gateway (each a real HTTP request). */
const RUNS = 3000

const key = newApiKey()

/** Printable ASCII: what node:http lets a client put in a path or a header value. */
const printable = fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 40 })
const text = fc.string({ maxLength: 40 })
const anyId = fc.oneof(fc.integer(), text, fc.constant(null), fc.object({ maxDepth: 1 }), fc.double())

const templates = fc.constantFrom("t", "nope", "t%2F..", "..", "%zz", "t%00", "a".repeat(200), "")
const operations = fc.constantFrom(
  "tools/list", "tools/call", "resources/list", "resources/read", "resources/templates/list", "prompts/list", "prompts/get",
  "health", "tools/lisst", "tools", "", "tools/call/extra"
)
const paths = fc.oneof(
  fc.tuple(templates, operations).map(([t, op]) => `/mcp/${t}/${op}`),
  templates.map((t) => `/mcp/${t}`),
  fc.constantFrom(
    "/gateway/health", "/gateway/stats", "/gateway/registry", "/gateway/register", "/gateway/deregister/t/nobody",
    "/gateway/deregister/%zz/x", "/docs", "/openapi.json", "/redoc", "/.well-known/oauth-protected-resource/mcp/t",
    "/", "//", "/mcp", "/mcp/", "/gateway", "/gateway/nope"
  ),
  printable.map((p) => `/${p}`)
).chain((p) => fc.constantFrom(p, `${p}?x=1`, `${p}?${"q=".repeat(3)}`, `${p}#frag`))

const methods = fc.constantFrom("GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD")

/** Known MCP methods with random params, and random ones. */
const jsonRpc = fc.record(
  {
    jsonrpc: fc.constantFrom("2.0", "1.0", 2),
    id: anyId,
    method: fc.oneof(
      fc.constantFrom(
        "initialize", "ping", "tools/list", "tools/call", "resources/read", "resources/subscribe", "prompts/get",
        "completion/complete", "logging/setLevel", "notifications/cancelled", "notifications/initialized", "server/discover"
      ),
      text
    ),
    params: fc.oneof(fc.object({ maxDepth: 3 }), fc.constant(undefined), text, fc.array(fc.integer())),
    result: fc.oneof(fc.constant(undefined), fc.object({ maxDepth: 2 })),
    error: fc.oneof(fc.constant(undefined), fc.record({ code: fc.integer(), message: text }))
  },
  { requiredKeys: [] }
)

const bodies = fc.oneof(
  fc.constant(undefined),
  text,
  fc.json().map((j) => j),
  jsonRpc.map((m) => JSON.stringify(m)),
  fc.array(jsonRpc, { maxLength: 3 }).map((b) => JSON.stringify(b)),
  fc.record({ name: fc.oneof(text, fc.integer()), arguments: fc.anything({ maxDepth: 3 }) }, { requiredKeys: [] }).map((b) => JSON.stringify(b)),
  fc.integer({ min: 1, max: 300 }).map((n) => "[".repeat(n) + "]".repeat(n)),
  fc.constant("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"x\",\"arguments\":" + "{\"a\":".repeat(3000) + "1" + "}".repeat(3000) + "}}"),
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b).toString("latin1"))
)

/** Mostly well-formed (so that requests get past the front gate and into the handlers), sometimes not. */
const mostly = <A>(good: A, bad: fc.Arbitrary<A>) => fc.oneof({ arbitrary: fc.constant(good), weight: 4 }, { arbitrary: bad, weight: 1 })

const headerSets = fc.record({
  "content-type": mostly("application/json", fc.constantFrom("application/json; charset=utf-8", "text/plain", "", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x")),
  accept: mostly("application/json, text/event-stream", fc.constantFrom("text/event-stream", "*/*", "text/html", "")),
  host: mostly("127.0.0.1", fc.constantFrom("localhost:1", "evil.example.com", "[::1]:80", "a..b")),
  authorization: mostly(`Bearer ${key}`, fc.constantFrom("Bearer x.y.z", "Bearer", "Basic Zm9vOmJhcg==", "Bearer eyJhbGciOiJub25lIn0.e30.", `Bearer ${key}x`)),
  origin: fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 8 },
    { arbitrary: fc.constantFrom("http://localhost:3000", "https://evil.example.com", "null", "not a url"), weight: 1 }
  ),
  extra: fc.record(
    {
      "x-api-key": printable,
      "mcp-session-id": fc.oneof(printable, fc.constant("0".repeat(32))),
      "mcp-protocol-version": fc.constantFrom("2025-11-25", "2025-03-26", "1999-01-01", "", "2026-07-28"),
      "last-event-id": fc.constantFrom("0-1", "1-0", "x-y", "99999999999999999999-1", ""),
      "x-request-id": printable
    },
    { requiredKeys: [] }
  )
}).map(({ extra, origin, ...headers }) => ({ ...headers, ...extra, ...(origin === undefined ? {} : { origin }) }))

interface Answer {
  readonly method: string
  readonly status: number
  readonly type: string
  readonly allow: string | undefined
  readonly body: string
}

const send = (base: string, method: string, target: string, headers: Record<string, string>, body: string | undefined) =>
  Effect.async<Answer, Error>((resume) => {
    const url = new URL(base)
    const req = http.request(
      { host: url.hostname, port: url.port, method, path: target, headers: body === undefined ? headers : { ...headers, "content-length": String(Buffer.byteLength(body)) } },
      (res) => {
        let text = ""
        const isStream = String(res.headers["content-type"] ?? "").startsWith("text/event-stream")
        res.setEncoding("utf8").on("data", (d: string) => {
          text += d
          // A standing SSE stream never ends: its opening is enough.
          if (isStream) res.destroy()
        })
        const done = () =>
          resume(Effect.succeed({ method, status: res.statusCode ?? 0, type: String(res.headers["content-type"] ?? ""), allow: res.headers.allow, body: text }))
        res.on("end", done)
        res.on("close", done)
      }
    )
    req.on("error", (e) => resume(Effect.fail(e)))
    req.setTimeout(15_000, () => req.destroy(new Error(`no answer to ${method} ${target} within 15 s`)))
    req.end(body)
    return Effect.sync(() => req.destroy())
  })

/**
 * What every error answer must look like (docs/api.md, docs/mcp-endpoint.md): the gateway's
 * envelope, or JSON-RPC on the MCP endpoint; a 405 also says what the route takes (`Allow`).
 * Only HEAD answers and a 431 (Node's own, before any handler) have no body.
 */
const wellFormedError = (answer: Answer) => {
  if (answer.status < 400 || answer.method === "HEAD" || answer.status === 431) return true
  if (answer.status === 405 && (answer.allow === undefined || answer.allow === "")) return false
  if (!answer.type.startsWith("application/json")) return false
  const json = JSON.parse(answer.body)
  const envelope = typeof json.error === "object" && typeof json.error.message === "string"
  const jsonRpc = json.jsonrpc === "2.0" && typeof json.error?.code === "number"
  return envelope && (jsonRpc || (typeof json.error.status === "number" && typeof json.error.type === "string"))
}

describe("fuzz: random and malformed requests at every route", () => {
  let gateway: RunningGateway
  let tried = 0
  const statuses = new Map<number, number>()

  beforeAll(async () => {
    const dir = tempDir()
    const configFile = path.join(dir, "gateway.json")
    writeJson(configFile, {
      // (Bad credentials are a fifth of what is sent: the flood limit would answer most of the rest with 429.)
      gateway: { allow_stdio_registration: false, max_body_bytes: 65536, rate_limits: { auth_failures: { max_failures: 100_000 } } },
      auth: { api_keys: [{ id: "fuzzer", hash: hashApiKey(key), scopes: ["mcp:call", "gateway:read", "gateway:admin"] }] },
      templates: { t: { instances: [{ id: "s", transport: "stdio", command: ["node", everythingServer, "stdio"] }] } }
    })
    gateway = await startGateway({ configFile })
  }, 60_000)

  afterAll(async () => {
    console.log(`fuzz: ${tried} requests; statuses: ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`)
    await gateway?.stop()
  })

  it.live.prop(
    "no 5xx, no crash, every error in the error envelope",
    { method: methods, target: paths, headers: headerSets, body: bodies },
    ({ body, headers, method, target }) =>
      Effect.gen(function*() {
        const answer = yield* send(gateway.url, method, target, headers, method === "GET" || method === "HEAD" ? undefined : body)
        tried++
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1)
        expect(answer.status, `${method} ${target} ${JSON.stringify(headers)} ${body?.slice(0, 200)}: ${answer.body.slice(0, 300)}`).toBeLessThan(500)
        expect(wellFormedError(answer), `${method} ${target}: ${answer.status} ${answer.type} ${answer.body.slice(0, 300)}`).toBe(true)
      }),
    { timeout: 300_000, fastCheck: { numRuns: RUNS } }
  )

  it.live("every method on every route: an answer or the documented error shape (405 with Allow and a body)", () =>
    Effect.gen(function*() {
      const headers = { authorization: `Bearer ${key}`, "content-type": "application/json", accept: "application/json, text/event-stream" }
      const routes = [
        "/mcp/t/tools/list", "/mcp/t/tools/call", "/mcp/t/resources/list", "/mcp/t/resources/templates/list", "/mcp/t/resources/read",
        "/mcp/t/prompts/list", "/mcp/t/prompts/get", "/mcp/t/health", "/mcp/t", "/mcp", "/mcp/v/nobody",
        "/gateway/health", "/gateway/stats", "/gateway/registry", "/gateway/ui", "/metrics", "/gateway/register", "/gateway/sync",
        "/gateway/deregister/t/nobody", "/docs", "/openapi.json", "/redoc", "/redoc/redoc.standalone.js",
        "/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp/t", "/nope"
      ]
      const refused: Array<string> = []
      for (const target of routes) {
        for (const method of ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]) {
          // (A standing stream of /mcp/t needs a session; POST /gateway/sync and a register body are not what is tested here.)
          const body = method === "GET" || method === "HEAD" ? undefined : "{}"
          const answer = yield* send(gateway.url, method, target, headers, body)
          const what = `${method} ${target}: ${answer.status} ${answer.type} allow=${answer.allow} ${answer.body.slice(0, 200)}`
          expect(answer.status, what).toBeLessThan(500)
          expect(wellFormedError(answer), what).toBe(true)
          if (answer.status === 405) {
            refused.push(`${method} ${target}`)
            expect(answer.allow!.split(", "), what).not.toContain(method)
          }
        }
      }
      // The methods a route does not take are refused as such (not a 404 or an empty answer).
      expect(refused).toEqual(expect.arrayContaining([
        "OPTIONS /mcp/t/tools/list", "PUT /mcp/t", "PATCH /mcp", "PUT /mcp/v/nobody", "PATCH /docs", "PUT /docs", "DELETE /docs",
        "POST /metrics", "DELETE /gateway/ui", "GET /gateway/register", "OPTIONS /gateway/health", "PUT /mcp/t/health"
      ]))
    }), { timeout: 60_000 })

  it.live("the gateway is healthy afterwards and still serves", () =>
    Effect.promise(async () => {
      expect(isAlive(gateway.process.pid!)).toBe(true)
      expect((await api(`${gateway.url}/gateway/health`)).body.healthy_instances).toBe(1)
      const echo = await api(`${gateway.url}/mcp/t/tools/call`, { json: { name: "echo", arguments: { message: "after the fuzz" } }, headers: { authorization: `Bearer ${key}` } })
      expect(echo.body.content[0].text).toBe("Echo: after the fuzz")
      expect(gateway.stderr()).not.toMatch(/level=(ERROR|FATAL).*(unexpected|defect|Maximum call stack)/i)
    }))
})
