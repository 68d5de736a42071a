// Holds the gateway against a bare Node proxy and nginx in front of the same three backends,
// in one run on this machine, and reports ratios (absolute numbers vary with the machine).
//
//   npm run bench [-- --duration 10 --connections 16]
//
// Needs wrk and nginx (Debian: apt-get install -y wrk nginx-light).
import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { freePort, own, start, stopAll } from "./processes.mjs"

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, "..")
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`)
  return i === -1 ? fallback : process.argv[i + 1]
}
const duration = Number(arg("duration", 10))
const connections = Number(arg("connections", 16))
// Another build of the gateway to measure (e.g. a checkout of an earlier commit), for A/B runs.
const gatewayMain = path.resolve(arg("gateway", path.join(root, "dist/main.js")))

for (const tool of ["wrk", "nginx"]) {
  try {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" })
  } catch {
    console.error(`bench: ${tool} is not installed (Debian: apt-get install -y wrk nginx-light)`)
    process.exit(2)
  }
}

const waitForPort = async (port) => {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.end()
        resolve(true)
      }).on("error", () => resolve(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`nothing listens on ${port}`)
}

const rpcBody = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "echo", arguments: { message: "hi" } } })
const restBody = JSON.stringify({ name: "echo", arguments: { message: "hi" } })

const wrk = (url, body, seconds, session) => {
  const out = execFileSync("wrk", ["-t1", `-c${connections}`, `-d${seconds}s`, "--latency", "-s", path.join(here, "post.lua"), url], {
    env: { ...process.env, BODY: body, ...(session ? { SESSION: session } : {}) },
    encoding: "utf8"
  })
  const rps = Number(out.match(/Requests\/sec:\s+([\d.]+)/)?.[1] ?? 0)
  const p99 = out.match(/\s99%\s+([\d.]+)(us|ms|s)/)
  const toMs = (v, unit) => Number(v) * (unit === "us" ? 0.001 : unit === "s" ? 1000 : 1)
  const errors = Number(out.match(/Non-2xx or 3xx responses:\s+(\d+)/)?.[1] ?? 0) +
    Number(out.match(/Socket errors:.*?(\d+) timeout/)?.[1] ?? 0)
  return { rps, p99: p99 ? toMs(p99[1], p99[2]) : NaN, errors }
}

const check = async (url, body, session) => {
  const response = await fetch(url, {
    method: "POST",
    body,
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream", ...(session ? { "mcp-session-id": session } : {}) }
  })
  const text = await response.text()
  if (response.status !== 200 || !text.includes("Echo: hi")) throw new Error(`${url} answered ${response.status}: ${text.slice(0, 200)}`)
}

const main = async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-bench-"))
  const backends = []
  for (let i = 0; i < 3; i++) {
    const { value } = await start(process.execPath, [path.join(here, "backend.mjs"), "0"], (o) => o.match(/^(\d+)\n/)?.[1])
    backends.push(Number(value))
  }

  const nodeProxy = await start(process.execPath, [path.join(here, "node-proxy.mjs"), "0", ...backends.map(String)], (o) => o.match(/^(\d+)\n/)?.[1])

  const nginxPort = await freePort()
  fs.mkdirSync(path.join(dir, "logs"))
  fs.writeFileSync(path.join(dir, "nginx.conf"), `
