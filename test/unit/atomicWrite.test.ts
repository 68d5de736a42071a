import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { writeFileAtomic, writeFileAtomicSync } from "../../src/registry/atomicWrite.js"
import { emptyRegistry, readRegistryFile, writeRegistryFile } from "../../src/registry/RegistryFile.js"

const dirs: Array<string> = []
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true })
})
const tempDir = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-atomic-"))
  dirs.push(dir)
  return dir
}

/** Names handed out in turn (the writer's "random" names, known to the attacker in advance). */
const namesOf = (names: ReadonlyArray<string>) => {
  let next = 0
  const used: Array<string> = []
  return {
    used,
    tempName: () => {
      const name = names[Math.min(next++, names.length - 1)]!
      used.push(name)
      return name
    }
  }
}

describe("atomic state-file writes", () => {
  for (const [kind, write] of [
    ["async", (file: string, text: string, tempName: () => string) => writeFileAtomic(file, text, { tempName })],
    ["sync", async (file: string, text: string, tempName: () => string) => writeFileAtomicSync(file, text, { tempName })]
  ] as const) {
    it(`(${kind}) never follows a symlink planted at a temp name: the next name is tried, the victim is untouched`, async () => {
      const dir = tempDir()
      const victim = path.join(tempDir(), "victim")
      fs.writeFileSync(victim, "precious")
      const file = path.join(dir, "state.json")
      // Symlinks at the first four names the writer will try (to the victim, and to a file not yet there).
      const names = namesOf(["a.tmp", "b.tmp", "c.tmp", "d.tmp", "e.tmp"])
      fs.symlinkSync(victim, path.join(dir, "a.tmp"))
      fs.symlinkSync(path.join(dir, "created-by-attacker"), path.join(dir, "b.tmp"))
      fs.symlinkSync(victim, path.join(dir, "c.tmp"))
      fs.symlinkSync(victim, path.join(dir, "d.tmp"))
      await write(file, "new state\n", names.tempName)
      expect(names.used).toEqual(["a.tmp", "b.tmp", "c.tmp", "d.tmp", "e.tmp"])
      expect(fs.readFileSync(file, "utf8")).toBe("new state\n")
      expect(fs.readFileSync(victim, "utf8")).toBe("precious")
      expect(fs.existsSync(path.join(dir, "created-by-attacker"))).toBe(false)
      // The planted links are still links (not written through), and no temp file is left.
      for (const name of ["a.tmp", "b.tmp", "c.tmp", "d.tmp"]) expect(fs.lstatSync(path.join(dir, name)).isSymbolicLink()).toBe(true)
      expect(fs.existsSync(path.join(dir, "e.tmp"))).toBe(false)
      expect(fs.statSync(file).mode & 0o777).toBe(0o600)
    })

    it(`(${kind}) with a symlink at every name it could use, fails without writing anywhere`, async () => {
      const dir = tempDir()
      const victim = path.join(tempDir(), "victim")
      fs.writeFileSync(victim, "precious")
      fs.symlinkSync(victim, path.join(dir, "only.tmp"))
      const file = path.join(dir, "state.json")
      await expect(write(file, "new state\n", () => "only.tmp")).rejects.toMatchObject({ code: "EEXIST" })
      expect(fs.readFileSync(victim, "utf8")).toBe("precious")
      expect(fs.existsSync(file)).toBe(false)
    })

    it(`(${kind}) replaces a symlink at the target itself instead of writing through it`, async () => {
      const dir = tempDir()
      const victim = path.join(tempDir(), "victim")
      fs.writeFileSync(victim, "precious")
      const file = path.join(dir, "state.json")
      fs.symlinkSync(victim, file)
      await write(file, "new state\n", () => `.state.json.${Math.random().toString(16).slice(2)}.tmp`)
      expect(fs.lstatSync(file).isSymbolicLink()).toBe(false)
      expect(fs.readFileSync(file, "utf8")).toBe("new state\n")
      expect(fs.readFileSync(victim, "utf8")).toBe("precious")
    })
  }

  it("the registry file is written that way: random names in its directory, symlinks planted at predictable ones ignored", async () => {
    const dir = tempDir()
    const victim = path.join(tempDir(), "victim")
    fs.writeFileSync(victim, "precious")
    const file = path.join(dir, "registry.json")
    // What the old writer would have used: `.registry.json.{pid}.{ms}.tmp`, for the next few seconds.
    const now = Date.now()
    for (let ms = now; ms < now + 3000; ms += 1) fs.symlinkSync(victim, path.join(dir, `.registry.json.${process.pid}.${ms}.tmp`))
    const registry = { version: 1 as const, templates: { t: { instances: [{ id: "a", transport: "http" as const, endpoint: "http://127.0.0.1:1/mcp" }] } } }
    await Effect.runPromise(writeRegistryFile(file, registry))
    expect(await Effect.runPromise(readRegistryFile(file))).toEqual(registry)
    expect(fs.readFileSync(victim, "utf8")).toBe("precious")
    // Planted links at the names the registry writer itself draws: each one is skipped.
    const names = namesOf([".registry.json.1.tmp", ".registry.json.2.tmp"])
    fs.symlinkSync(victim, path.join(dir, ".registry.json.1.tmp"))
    await Effect.runPromise(writeRegistryFile(file, emptyRegistry, { tempName: names.tempName }))
    expect(names.used).toEqual([".registry.json.1.tmp", ".registry.json.2.tmp"])
    expect(await Effect.runPromise(readRegistryFile(file))).toEqual(emptyRegistry)
    expect(fs.readFileSync(victim, "utf8")).toBe("precious")
    // Nothing of ours left behind: the registry file and the planted links only.
    expect(fs.readdirSync(dir).filter((n) => !fs.lstatSync(path.join(dir, n)).isSymbolicLink())).toEqual(["registry.json"])
  })
})
