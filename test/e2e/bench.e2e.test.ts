import { execFile, execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"

const has = (tool: string) => {
  try {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
}

/**
 * The benchmark harness still works: `bench/run.mjs --quick` runs every section for a second or
 * so and writes its JSON. No numbers are judged here (speed is the bench's business, and this
 * machine is busy with the other suites): only that each row measured something and said so.
 * npm test (scripts/test-deps.sh) installs wrk, nginx and bubblewrap; a machine without the first
 * two skips this, one without bwrap checks that the sandbox section is left out.
 */
describe.skipIf(!has("wrk") || !has("nginx"))("bench --quick", () => {
  it("runs every section and reports each row", async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "bench-quick-"))
    try {
      // (Not execFileSync: a worker blocked past vitest's fixed 60 s RPC timeout fails the whole run.)
      await promisify(execFile)(process.execPath, ["bench/run.mjs", "--quick", "--out", out], { timeout: 230_000, maxBuffer: 64 * 1024 * 1024 })
      const result = JSON.parse(fs.readFileSync(path.join(out, "last-run.json"), "utf8"))
      const { everything, latency, pool, sessions, stdio, templates, throughput } = result.sections
      const rows = [...throughput.rows, ...latency.rows, ...everything.rows, ...stdio.rows, ...templates.rows, ...pool.rows]
      expect(rows.map((r: { name: string }) => r.name)).toContain("gateway MCP endpoint (one session)")
      for (const row of rows) expect(row.rps, row.name).toBeGreaterThan(0)
      expect(Object.keys(throughput.ratios)).toContain("mcp_vs_bare_proxy")
      expect(everything.ratios.rest_vs_mcp_p50).toBeGreaterThan(0)
      expect(everything.ratios.rest_one_instance_vs_mcp_p50).toBeGreaterThan(0)
      expect(sessions.sessions).toBe(result.settings.sessions)
      expect(sessions.failure).toBeUndefined()
      expect(sessions.live_heap_kb_per_session).toBeGreaterThan(0)
      expect(pool.rows.map((r: { key: string }) => r.key)).toContain("http1_client")
      expect(templates.bench_template_healthy_at_start).toBe("3 of 3")
      // Sandboxed against unsandboxed (left out, with a line saying so, where bwrap is missing).
      if (has("bwrap")) {
        const { sandbox } = result.sections
        expect(sandbox.rows.map((r: { key: string }) => r.key)).toEqual(["plain", "strict"])
        for (const row of sandbox.rows) expect(row.rps, row.name).toBeGreaterThan(0)
        expect(sandbox.start_rows.map((r: { key: string }) => r.key)).toEqual(["plain_cold", "strict_cold", "plain_warm", "strict_warm"])
        for (const row of sandbox.start_rows) expect(row.session_start_ms_p50, row.name).toBeGreaterThan(0)
        for (const [name, ratio] of Object.entries(sandbox.ratios)) expect(ratio, name).toBeGreaterThan(0)
        expect(fs.readFileSync(path.join(out, "last-run.md"), "utf8")).toContain("### Sandboxed stdio servers")
      } else {
        expect(result.sections.sandbox).toBeUndefined()
      }
      expect(fs.readFileSync(path.join(out, "last-run.md"), "utf8")).toContain("### Throughput")
    } finally {
      fs.rmSync(out, { recursive: true, force: true })
    }
  }, 240_000)
})
