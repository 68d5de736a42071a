import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"

/**
 * One clock (docs/architecture.md): every read of the time in src/ goes through the Timer
 * (src/clock/Timer.ts) or Effect's Clock, so TestClock drives it. A raw read or timer stays
 * only where a comment on its line, or in the comment block just above it, says why, starting
 * with one of these markers.
 */
const MARKERS = ["raw timer:", "wall clock:", "from the clock:"]
const RAW = /Date\.now\(|new Date\(|setTimeout\(|setInterval\(|performance\.now\(/
/** Files whose raw time is theirs by nature. */
const EXEMPT: Record<string, string> = {
  "src/clock/Timer.ts": "the clock service itself",
  "src/http/statusPage.ts": "a script for the user's browser, served as text"
}

const root = path.resolve(__dirname, "../..")
const sources = (dir: string): Array<string> =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name)
    return entry.isDirectory() ? sources(full) : entry.name.endsWith(".ts") ? [full] : []
  })

/** `file:line: text` of every raw time read or timer without its reason. */
export const unexplained = (file: string, text: string): Array<string> => {
  const lines = text.split("\n")
  const out: Array<string> = []
  lines.forEach((line, i) => {
    const code = line.replace(/\/\/.*$/, "")
    if (!RAW.test(code)) return
    const comments = [line]
    for (let j = i - 1; j >= 0 && lines[j]!.trim().startsWith("//"); j--) comments.push(lines[j]!)
    if (!comments.some((c) => MARKERS.some((m) => c.includes(m)))) out.push(`${file}:${i + 1}: ${line.trim()}`)
  })
  return out
}

describe("one clock", () => {
  it("src/ reads the time and sets timers only through the Timer or the Clock, or says why", () => {
    const found = sources(path.join(root, "src")).flatMap((full) => {
      const file = path.relative(root, full).split(path.sep).join("/")
      return EXEMPT[file] !== undefined ? [] : unexplained(file, fs.readFileSync(full, "utf8"))
    })
    expect(found).toEqual([])
  })

  it("the check finds a raw read or timer, and accepts one with its reason", () => {
    expect(unexplained("x.ts", "const now = Date.now()")).toHaveLength(1)
    expect(unexplained("x.ts", "const t = setTimeout(f, 10)\nconst d = new Date()")).toHaveLength(2)
    expect(unexplained("x.ts", "// raw timer: a socket's heartbeat\n// (one per stream)\nsetInterval(f, 10)")).toEqual([])
    expect(unexplained("x.ts", "const at = new Date(ms) // from the clock: ms is the Timer's")).toEqual([])
    // A comment that gives no reason is not enough.
    expect(unexplained("x.ts", "// the sweep\nsetInterval(f, 10)")).toHaveLength(1)
    // Nor is a mention inside a comment a read.
    expect(unexplained("x.ts", "// unlike Date.now(), this is the Clock")).toEqual([])
  })
})
