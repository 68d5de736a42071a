// Compares two builds of the gateway (or one build under two configs) on the same three backends:
// wrk rounds alternated A B A B so drift of a shared machine cancels, and the gateway's CPU time
// per request read from /proc, which is steadier than req/s on a busy machine.
//
//   node bench/ab.mjs --a OTHER/dist/main.js [--b dist/main.js] [--rounds 4] [--seconds 5]
//                     [--a-config extra.json] [--b-config extra.json] [--b-headers "x-api-key: KEY"]
//
// --x-config merges a JSON object into that side's config (e.g. {"tracing": {...}}).
// Needs wrk (Debian: apt-get install -y wrk). Linux only (/proc).
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { freePort, start } from "./processes.mjs"

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, "..")
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`)
  return i === -1 ? fallback : process.argv[i + 1]
}
/** `--x-headers "name: value; name: value"`: headers that side's requests carry (a credential its config asks for). */
const headersOf = (text) =>
  Object.fromEntries((text ?? "").split(";").map((h) => h.trim()).filter((h) => h !== "").map((h) => [h.slice(0, h.indexOf(":")).trim(), h.slice(h.indexOf(":") + 1).trim()]))
const sides = {
  A: { main: path.resolve(arg("a", path.join(root, "dist/main.js"))), extra: arg("a-config"), headers: headersOf(arg("a-headers")) },
  B: { main: path.resolve(arg("b", path.join(root, "dist/main.js"))), extra: arg("b-config"), headers: headersOf(arg("b-headers")) }
}
const rounds = Number(arg("rounds", 4))
const seconds = Number(arg("seconds", 5))
const connections = Number(arg("connections", 16))

/** User + system CPU of a process, in microseconds. */
const cpuMicros = (pid) => {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")
  const ticks = Number(fields[11]) + Number(fields[12])
  return (ticks * 1e6) / Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }))
}

const restBody = JSON.stringify({ name: "echo", arguments: { message: "hi" } })
const rpcBody = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "echo", arguments: { message: "hi" } } })

const wrk = (url, body, session, headers = {}) => {
  const out = execFileSync("wrk", ["-t1", `-c${connections}`, `-d${seconds}s`, "-s", path.join(here, "post.lua"), url], {
    env: { ...process.env, BODY: body, ...(session ? { SESSION: session } : {}), HEADERS: Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join("\n") },
    encoding: "utf8"
  })
  const requests = Number(out.match(/(\d+) requests in/)?.[1] ?? 0)
  const errors = Number(out.match(/Non-2xx or 3xx responses:\s+(\d+)/)?.[1] ?? 0)
  return { requests, rps: Number(out.match(/Requests\/sec:\s+([\d.]+)/)?.[1] ?? 0), errors }
}

const main = async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-ab-"))
  const backends = []
  for (let i = 0; i < 3; i++) {
    const { value } = await start(process.execPath, [path.join(here, "backend.mjs"), "0"], (o) => o.match(/^(\d+)\n/)?.[1])
    backends.push(Number(value))
  }
  const sink = await start(process.execPath, [path.join(here, "otlp-sink.mjs"), "0"], (o) => o.match(/^(\d+)\n/)?.[1])
  const gateways = {}
  for (const [name, side] of Object.entries(sides)) {
    const port = await freePort()
    const extra = side.extra === undefined ? {} : JSON.parse(fs.readFileSync(side.extra, "utf8").replaceAll("$SINK", `http://127.0.0.1:${sink.value}/v1/traces`))
    const config = {
      templates: {
        bench: {
          instances: backends.map((p, i) => ({ id: `b${i + 1}`, transport: "http", endpoint: `http://127.0.0.1:${p}/mcp` })),
          load_balancer: { strategy: "round_robin" }
        }
      },
      ...extra
    }
    fs.writeFileSync(path.join(dir, `${name}.json`), JSON.stringify(config))
    const { child } = await start(process.execPath, [side.main, "start", "--config", path.join(dir, `${name}.json`), "--port", String(port)], () => true)
    // Ready when it answers (its log may be quieted by the config under test).
    for (let i = 0; ; i++) {
      const up = await fetch(`http://127.0.0.1:${port}/gateway/health`).then((r) => r.ok, () => false)
      if (up) break
      if (i === 300 || child.exitCode !== null) throw new Error(`gateway ${name} did not start`)
      await new Promise((r) => setTimeout(r, 100))
    }
    const endpoint = `http://127.0.0.1:${port}/mcp/bench`
    const initialized = await fetch(endpoint, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream", ...side.headers },
      body: JSON.stringify({ jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "ab", version: "1" } } })
    })
    gateways[name] = { pid: child.pid, rest: `${endpoint}/tools/call`, endpoint, session: initialized.headers.get("mcp-session-id"), headers: side.headers }
  }

  const totals = {}
  const measure = (name, kind) => {
    const g = gateways[name]
    const before = cpuMicros(g.pid)
    const r = kind === "REST" ? wrk(g.rest, restBody, undefined, g.headers) : wrk(g.endpoint, rpcBody, g.session, g.headers)
    const cpu = cpuMicros(g.pid) - before
    const t = (totals[`${name} ${kind}`] ??= { requests: 0, cpu: 0, rps: [], errors: 0 })
    t.requests += r.requests
    t.cpu += cpu
    t.rps.push(r.rps)
    t.errors += r.errors
  }
  for (const kind of ["REST", "MCP"]) {
    for (const name of ["A", "B"]) measure(name, kind) // warm-up, not counted below
  }
  for (const key of Object.keys(totals)) delete totals[key]
  for (let i = 0; i < rounds; i++) {
    // A B, then B A: whichever runs second in a round is not always the same side.
    const order = i % 2 === 0 ? ["A", "B"] : ["B", "A"]
    for (const kind of ["REST", "MCP"]) for (const name of order) measure(name, kind)
  }

  const lines = [
    `A = ${sides.A.main}${sides.A.extra ? ` + ${sides.A.extra}` : ""}`,
    `B = ${sides.B.main}${sides.B.extra ? ` + ${sides.B.extra}` : ""}`,
    `${rounds} alternated rounds of wrk -t1 -c${connections} -d${seconds}s, ${os.cpus().length} cores, node ${process.version}`,
    "",
    "| side | face | CPU µs/request | req/s (median) | errors |",
    "| --- | --- | ---: | ---: | ---: |"
  ]
  for (const [key, t] of Object.entries(totals).sort()) {
    const [side, face] = key.split(" ")
    const median = [...t.rps].sort((a, b) => a - b)[Math.floor(t.rps.length / 2)]
    lines.push(`| ${side} | ${face} | ${(t.cpu / t.requests).toFixed(0)} | ${median.toFixed(0)} | ${t.errors} |`)
  }
  console.log(lines.join("\n"))
}

main().then(() => process.exit(0), (e) => {
  console.error(`ab: ${e.message}`)
  process.exit(1)
})
