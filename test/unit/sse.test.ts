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
