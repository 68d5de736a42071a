import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"

/**
 * Errors carry their meaning (a tag, a TransportError's `reason`, a code): nothing in src/
 * recovers it by reading an error's message with a regular expression or a string comparison,
 * as `/within/.test(why)` once recovered a timeout. This guard keeps it so.
 */

/** Ways of reading meaning out of a message: a regex test or match, a search in it, a comparison with text. */
const PATTERNS: ReadonlyArray<RegExp> = [
  /\/[^/\n]+\/[dgimsuy]*\.test\([\w.?]*\b(?:message|why|msg|text)\)/,
  /\.message\)?\s*\.\s*(?:match|matchAll|includes|startsWith|endsWith|search|indexOf|lastIndexOf)\(/,
  /(?<!typeof\s+[\w.]+)\.message\s*[!=]==?\s*["'`]/,
  /["'`]\s*[!=]==?\s*[\w.]*\.message\b/
]

/**
 * The exceptions, each with its reason:
 * - ioredis 6 rejects a timed-out command with a plain `Error("Command timed out")`, no class
 *   or code (src/fleet/FleetRedis.ts compares it whole, through a named constant);
 * - a server that forgot a session and answers 400 (not the protocol's 404) says so only in the
 *   words of its answer (src/transport/httpAnswer.ts): a backend's text, not an error of ours;
 */
const ALLOWED: ReadonlyArray<string> = [
  "e.message === IOREDIS_COMMAND_TIMEOUT",
  "(status === 400 && /session/i.test(text))"
]

export const messageParsingIn = (line: string): boolean =>
  PATTERNS.some((pattern) => pattern.test(line)) && !ALLOWED.some((allowed) => line.includes(allowed))

const sourceFiles = (dir: string): Array<string> =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(path.join(dir, entry.name)) : entry.name.endsWith(".ts") ? [path.join(dir, entry.name)] : []
  )

describe("no error message is parsed in src/", () => {
  it("finds the ways a message was read before (the guard can fail)", () => {
    expect(messageParsingIn(`if (/within/.test(outcome.why)) log()`)).toBe(true)
    expect(messageParsingIn(`e instanceof Error && /timed out/i.test(e.message)`)).toBe(true)
    expect(messageParsingIn(`e instanceof Error && e.message.startsWith("the collector")`)).toBe(true)
    expect(messageParsingIn("e.error.message === `${unknown}: ${target.name}`")).toBe(true)
    expect(messageParsingIn(`if (error.message.includes("ECONNREFUSED")) retry()`)).toBe(true)
    expect(messageParsingIn(`"closed" === e.message`)).toBe(true)
    // Not parsing: reading a message to show it, or a field named like one.
    expect(messageParsingIn("this.log.warn(`failed: ${e.message}`)")).toBe(false)
    expect(messageParsingIn(`return answer._tag === "Answer" && "result" in answer.message`)).toBe(false)
  })

  it("src/ reads no error's meaning from its message", () => {
    const root = path.resolve(__dirname, "../../src")
    const found: Array<string> = []
    for (const file of sourceFiles(root)) {
      fs.readFileSync(file, "utf8").split("\n").forEach((line, i) => {
        if (messageParsingIn(line)) found.push(`${path.relative(root, file)}:${i + 1}: ${line.trim()}`)
      })
    }
    expect(found).toEqual([])
  })
})

describe("the CLI's hint on a 403 reads the envelope's scope, not its message", () => {
  it("a missing scope gets the hint; a 403 for another reason does not", async () => {
    const { describeFailure } = await import("../../src/cli/gatewayClient.js")
    const lacking = { status: 403, body: { error: { status: 403, type: "forbidden", message: "Forbidden: this credential lacks the scope gateway:admin", scope: "gateway:admin" } } }
    expect(describeFailure(lacking)).toContain("(the credential in MCP_GATEWAY_API_KEY lacks it)")
    const policy = { status: 403, body: { error: { status: 403, type: "forbidden", message: "Forbidden: stdio registrations need a scope nobody has here" } } }
    expect(describeFailure(policy)).toBe(policy.body.error.message)
  })
})
