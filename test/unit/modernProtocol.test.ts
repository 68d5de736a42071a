import { describe, expect, it } from "vitest"
import { collectToolHeaders, decodeHeaderValue, encodeHeaderValue, paramHeaderMismatch } from "../../src/domain/ModernProtocol.js"
import { asLegacyResponse, classifyProbe, routingHeaders, withEnvelope } from "../../src/transport/modernBackend.js"

const tools = [
  { name: "weather", inputSchema: { type: "object", properties: { city: { type: "string", "x-mcp-header": "City" }, days: { type: "integer", "x-mcp-header": "Days" } } } },
  { name: "nested", inputSchema: { type: "object", properties: { where: { type: "object", properties: { zone: { type: "string", "x-mcp-header": "Zone" } } } } } },
  { name: "bad", inputSchema: { type: "object", properties: { r: { type: "string", "x-mcp-header": "Région" }, s: { type: "string", "x-mcp-header": "Two Words" } } } }
]

describe("the 2026-07-28 revision's mirrored headers", () => {
  const declared = new Map()
  collectToolHeaders(tools, declared)

  it("collects x-mcp-header declarations through properties, and skips names no HTTP header can have", () => {
    expect(declared.get("weather")).toEqual([{ path: ["city"], header: "City" }, { path: ["days"], header: "Days" }])
    expect(declared.get("nested")).toEqual([{ path: ["where", "zone"], header: "Zone" }])
    expect(declared.has("bad")).toBe(false)
  })

  it("mirrors method, name and declared arguments; values that are not plain ASCII are base64-wrapped and round-trip", () => {
    const headers = routingHeaders("tools/call", { name: "weather", arguments: { city: "Zürich ", days: 3 } }, declared)
    expect(headers).toEqual({ "mcp-method": "tools/call", "mcp-name": "weather", "mcp-param-city": "=?base64?WsO8cmljaCA=?=", "mcp-param-days": "3" })
    for (const value of ["plain", " padded ", "東京", "=?base64?abc?=", "line\nbreak"]) expect(decodeHeaderValue(encodeHeaderValue(value))).toBe(value)
    expect(routingHeaders("resources/read", { uri: "file:///a b" }, declared)["mcp-name"]).toBe("file:///a b")
  })

  it("checks a client's headers against its call as a server would", () => {
    const header = (h: Record<string, string>) => (name: string) => h[name]
    const call = { name: "weather", arguments: { city: "Oslo", days: 2 } }
    expect(paramHeaderMismatch(declared, call, header({ "mcp-param-city": "Oslo", "mcp-param-days": "2" }))).toBeUndefined()
    expect(paramHeaderMismatch(declared, call, header({ "mcp-param-city": "Lies", "mcp-param-days": "2" }))?.problem).toMatch(/decodes to "Lies"/)
    expect(paramHeaderMismatch(declared, call, header({ "mcp-param-days": "2" }))?.problem).toMatch(/header is absent/)
    expect(paramHeaderMismatch(declared, call, header({ "mcp-param-city": "=?base64?!!?=", "mcp-param-days": "2" }))?.problem).toMatch(/not a valid value/)
    expect(paramHeaderMismatch(declared, { name: "weather", arguments: {} }, header({ "mcp-param-city": "Oslo" }))?.problem).toMatch(/carries no city/)
    expect(paramHeaderMismatch(declared, { name: "unknown", arguments: {} }, header({}))).toBeUndefined()
  })

  it("puts the envelope in _meta, keeping the request's own keys", () => {
    expect(withEnvelope({ name: "x", _meta: { progressToken: 1 } }, { "io.modelcontextprotocol/protocolVersion": "2026-07-28" }, "info")).toEqual({
      name: "x",
      _meta: { progressToken: 1, "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/logLevel": "info" }
    })
  })
})

describe("telling a modern backend from an old one", () => {
  const answer = (result: unknown) => ({ jsonrpc: "2.0" as const, id: 1, result })
  it("takes a DiscoverResult naming a version the gateway speaks, and nothing else", () => {
    expect(classifyProbe(answer({ supportedVersions: ["2026-07-28"], capabilities: {} }))._tag).toBe("Modern")
    expect(classifyProbe(answer({ supportedVersions: ["2027-01-01"] }))._tag).toBe("Legacy")
    expect(classifyProbe(answer({ supportedVersions: ["2026-07-28"], capabilities: 42 }))._tag).toBe("Legacy")
    expect(classifyProbe(answer({}))._tag).toBe("Legacy")
    expect(classifyProbe({ jsonrpc: "2.0", id: 1, error: { code: -32601, message: "Method not found" } })._tag).toBe("Legacy")
  })

  it("shows an old caller a modern answer without the revision's own fields", () => {
    const modern = answer({ content: [], resultType: "complete", ttlMs: 0, cacheScope: "private", _meta: { "io.modelcontextprotocol/serverInfo": { name: "s" }, other: 1 } })
    expect(asLegacyResponse(modern)).toEqual(answer({ content: [], _meta: { other: 1 } }))
    const asking = answer({ resultType: "input_required", inputRequests: {} })
    expect(asLegacyResponse(asking)).toBe(asking)
  })
})
