import { Effect, Exit, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { INSTALL_HINT, makeSandboxProbes, probeSandbox } from "../../src/transport/sandboxProbe.js"

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-sandbox-probe-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

/** A stand-in for bwrap that notes each run and refuses what its arguments say it should. */
const fakeBwrap = (name: string, refuse: "nothing" | "unshare" | "everything" | "hang") => {
  const file = path.join(dir, name)
  const runs = path.join(dir, `${name}.runs`)
  const refusal = refuse === "nothing" ? "" : refuse === "hang" ? "exec sleep 30\n" : refuse === "unshare"
    ? `case "$*" in *unshare*) echo "unshare: unshare failed: Operation not permitted" >&2; exit 1;; esac\n`
    : `echo "bwrap: No permissions to creating new namespace" >&2; exit 1\n`
  fs.writeFileSync(file, `#!/bin/sh\necho run >> ${runs}\n${refusal}exit 0\n`, { mode: 0o755 })
  return { bwrap: file, runs: () => (fs.existsSync(runs) ? fs.readFileSync(runs, "utf8").trim().split("\n").length : 0) }
}

describe("probeSandbox", () => {
  it("bwrap not on PATH: unavailable, saying what to install", async () => {
    const verdict = await Effect.runPromise(probeSandbox("/nonexistent", { asRoot: false }))
    expect(verdict.unavailable).toBe(`the sandbox cannot be set up: bwrap (bubblewrap) is not on PATH; ${INSTALL_HINT}`)
  })

  it("bwrap refused: unavailable, with bwrap's reason", async () => {
    const { bwrap } = fakeBwrap("refusing", "everything")
    const verdict = await Effect.runPromise(probeSandbox(process.env.PATH, { asRoot: true, bwrap }))
    expect(verdict.unavailable).toContain("No permissions to creating new namespace")
    expect(verdict.unavailable).toContain("apt-get install bubblewrap")
  })

  it("as root, whether the unprivileged user may make a user namespace (its own processes limit); not asked otherwise", async () => {
    const { bwrap, runs } = fakeBwrap("no-userns", "unshare")
    const asRoot = await Effect.runPromise(probeSandbox(process.env.PATH, { asRoot: true, bwrap }))
    expect(asRoot.unavailable).toBeUndefined()
    expect(asRoot.ownUserNamespace).toMatchObject({ why: expect.stringContaining("Operation not permitted") })
    expect(runs()).toBe(2)
    const notRoot = await Effect.runPromise(probeSandbox(process.env.PATH, { asRoot: false, bwrap }))
    expect(notRoot).toEqual({ unavailable: undefined, ownUserNamespace: true })
    expect(runs()).toBe(3)
  })
})

describe("makeSandboxProbes", () => {
  it("probes each PATH once, however many ask at once, and warns once of a shared processes limit", async () => {
    const { bwrap, runs } = fakeBwrap("counted", "unshare")
    const scope = Effect.runSync(Scope.make())
    const warnings: Array<string> = []
    const probes = makeSandboxProbes({ runtime: Effect.runSync(Effect.runtime<never>()), scope, asRoot: true, bwrap, warn: (m) => void warnings.push(m) })
    expect(probes.known(process.env.PATH)).toBeUndefined()
    const verdicts = await Effect.runPromise(Effect.all([probes.verdict(process.env.PATH), probes.verdict(process.env.PATH)], { concurrency: "unbounded" }))
    expect(verdicts[0]).toBe(verdicts[1])
    expect(probes.known(process.env.PATH)).toBe(verdicts[0])
    expect(await Effect.runPromise(probes.verdict(process.env.PATH))).toBe(verdicts[0])
    // Two runs (bwrap, then the user namespace) for the one probe.
    expect(runs()).toBe(2)
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toContain(`"processes" limit`)
    await Effect.runPromise(Scope.close(scope, Exit.void))
  })

  it("a probe still running when its owner closes is stopped (its process killed), and no verdict is remembered", async () => {
    const { bwrap, runs } = fakeBwrap("hanging", "hang")
    const scope = Effect.runSync(Scope.make())
    const probes = makeSandboxProbes({ runtime: Effect.runSync(Effect.runtime<never>()), scope, asRoot: false, bwrap, warn: () => {} })
    const verdict = Effect.runPromise(probes.verdict(process.env.PATH))
    await new Promise((r) => setTimeout(r, 300))
    expect(runs()).toBe(1)
    await Effect.runPromise(Scope.close(scope, Exit.void))
    expect((await verdict).unavailable).toContain("stopping")
    expect(probes.known(process.env.PATH)).toBeUndefined()
  })
})
