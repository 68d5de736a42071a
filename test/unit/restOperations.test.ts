import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import { formatParseError } from "../../src/domain/formatParseError.js"
import { restOperations, ToolCallBody } from "../../src/http/RestOperations.js"

/** What the Schema alone says of a body (the answer before tools/call had its fast path). */
const bySchema = (body: unknown) =>
  Either.mapLeft(Schema.decodeUnknownEither(ToolCallBody, { errors: "all", onExcessProperty: "error" })(body), (e) => formatParseError(e, "body"))

describe("REST tools/call body", () => {
  const decode = restOperations["tools/call"]!.decodeBody!

  it("takes what the schema takes, with the same params", () => {
    const bodies: Array<Record<string, unknown>> = [
      { name: "echo" },
      { name: "echo", arguments: { message: "hi", nested: { deep: [1, 2, { x: null }] } } },
      { arguments: {}, name: "e", _meta: { progressToken: 7 } },
      { name: "ünïcode", arguments: { "": "" } }
    ]
    for (const body of bodies) {
      const params = decode(JSON.parse(JSON.stringify(body)))
      expect(params).toEqual(bySchema(body))
      expect(Either.isRight(params)).toBe(true)
    }
  })

  it("refuses what the schema refuses, with its messages", () => {
    const bodies: Array<unknown> = [
      {},
      { name: "" },
      { name: 3 },
      { name: "echo", arguments: [1] },
      { name: "echo", arguments: "x" },
      { name: "echo", arguments: null },
      { name: "echo", _meta: [] },
      { name: "echo", extra: true },
      JSON.parse(`{"name":"echo","__proto__":{"x":1}}`)
    ]
    for (const body of bodies) {
      const params = decode(body)
      expect(Either.isLeft(params)).toBe(true)
      expect(params).toEqual(bySchema(body))
    }
    expect(decode([])).toEqual(Either.left(["body: expected a JSON object, got an array"]))
  })

  it("passes arguments with a __proto__ key to the schema, not around it", () => {
    const body = JSON.parse(`{"name":"echo","arguments":{"__proto__":{"polluted":true}}}`)
    expect(decode(body)).toEqual(bySchema(body))
  })
})
