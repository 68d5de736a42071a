#!/usr/bin/env node
/**
 * The house rules of docs/architecture.md, checked: `npm run check:architecture` (CI runs it before
 * the tests). dependency-cruiser (.dependency-cruiser.cjs) checks the module-level rules; this
 * script adds what it cannot see:
 *   - folder cycles: no two folders of src/ (its root files count as one folder, "src/*.ts") or of
 *     plugins/ may import each other, directly or around a loop;
 *   - process.argv read outside src/cli/ and src/main.ts;
 *   - a node:http/https/http2 server (createServer, ServerResponse) outside src/http/ and src/cli/
 *     (transport/ uses node:http as a client, which is fine).
 *
 * Usage: node scripts/check-architecture.mjs [--root DIR]   (DIR defaults to this repository;
 * the unit test points it at a small tree with a planted violation). Exit 0 when every rule
 * holds, 1 otherwise, each failure printed as: rule, from → to, and why the rule exists.
 */
import { spawn } from "node:child_process"
import { readFile } from "node:fs/promises"
import { existsSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

// ─────────────────────────────────────────────────────────────────────────────────────────────────
// KNOWN_VIOLATIONS: the baseline. Folder pairs that import each other, and module cycles, that
// exist today and are being removed by moving files (issue 21). Each entry is tolerated; anything
// NOT listed here fails. Delete entries as the moves land; the goal is an empty array. An entry
// that no longer matches anything is reported so it can be deleted.
//   { rule: "folder-cycle", between: [folderA, folderB] }   folders as printed ("src/proxy", "src/*.ts")
//   { rule: "no-cycles", between: [fileA, fileB] }          a module cycle through exactly these files
// Note: while a folder pair is listed, its two edges are left out of the search for longer folder
// loops too; the check is complete once the array is empty.
export const KNOWN_VIOLATIONS = []
// ─────────────────────────────────────────────────────────────────────────────────────────────────

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..")

const WHY = {
  "folder-cycle":
    "Folders show the architecture only if they have a direction: two folders that import each other " +
    "are one concept split in two, or a dependency pointing the wrong way. Move the file that both sides " +
    "need into the folder that owns its concept, or pass what is needed in from above.",
  "argv-only-in-cli":
    "Only src/cli/ (and src/main.ts) read the command line: everything else takes its settings from the " +
    "parsed config, so a setting has one name and one default.",
  "http-server-only-in-http-and-cli":
    "Only src/http/ serves HTTP (one node:http server owned by a layer). Elsewhere, take plain values " +
    "from http/; reaching a backend as a client (transport/) is fine."
}

/** The folder a module belongs to for the folder rule, or undefined for what is not ours. */
export const folderOf = (file) => {
  let m = /^src\/([^/]+)\//.exec(file)
  if (m) return `src/${m[1]}`
  if (/^src\/[^/]+$/.test(file)) return "src/*.ts"
  m = /^plugins\/([^/]+)\//.exec(file)
  if (m) return `plugins/${m[1]}`
  return undefined
}

const runDepcruise = (root) =>
  new Promise((resolvePromise, reject) => {
    const targets = ["src", "plugins"].filter((dir) => existsSync(join(root, dir)))
    const child = spawn(
      process.execPath,
      [
        join(repo, "node_modules/dependency-cruiser/bin/dependency-cruise.mjs"),
        "--config",
        join(repo, ".dependency-cruiser.cjs"),
        "--output-type",
        "json",
        ...targets
      ],
      { cwd: root, stdio: ["ignore", "pipe", "pipe"] }
    )
    let out = ""
    let err = ""
    child.stdout.on("data", (chunk) => (out += chunk))
    child.stderr.on("data", (chunk) => (err += chunk))
    child.on("error", reject)
    // dependency-cruiser exits with the number of errors it found: the JSON says what they are.
    child.on("close", () => {
      try {
        resolvePromise(JSON.parse(out))
      } catch {
        reject(new Error(`dependency-cruiser gave no report:\n${err || out}`))
      }
    })
  })

const groupBy = (failures) => {
  const groups = new Map()
  for (const f of failures) groups.set(f.rule, [...(groups.get(f.rule) ?? []), f])
  return groups
}

const sameSet = (a, b) => a.length === b.length && a.every((x) => b.includes(x))

/** Strongly connected components (Tarjan) of a graph given as Map<node, Set<node>>. */
const components = (graph) => {
  const index = new Map()
  const low = new Map()
  const stack = []
  const onStack = new Set()
  const result = []
  let next = 0
  const visit = (v) => {
    index.set(v, next)
    low.set(v, next++)
    stack.push(v)
    onStack.add(v)
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v), low.get(w)))
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), index.get(w)))
    }
    if (low.get(v) === index.get(v)) {
      const component = []
      let w
      do {
        w = stack.pop()
        onStack.delete(w)
        component.push(w)
      } while (w !== v)
      result.push(component)
    }
  }
  for (const v of graph.keys()) if (!index.has(v)) visit(v)
  return result
}

