// Profiles the gateway under load: starts three backends and a gateway under `node --cpu-prof`,
// loads one face with wrk, stops the gateway (SIGTERM, so V8 writes the profile), and prints
// where the CPU went: self time by function and by kind (syscalls, GC, JSON, Effect, ours).
//
//   node bench/profile.mjs [--face mcp|rest] [--seconds 10] [--connections 16] [--config extra.json] [--templates N] [--top 40]
//
// The profile itself (a .cpuprofile, for Chrome DevTools or speedscope) stays in the directory
// it names. Needs wrk. Linux.
import * as fs from "node:fs"
import { SourceMap } from "node:module"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { arg, initializeSession, rpcBody, restBody, startBackends, startGateway, wrk } from "./harness.mjs"
import { stop, stopAll } from "./processes.mjs"

const here = path.dirname(fileURLToPath(import.meta.url))
const face = arg("face", "mcp")
const seconds = Number(arg("seconds", 10))
const connections = Number(arg("connections", 16))
const top = Number(arg("top", 40))
const extra = arg("config") === undefined ? {} : JSON.parse(fs.readFileSync(arg("config"), "utf8"))

/**
 * The gateway is bundled (dist/main.js and dist/chunks/*.js hold its code and Effect's alike), so
 * each frame is put back where it came from through the bundle's source maps: src/… and
 * plugins/… are the gateway's code, node_modules/… its libraries.
 */
const maps = new Map()
const original = (frame) => {
  if (!frame.url.startsWith("file://") || !frame.url.includes("/dist/")) return frame
  const file = fileURLToPath(frame.url)
  if (!maps.has(file)) maps.set(file, fs.existsSync(`${file}.map`) ? new SourceMap(JSON.parse(fs.readFileSync(`${file}.map`, "utf8"))) : null)
  const entry = maps.get(file)?.findEntry(frame.lineNumber, frame.columnNumber)
  if (entry === undefined || entry.originalSource === undefined) return frame
  const source = entry.originalSource.replace(/^.*?\/(node_modules|src|plugins)\//, "$1/")
  return { ...frame, url: source, lineNumber: entry.originalLine }
}

/** Which kind of work a profile node is, by its function and file. */
const kindOf = (frame) => {
  const { functionName: fn, url } = frame
  if (fn === "(garbage collector)") return "GC"
  if (fn === "(program)" || fn === "(idle)") return fn
  if (fn === "writev" || fn === "writeBuffer" || fn === "writeUtf8String" || fn === "writeLatin1String") return "socket writes"
  if (url === "" && /^(parse|stringify)$/.test(fn)) return "JSON"
  if (url.includes("node_modules/effect/")) return "Effect runtime"
  if (url.startsWith("src/") || url.startsWith("plugins/")) return "gateway code"
  if (url.startsWith("node_modules/")) return "libraries"
  if (url.startsWith("node:")) return "Node core (JS)"
  return "native / other"
}

const main = async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-profile-"))
  const backends = await startBackends(3)
  // --templates N: the bench template and N-1 more of the same three backends (the scale row).
  const templates = Number(arg("templates", 1))
  const many = {}
  for (let t = 0; t < templates; t++) {
    many[t === 0 ? "bench" : `t${t}`] = {
      instances: backends.map((p, i) => ({ id: `t${t}-b${i + 1}`, transport: "http", endpoint: `http://127.0.0.1:${p}/mcp` })),
      load_balancer: { strategy: "round_robin" }
    }
  }
  const gateway = await startGateway(dir, "gateway.json", { ...(templates > 1 ? { templates: many } : {}), ...extra }, backends, {
    nodeArgs: ["--cpu-prof", `--cpu-prof-dir=${dir}`],
    untilListening: templates > 1
  })
  const session = face === "mcp" ? await initializeSession(gateway.url) : undefined
  const url = face === "mcp" ? `${gateway.url}/mcp/bench` : `${gateway.url}/mcp/bench/tools/call`
  const body = face === "mcp" ? rpcBody : restBody
  wrk(url, body, { seconds: 2, connections, session })
  const r = wrk(url, body, { seconds, connections, session })
  console.error(`${face}: ${r.rps.toFixed(0)} req/s under the profiler`)
  await stop(gateway.child, 60_000)
  const file = fs.readdirSync(dir).find((f) => f.endsWith(".cpuprofile"))
  if (file === undefined) throw new Error(`no profile in ${dir}`)
  const profile = JSON.parse(fs.readFileSync(path.join(dir, file), "utf8"))
  const self = new Map()
  for (const n of profile.nodes) n.callFrame = original(n.callFrame)
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const counts = new Map()
  for (const id of profile.samples) counts.set(id, (counts.get(id) ?? 0) + 1)
  let total = 0
  const kinds = new Map()
  for (const [id, n] of counts) {
    const node = byId.get(id)
    const f = node.callFrame
    const key = `${f.functionName || "(anonymous)"} ${f.url.replace(/^.*\/node_modules\//, "node_modules/")}:${f.lineNumber + 1}`
    self.set(key, (self.get(key) ?? 0) + n)
    const kind = kindOf(f)
    kinds.set(kind, (kinds.get(kind) ?? 0) + n)
    total += n
  }
  // Inclusive time of the gateway's own functions: each sample counts once for every distinct
  // gateway function on its stack (where a request's time goes, by what the gateway does).
  const parent = new Map()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const inclusive = new Map()
  for (const [id, n] of counts) {
    const seen = new Set()
    for (let at = id; at !== undefined; at = parent.get(at)) {
      const f = byId.get(at).callFrame
      if (kindOf(f) !== "gateway code") continue
      const key = `${f.functionName || "(anonymous)"} ${f.url}:${f.lineNumber + 1}`
      if (seen.has(key)) continue
      seen.add(key)
      inclusive.set(key, (inclusive.get(key) ?? 0) + n)
    }
  }
  const busy = total - (kinds.get("(idle)") ?? 0)
  const pct = (n) => `${((100 * n) / busy).toFixed(1)}%`
  const lines = [`profile: ${path.join(dir, file)}`, `busy samples: ${busy} (${pct(busy)} of busy)`, "", "by kind (share of busy time):"]
  for (const [kind, n] of [...kinds].sort((a, b) => b[1] - a[1])) if (kind !== "(idle)") lines.push(`  ${pct(n).padStart(6)}  ${kind}`)
  lines.push("", `top ${top} functions by self time:`)
  for (const [key, n] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    if (key.startsWith("(idle)")) continue
    lines.push(`  ${pct(n).padStart(6)}  ${key}`)
  }
  lines.push("", `top ${top} gateway functions by inclusive time:`)
  for (const [key, n] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${pct(n).padStart(6)}  ${key}`)
  console.log(lines.join("\n"))
}

main().then(() => {
  stopAll()
  process.exit(0)
}, (e) => {
  console.error(`profile: ${e.message}`)
  stopAll()
  process.exit(1)
})
