import { execFileSync } from "node:child_process"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { repoRoot } from "../support/processes.js"

const policy = path.join(repoRoot, "dist/heap-policy.js")
const load = path.join(repoRoot, "test/fixtures/young-generation-load.mjs")
const MiB = 1024 * 1024

/** The largest young generation a loaded process reached, in MiB. */
const largestYoungGeneration = (nodeArgs: ReadonlyArray<string>, env: Record<string, string> = {}) => {
  const out = execFileSync(process.execPath, [...nodeArgs, load, policy], { env: { ...process.env, ...env }, encoding: "utf8", timeout: 60_000 })
  return JSON.parse(out).largest / MiB
}

/**
 * src/heapPolicy.ts, the first module dist/main.js loads, holds V8's young generation at 16 MiB
 * (two 8 MiB semi-spaces) under load, where V8 alone grows it to 32 MiB; a Node flag of the
 * user's own for its size wins. Each case is a real node process under the same allocation load.
 */
describe("heap policy", () => {
  it("holds the young generation at 16 MiB under load", () => {
    expect(largestYoungGeneration([])).toBeLessThanOrEqual(16)
  })

  it("stays out when the user sized the young generation on node's command line", () => {
    expect(largestYoungGeneration(["--max-semi-space-size=16"])).toBeGreaterThan(16)
  })

  it("stays out when the user sized it in NODE_OPTIONS", () => {
    expect(largestYoungGeneration([], { NODE_OPTIONS: "--max-semi-space-size=16" })).toBeGreaterThan(16)
  })
})
