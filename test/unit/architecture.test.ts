import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { repoRoot, tempDir } from "../support/processes.js"

/**
 * The house-rule check (scripts/check-architecture.mjs) run on a tiny tree shaped like src/ and
 * plugins/, with one violation planted per case: a check that passes everything would pass CI
 * forever, so each rule is shown to fail.
 */
const script = path.join(repoRoot, "scripts/check-architecture.mjs")
const roots: Array<string> = []

/** A clean tree: domain at the bottom, transport above it, dispatch above both, a plugin on the API. */
const cleanTree: Record<string, string> = {
  "tsconfig.json": JSON.stringify({
    compilerOptions: { module: "nodenext", moduleResolution: "nodenext", paths: { "mcp-gateway/plugin": ["./src/plugin.ts"] } }
  }),
  "src/domain/Instance.ts": "export interface Instance { readonly id: string }\n",
  "src/transport/Connection.ts": 'import type { Instance } from "../domain/Instance.js"\nexport const connect = (instance: Instance) => instance.id\n',
  "src/strategy/Strategy.ts": 'import type { Instance } from "../domain/Instance.js"\nexport const pick = (all: ReadonlyArray<Instance>) => all[0]\n',
  "src/dispatch/Dispatcher.ts":
    'import { connect } from "../transport/Connection.js"\nimport { pick } from "../strategy/Strategy.js"\nexport const dispatch = () => connect(pick([{ id: "a" }])!)\n',
  "src/cli/start.ts": "export const args = process.argv.slice(2)\n",
  "src/plugin.ts": 'export { pick } from "./strategy/Strategy.js"\n',
  "plugins/strategies/first.ts": 'import { pick } from "mcp-gateway/plugin"\nexport default pick\n'
}

const tree = (planted: Record<string, string>) => {
  const root = tempDir("gw-architecture-")
  roots.push(root)
  for (const [file, text] of Object.entries({ ...cleanTree, ...planted })) {
    fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true })
    fs.writeFileSync(path.join(root, file), text)
  }
  return root
}

/** Runs the check asynchronously (it starts dependency-cruiser: never block vitest's worker). */
const check = (root: string) =>
  new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [script, "--root", root], { stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    child.stdout.on("data", (chunk) => (output += chunk))
    child.stderr.on("data", (chunk) => (output += chunk))
    child.on("error", reject)
    child.on("close", (code) => resolve({ code, output }))
  })

afterAll(() => {
  for (const root of roots) fs.rmSync(root, { recursive: true, force: true })
})

// Three trees checked at once (each check starts dependency-cruiser, about a second of CPU): the
// clean one, one with a planted violation of each module rule, one with a new folder pair.
let clean: Promise<{ code: number | null; output: string }>
let moduleRules: Promise<{ code: number | null; output: string }>
let folderPair: Promise<{ code: number | null; output: string }>
beforeAll(() => {
  clean = check(tree({}))
  moduleRules = check(
    tree({
      "src/domain/Instance.ts": 'import type { dispatch } from "../dispatch/Dispatcher.js"\nexport interface Instance { readonly id: string; d?: typeof dispatch }\n',
      "src/transport/Connection.ts": 'import type { Instance } from "../domain/Instance.js"\nimport { pick } from "../strategy/Strategy.js"\nexport const connect = (instance: Instance) => pick([instance])\n',
      "src/strategy/Strategy.ts": 'export const verbose = process.argv.includes("-v")\nexport const pick = <A>(all: ReadonlyArray<A>) => all[0]\n',
      "plugins/strategies/first.ts": 'import { pick } from "../../src/strategy/Strategy.js"\nexport default pick\n'
    })
  )
  folderPair = check(
    tree({ "src/strategy/weights.ts": 'import { dispatch } from "../dispatch/Dispatcher.js"\nexport const weights = () => dispatch()\n' })
  )
})

describe("the house-rule check", () => {
  it("passes a tree that keeps the rules", async () => {
    const result = await clean
    expect(result.output).toContain("0 violation(s)")
    expect(result.code).toBe(0)
  })

  it("fails when domain imports another folder", async () => {
    const result = await moduleRules
    expect(result.code).toBe(1)
    expect(result.output).toContain("✗ domain-imports-nothing")
    expect(result.output).toContain("src/domain/Instance.ts → src/dispatch/Dispatcher.ts")
  })

  it("fails when transport imports a strategy", async () => {
    const result = await moduleRules
    expect(result.output).toContain("✗ transport-knows-no-strategies")
    expect(result.output).toContain("src/transport/Connection.ts → src/strategy/Strategy.ts")
  })

  it("fails on argv read outside the CLI", async () => {
    const result = await moduleRules
    expect(result.output).toContain("✗ argv-only-in-cli")
    expect(result.output).toContain("src/strategy/Strategy.ts:1")
  })

  it("fails when a plugin reaches past the plugin API", async () => {
    const result = await moduleRules
    expect(result.output).toContain("✗ plugins-through-the-plugin-api")
    expect(result.output).toContain("plugins/strategies/first.ts → src/strategy/Strategy.ts")
  })

  it("fails when two folders import each other, naming the files on each side", async () => {
    const result = await folderPair
    expect(result.code).toBe(1)
    expect(result.output).toContain("✗ folder-cycle")
    expect(result.output).toContain("src/dispatch ⇄ src/strategy")
    expect(result.output).toContain("src/strategy/weights.ts → src/dispatch/Dispatcher.ts")
    expect(result.output).toContain("src/dispatch/Dispatcher.ts → src/strategy/Strategy.ts")
  })
})
