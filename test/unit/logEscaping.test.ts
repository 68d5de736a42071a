import { describe, expect, it } from "@effect/vitest"
import { escapeControls } from "../../src/observability/logging.js"

describe("control characters in log lines", () => {
  it("are written as \\u escapes: a client's ESC never reaches an operator's terminal, a line feed never forges a line", () => {
    const line = `timestamp=x level=INFO message=request subject=tool\x1b[2J\x1b[31mred operation=a\u009bb name=x\ny`
    const escaped = escapeControls(line)
    expect(escaped).toBe("timestamp=x level=INFO message=request subject=tool\\u001b[2J\\u001b[31mred operation=a\\u009bb name=x\\u000ay")
    expect(escaped).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/)
    // A JSON line stays the same JSON.
    const json = JSON.stringify({ message: "m", annotations: { subject: "a\u009b\u007fb\x1b" } })
    expect(JSON.parse(escapeControls(json))).toEqual(JSON.parse(json))
    expect(escapeControls(json)).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/)
    expect(escapeControls("plain line")).toBe("plain line")
  })

})