/** One loop through a component, as a list of folders ending where it starts. */
const loopIn = (graph, component) => {
  const members = new Set(component)
  const start = component[0]
  const path = [start]
  const seen = new Set([start])
  const walk = (v) => {
    for (const w of graph.get(v) ?? []) {
      if (!members.has(w)) continue
      if (w === start) return [...path, start]
      if (seen.has(w)) continue
      seen.add(w)
      path.push(w)
      const found = walk(w)
      if (found) return found
      path.pop()
    }
    return undefined
  }
  return walk(start) ?? component
}

export const checkArchitecture = async (root = repo) => {
  const report = await runDepcruise(root)
  // The baseline names this repository's files: another tree (the unit test's) gets none.
  const baseline = root === repo ? KNOWN_VIOLATIONS : []
  const failures = []
  const used = new Set()

  // 1. dependency-cruiser's rules, less the known module cycles.
  const ruleComments = new Map((report.summary.ruleSetUsed?.forbidden ?? []).map((r) => [r.name, r.comment]))
  for (const v of report.summary.violations) {
    if (v.rule.name === "no-cycles") {
      const files = (v.cycle ?? []).map((c) => (typeof c === "string" ? c : c.name))
      const known = baseline.findIndex(
        (k) => k.rule === "no-cycles" && sameSet(k.between, [...new Set([v.from, ...files])])
      )
      if (known >= 0) {
        used.add(known)
        continue
      }
      failures.push({ rule: v.rule.name, lines: [[v.from, ...files].join(" → ")], why: ruleComments.get(v.rule.name) })
      continue
    }
    // An npm package's resolved path says where this checkout keeps node_modules: name the package.
    const to = v.to.replace(/^.*node_modules\//, "")
    failures.push({ rule: v.rule.name, lines: [`${v.from} → ${to}`], why: ruleComments.get(v.rule.name) })
  }

  // 2. The folder graph, from the same report.
  const edges = new Map() // "a\tb" → ["file → file", ...]
  const ours = report.modules.filter((m) => folderOf(m.source))
  for (const m of ours) {
    const from = folderOf(m.source)
    for (const d of m.dependencies) {
      const to = folderOf(d.resolved)
      if (!to || to === from) continue
      const key = `${from}\t${to}`
      if (!edges.has(key)) edges.set(key, [])
      edges.get(key).push(`${m.source} → ${d.resolved}${d.dependencyTypes.includes("type-only") ? " (type only)" : ""}`)
    }
  }
  const filesOf = (a, b) => {
    const files = edges.get(`${a}\t${b}`) ?? []
    return files.length > 4 ? [...files.slice(0, 4), `… and ${files.length - 4} more`] : files
  }
  const knownPair = (a, b) =>
    baseline.findIndex((k) => k.rule === "folder-cycle" && sameSet(k.between, [a, b]))
  // Pairs first (the common case, and the clearest message); then what is left of the graph
  // without any pair's edges is searched for longer loops (a → b → c → a).
  const graph = new Map()
  for (const key of edges.keys()) {
    const [a, b] = key.split("\t")
    if (!graph.has(a)) graph.set(a, new Set())
    if (!graph.has(b)) graph.set(b, new Set())
    if (edges.has(`${b}\t${a}`)) {
      const known = knownPair(a, b)
      if (known >= 0) used.add(known)
      else if (a < b)
        failures.push({
          rule: "folder-cycle",
          lines: [`${a} ⇄ ${b}`, `${a} → ${b}:`, ...filesOf(a, b).map((f) => `  ${f}`), `${b} → ${a}:`, ...filesOf(b, a).map((f) => `  ${f}`)],
          why: WHY["folder-cycle"]
        })
      continue
    }
    graph.get(a).add(b)
  }
  for (const component of components(graph)) {
    if (component.length < 2) continue
    const loop = loopIn(graph, component)
    const lines = [`${loop.join(" → ")}`]
    for (let i = 0; i + 1 < loop.length; i++) {
      lines.push(`${loop[i]} → ${loop[i + 1]}:`)
      for (const f of filesOf(loop[i], loop[i + 1])) lines.push(`  ${f}`)
    }
    if (component.length > loop.length - 1) lines.push(`(folders in the same loop: ${component.join(", ")})`)
    failures.push({ rule: "folder-cycle", lines, why: WHY["folder-cycle"] })
  }

  // 3. What needs the source text: process.argv, and node:http servers.
  for (const m of ours) {
    if (!m.source.startsWith("src/") && !m.source.startsWith("plugins/")) continue
    if (/^src\/(cli|http)\//.test(m.source) || m.source === "src/main.ts") continue // the house rule: only http/ and cli/ know HTTP servers and argv
    const text = await readFile(join(root, m.source), "utf8")
    const code = text
      .split("\n")
      .map((line, i) => [i + 1, line])
      .filter(([, line]) => !/^\s*(\/\/|\*|\/\*)/.test(line))
    for (const [n, line] of code)
      if (/\bprocess\.argv\b/.test(line))
        failures.push({ rule: "argv-only-in-cli", lines: [`${m.source}:${n}: ${line.trim()}`], why: WHY["argv-only-in-cli"] })
    const importsHttp = m.dependencies.some((d) => d.coreModule && /^(http|https|http2)$/.test(d.resolved))
    if (importsHttp) {
      for (const [n, line] of code)
        if (/\b(createServer|createSecureServer|ServerResponse)\b/.test(line))
          failures.push({
            rule: "http-server-only-in-http-and-cli",
            lines: [`${m.source}:${n}: ${line.trim()}`],
            why: WHY["http-server-only-in-http-and-cli"]
          })
    }
  }

  const stale = baseline.filter((_, i) => !used.has(i))
  return { failures, stale, tolerated: baseline.length - stale.length, modules: ours.length }
}

const main = async () => {
  const rootArg = process.argv.indexOf("--root")
  const root = rootArg >= 0 ? resolve(process.argv[rootArg + 1]) : repo
  const { failures, stale, tolerated, modules } = await checkArchitecture(root)
  // Grouped by rule, the reason once per rule; a long list (one planted import can close dozens of
  // module cycles) is cut, the first ones say enough.
  const byRule = groupBy(failures)
  for (const [rule, list] of byRule) {
    console.error(`✗ ${rule} (${list.length})`)
    if (list[0].why) console.error(`  why: ${list[0].why}`)
    for (const f of list.slice(0, 8)) {
      console.error(`  ${f.lines[0]}`)
      for (const line of f.lines.slice(1)) console.error(`    ${line}`)
    }
    if (list.length > 8) console.error(`  … and ${list.length - 8} more`)
    console.error("")
  }
  for (const k of stale)
    console.error(
      `note: KNOWN_VIOLATIONS lists ${k.rule} ${k.between.join(" ⇄ ")}, which no longer occurs: delete it from scripts/check-architecture.mjs`
    )
  const summary = `architecture: ${modules} modules, ${failures.length} violation(s)` +
    (tolerated ? `, ${tolerated} known one(s) tolerated (KNOWN_VIOLATIONS in scripts/check-architecture.mjs)` : "")
  if (failures.length > 0) {
    console.error(summary)
    console.error("The rules and why they exist: docs/architecture.md, \"Rules checked in CI\".")
    process.exit(1)
  }
  console.log(summary)
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error) => {
    console.error(`check-architecture: ${error.message}`)
    process.exit(2)
  })
}
