import { describe, expect, it } from "vitest"
import { makeLineSplitter } from "../../src/transport/lines.js"
import { makeSseParser, type SseEvent } from "../../src/transport/sse.js"

describe("SSE parser", () => {
  const parse = (chunks: ReadonlyArray<string>) => {
    const events: Array<SseEvent> = []
    const feed = makeSseParser((e) => events.push(e))
    for (const c of chunks) feed(c)
    return events
  }

  it("assembles events across arbitrary chunk boundaries, with ids, retry and multi-line data", () => {
    const stream = "id: 1\nretry: 500\nevent: message\ndata: {\"a\":\ndata: 1}\n\n: a comment\n\ndata: second\r\n\r\n"
    const whole = parse([stream])
    expect(whole).toEqual([
      { event: "message", data: "{\"a\":\n1}", id: "1", retry: 500 },
      { event: "message", data: "second", id: "1", retry: undefined }
    ])
    // Byte by byte gives the same events (a \r\n split across chunks included).
    expect(parse(stream.split(""))).toEqual(whole)
  })

  it("skips events without data (priming events carry only an id)", () => {
    expect(parse(["id: prime\ndata:\n\n"])).toEqual([{ event: "message", data: "", id: "prime", retry: undefined }])
    expect(parse(["id: only\n\n"])).toEqual([])
  })
})

describe("line splitter", () => {
  it("splits NDJSON across chunks and ignores blank lines", () => {
    const lines: Array<string> = []
    const feed = makeLineSplitter((l) => lines.push(l))
    for (const c of ["{\"a\":1}\n{\"b\"", ":2}\r\n\n{\"c\":3}", "\n"]) feed(c)
    expect(lines).toEqual(["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"])
  })
})

describe("bounded framing (a server gone wrong cannot make the gateway buffer without end)", () => {
  it("drops a line longer than the limit, however it is chunked, and goes on with the next", () => {
    const lines: Array<string> = []
    const oversized: Array<number> = []
    const feed = makeLineSplitter((l) => lines.push(l), { maxLineLength: 100, onOversized: (n) => oversized.push(n) })
    feed("{\"a\":1}\n" + "x".repeat(60))
    for (let i = 0; i < 1000; i++) feed("y".repeat(64))
    feed("z\n{\"b\":2}\n")
    feed("w".repeat(150) + "\n{\"c\":3}\n")
    expect(lines).toEqual(["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"])
    expect(oversized).toEqual([60 + 64 * 1000 + 1, 150])
  })

  it("drops an SSE event larger than the limit and parses the next", () => {
    const events: Array<SseEvent> = []
    let dropped = 0
    const feed = makeSseParser((e) => events.push(e), { maxEventLength: 100, onOversized: () => dropped++ })
    feed("data: " + "x".repeat(80) + "\n")
    feed("data: " + "y".repeat(80) + "\n\n")
    feed("data: small\n\n")
    expect(events.map((e) => e.data)).toEqual(["small"])
    expect(dropped).toBe(1)
  })
})