worker_processes 1;
error_log ${dir}/logs/error.log warn;
pid ${dir}/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  upstream backends { ${backends.map((p) => `server 127.0.0.1:${p};`).join(" ")} keepalive 64; }
  server {
    listen 127.0.0.1:${nginxPort};
    location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}`)
  // nginx says nothing when it is up: wait for its port instead.
  own(spawn("nginx", ["-p", dir, "-c", path.join(dir, "nginx.conf"), "-g", "daemon off;"], { stdio: "ignore" }))
  await waitForPort(nginxPort)

  const templates = {
    bench: {
      instances: backends.map((p, i) => ({ id: `b${i + 1}`, transport: "http", endpoint: `http://127.0.0.1:${p}/mcp` })),
      load_balancer: { strategy: "round_robin" }
    }
  }
  const startGateway = async (name, config) => {
    const port = await freePort()
    fs.writeFileSync(path.join(dir, name), JSON.stringify(config))
    await start(process.execPath, [gatewayMain, "start", "--config", path.join(dir, name), "--port", String(port)], (o) => (o.includes("listening on") ? true : undefined))
    return port
  }
  const gatewayPort = await startGateway("gateway.json", { templates })
  // The same gateway with tracing on, exporting every span to a sink that drops them.
  const sink = await start(process.execPath, [path.join(here, "otlp-sink.mjs"), "0"], (o) => o.match(/^(\d+)\n/)?.[1])
  // (A build from before tracing existed refuses the key: the row is then left out.)
  const tracedPort = await startGateway("gateway-traced.json", {
    templates,
    tracing: { otlp_endpoint: `http://127.0.0.1:${sink.value}/v1/traces`, export_interval_ms: 1000 }
  }).catch(() => undefined)

  // One MCP session on the gateway's endpoint, pinned to a backend, that every wrk connection uses.
  const endpoint = `http://127.0.0.1:${gatewayPort}/mcp/bench`
  const initialized = await fetch(endpoint, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "bench", version: "1" } } })
  })
  const session = initialized.headers.get("mcp-session-id")

  const systems = [
    { name: "one backend, no proxy", url: `http://127.0.0.1:${backends[0]}/mcp`, body: rpcBody },
    { name: "bare Node proxy", url: `http://127.0.0.1:${nodeProxy.value}/mcp`, body: rpcBody },
    { name: "nginx (1 worker)", url: `http://127.0.0.1:${nginxPort}/mcp`, body: rpcBody },
    { name: "mcp-gateway REST tools/call", url: `http://127.0.0.1:${gatewayPort}/mcp/bench/tools/call`, body: restBody },
    { name: "mcp-gateway MCP endpoint tools/call (one session)", url: endpoint, body: rpcBody, session },
    ...(tracedPort === undefined ? [] : [{ name: "mcp-gateway REST tools/call, tracing on (OTLP)", url: `http://127.0.0.1:${tracedPort}/mcp/bench/tools/call`, body: restBody }])
  ]
  const results = []
  for (const system of systems) {
    await check(system.url, system.body, system.session)
    wrk(system.url, system.body, 2, system.session) // warm-up (JIT, keep-alive pools)
    const r = wrk(system.url, system.body, duration, system.session)
    results.push({ ...system, ...r })
    console.error(`${system.name}: ${r.rps.toFixed(0)} req/s, p99 ${r.p99.toFixed(2)} ms`)
  }

  const byName = Object.fromEntries(results.map((r) => [r.name, r]))
  const gateway = byName["mcp-gateway REST tools/call"]
  const lines = [
    `wrk -t1 -c${connections} -d${duration}s, ${os.cpus().length} cores, node ${process.version}, ${new Date().toISOString().slice(0, 10)}`,
    "",
    "| system | req/s | p99 ms | errors |",
    "| --- | ---: | ---: | ---: |",
    ...results.map((r) => `| ${r.name} | ${r.rps.toFixed(0)} | ${r.p99.toFixed(2)} | ${r.errors} |`),
    "",
    `gateway / bare Node proxy: ${(gateway.rps / byName["bare Node proxy"].rps).toFixed(2)}x throughput`,
    `gateway / nginx: ${(gateway.rps / byName["nginx (1 worker)"].rps).toFixed(2)}x throughput`,
    `gateway MCP endpoint / bare Node proxy: ${(byName["mcp-gateway MCP endpoint tools/call (one session)"].rps / byName["bare Node proxy"].rps).toFixed(2)}x throughput`,
    ...(tracedPort === undefined ? [] : [`gateway REST with tracing on / off: ${(byName["mcp-gateway REST tools/call, tracing on (OTLP)"].rps / gateway.rps).toFixed(2)}x throughput`])
  ]
  const report = lines.join("\n")
  console.log(report)
  fs.writeFileSync(path.join(here, "last-run.md"), report + "\n")
}

main().then(
  () => {
    stopAll()
    process.exit(0)
  },
  (e) => {
    console.error(`bench: ${e.message}`)
    stopAll()
    process.exit(1)
  }
)
