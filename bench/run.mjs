// The benchmark: the gateway held against what users would pick instead (a bare Node proxy,
// nginx, mcp-proxy), all on this machine in one run, reported as ratios (absolute numbers vary
// with the machine; ratios within one run are what to compare). docs/benchmarks.md says what
// each row means and which targets they are held to.
//
//   npm run bench [-- --duration 8 --rounds 3 --connections 16]
//   npm run bench -- --quick                  # seconds, not minutes: that the harness works (CI)
//   npm run bench -- --only throughput,latency,everything,pool,stdio,capable,sandbox,sessions,templates,replicas,cluster
//   npm run bench -- --soak 10                # also: 10 minutes of load, RSS sampled (not in CI)
//   npm run bench -- --gateway OTHER/dist/main.js   # another build of the gateway
//
// Writes last-run.md and last-run.json into bench/ (or --out DIR). Needs wrk and nginx (Debian: apt-get
// install -y wrk nginx-light); mcp-proxy is installed from npm on first use (.tmp/bench-tools).
import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import {
  arg,
  check,
  cpuMicros,
  flag,
  initializeSession,
  requireTools,
  restBody,
  root,
  rpcBody,
  rssBytes,
  startBackends,
  startGateway,
  wrk
} from "./harness.mjs"
import { freePort, own, start, stop, stopAll } from "./processes.mjs"
import { benchTools, serverEverything } from "./tools.mjs"

const here = path.dirname(fileURLToPath(import.meta.url))
const quick = flag("quick")
const settings = {
  seconds: Number(arg("duration", quick ? 1 : 8)),
  rounds: Number(arg("rounds", quick ? 1 : 3)),
  connections: Number(arg("connections", 16)),
  warmup: quick ? 0 : 2,
  latencySeconds: quick ? 1 : 5,
  sessions: Number(arg("sessions", quick ? 200 : 10_000)),
  templates: Number(arg("templates", quick ? 20 : 1000)),
  soakMinutes: Number(arg("soak", 0))
}
const only = arg("only") === undefined ? undefined : new Set(arg("only").split(","))
const runs = (section) => only === undefined || only.has(section)
const gatewayMain = path.resolve(arg("gateway", path.join(root, "dist/main.js")))
const API_KEY = "bench-key-0123456789abcdef0123456789abcdef"

const log = (line) => console.error(`bench: ${line}`)
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const round = (n, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const commandExists = (name) => (process.env.PATH ?? "").split(":").some((d) => fs.existsSync(path.join(d, name)))

const waitForPort = async (port) => {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.end()
        resolve(true)
      }).on("error", () => resolve(false))
    })
    if (ok) return
    await sleep(100)
  }
  throw new Error(`nothing listens on ${port}`)
}

const startNginx = async (dir, backends) => {
  const port = await freePort()
  fs.mkdirSync(path.join(dir, "logs"), { recursive: true })
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
    listen 127.0.0.1:${port};
    location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $http_host; proxy_buffering off; }
  }
}`)
  // nginx says nothing when it is up: wait for its port instead.
  own(spawn("nginx", ["-p", dir, "-c", path.join(dir, "nginx.conf"), "-g", "daemon off;"], { stdio: "ignore" }))
  await waitForPort(port)
  return port
}

/**
 * Measures `systems` in alternated rounds (A B C ..., then reversed, ...), so that the drift of
 * a shared machine falls on every system alike; each system's numbers are the medians of its
 * rounds. A system with a `pid` also gets its CPU time per request and its RSS after the rounds.
 */
const measureRounds = async (systems, { seconds, connections }) => {
  for (const s of systems) {
    await check(s.url, s.body, s.session, s.headers)
    if (settings.warmup > 0) wrk(s.url, s.body, { seconds: settings.warmup, connections, session: s.session, headers: s.headers })
  }
  const samples = new Map(systems.map((s) => [s.name, []]))
  for (let i = 0; i < settings.rounds; i++) {
    const order = i % 2 === 0 ? systems : [...systems].reverse()
    for (const s of order) {
      const before = s.pid === undefined ? 0 : cpuMicros(s.pid)
      const during = s.during?.()
      const r = wrk(s.url, s.body, { seconds, connections, session: s.session, headers: s.headers })
      during?.stop()
      // A turn of the event loop between runs: a SIGINT/SIGTERM is handled (and every child stopped) within one run.
      await new Promise((r) => setImmediate(r))
      const cpu = s.pid === undefined ? undefined : cpuMicros(s.pid) - before
      samples.get(s.name).push({ ...r, cpuPerRequest: cpu === undefined || r.requests === 0 ? undefined : cpu / r.requests, rss: s.pid === undefined ? undefined : rssBytes(s.pid) })
    }
  }
  return systems.map((s) => {
    const xs = samples.get(s.name)
    const cpu = xs.map((x) => x.cpuPerRequest).filter((x) => x !== undefined)
    return {
      name: s.name,
      key: s.key,
      rps: round(median(xs.map((x) => x.rps)), 0),
      p50_ms: round(median(xs.map((x) => x.p50)), 3),
      p99_ms: round(median(xs.map((x) => x.p99)), 2),
      errors: xs.reduce((n, x) => n + x.errors, 0),
      rounds: xs.map((x) => round(x.rps, 0)),
      ...(cpu.length === 0 ? {} : { cpu_us_per_request: round(median(cpu), 0) }),
      ...(s.pid === undefined ? {} : { rss_mb: round(Math.max(...xs.map((x) => x.rss)) / 1e6, 1) })
    }
  })
}

/** Scrapes /metrics every `ms` while a round runs (the "metrics on" row: a Prometheus polling it). */
const scraping = (url, headers, ms = 1000) => () => {
  let stopped = false
  const loop = async () => {
    while (!stopped) {
      await fetch(`${url}/metrics`, { headers }).then((r) => r.text(), () => undefined)
      await sleep(ms)
    }
  }
  void loop()
  return { stop: () => void (stopped = true) }
}

/** A client that declares what desktop clients declare: under `auto`, a process of its own. */
const capableCapabilities = { sampling: {}, roots: { listChanged: true }, elicitation: {} }
const mcpHeaders = { "content-type": "application/json", accept: "application/json, text/event-stream" }
const answerOf = async (response) => {
  const text = await response.text()
  return JSON.parse(text.trimStart().startsWith("{") ? text : text.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).at(-1))
}

/**
 * A capable client's new session on `endpoint`: initialize, initialized, tools/list; the ms to
 * the tools. Then DELETE, so that its process stops and its slot frees.
 */
const newCapableSession = async (endpoint) => {
  const started = performance.now()
  const opened = await fetch(endpoint, {
    method: "POST",
    headers: mcpHeaders,
    body: JSON.stringify({ jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: capableCapabilities, clientInfo: { name: "bench", version: "1" } } })
  })
  await opened.text()
  const session = opened.headers.get("mcp-session-id")
  if (opened.status !== 200 || session === null) throw new Error(`initialize answered ${opened.status}`)
  const inSession = { ...mcpHeaders, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25" }
  await (await fetch(endpoint, { method: "POST", headers: inSession, body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) })).text()
  const tools = await answerOf(await fetch(endpoint, { method: "POST", headers: inSession, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }) }))
  if (!Array.isArray(tools.result?.tools)) throw new Error(`tools/list answered ${JSON.stringify(tools).slice(0, 200)}`)
  const ms = performance.now() - started
  await (await fetch(endpoint, { method: "DELETE", headers: inSession })).text()
  return ms
}

const main = async () => {
  requireTools(["wrk", "nginx"], "Debian: apt-get install -y wrk nginx-light")
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-bench-"))
  const started = Date.now()
  const result = {
    date: new Date().toISOString(),
    machine: { cores: os.cpus().length, cpu: os.cpus()[0]?.model ?? "unknown", memory_gb: round(os.totalmem() / 2 ** 30, 1), node: process.version, load_average_at_start: os.loadavg().map((x) => round(x, 2)) },
    settings: { ...settings, quick, gateway: path.relative(root, gatewayMain) || gatewayMain },
    sections: {}
  }
  const backends = await startBackends(3)
  const gateways = []
  const gateway = async (name, config, options = {}) => {
    const g = await startGateway(dir, name, config, backends, { main: gatewayMain, ...options })
    gateways.push(g)
    return g
  }

  if (runs("throughput") || runs("latency")) {
    log("throughput: backends, bare Node proxy, nginx, gateways")
    const nodeProxy = await start(process.execPath, [path.join(here, "node-proxy.mjs"), "0", ...backends.map(String)], (o) => o.match(/^(\d+)\n/)?.[1])
    const nginxPort = await startNginx(dir, backends)
    const plain = await gateway("gateway.json", {})
    const session = await initializeSession(plain.url)
    // Auth (an API key), rate limits (high enough never to refuse), and /metrics scraped every second.
    // (Hashed by the gateway under test itself, which is bundled: its modules cannot be imported one by one.)
    const hashApiKey = (key) => execFileSync(process.execPath, [gatewayMain, "hash-key", key], { encoding: "utf8" }).match(/^hash: (\S+)/m)[1]
    const secured = await gateway("gateway-secured.json", {
      gateway: { rate_limits: { per_client: { requests_per_second: 1_000_000, burst: 1_000_000 }, per_template: { requests_per_second: 1_000_000, burst: 1_000_000 } } },
      auth: { api_keys: [{ id: "bench", hash: hashApiKey(API_KEY), scopes: ["mcp:call", "gateway:read"] }] }
    }, { headers: { "x-api-key": API_KEY } })
    const sink = await start(process.execPath, [path.join(here, "otlp-sink.mjs"), "0"], (o) => o.match(/^(\d+)\n/)?.[1])
    const traced = await gateway("gateway-traced.json", { tracing: { otlp_endpoint: `http://127.0.0.1:${sink.value}/v1/traces`, export_interval_ms: 1000 } })
    // The same gateway with V8's own young-generation maximum (16 MB semi-spaces), given as a node
    // flag so that src/heapPolicy.ts stays out: what holding it at 8 MB semi-spaces buys
    // (docs/operations.md, Memory).
    const v8Young = await gateway("gateway-v8-young.json", {}, { nodeArgs: ["--max-semi-space-size=16"] })
    const v8YoungSession = await initializeSession(v8Young.url)
    const direct = { key: "direct", name: "one backend, no proxy", url: `http://127.0.0.1:${backends[0]}/mcp`, body: rpcBody }
    const bare = { key: "bare_proxy", name: "bare Node proxy", url: `http://127.0.0.1:${nodeProxy.value}/mcp`, body: rpcBody, pid: nodeProxy.child.pid }
    const mcp = { key: "gateway_mcp", name: "gateway MCP endpoint (one session)", url: `${plain.url}/mcp/bench`, body: rpcBody, session, pid: plain.pid }
    const rest = { key: "gateway_rest", name: "gateway REST tools/call", url: `${plain.url}/mcp/bench/tools/call`, body: restBody, pid: plain.pid }

    if (runs("throughput")) {
      const securedHeaders = { "x-api-key": API_KEY }
      const systems = [
        direct,
        bare,
        { key: "nginx", name: "nginx (1 worker)", url: `http://127.0.0.1:${nginxPort}/mcp`, body: rpcBody },
        mcp,
        rest,
        {
          key: "gateway_rest_secured",
          name: "gateway REST, auth + rate limits + /metrics scraped",
          url: `${secured.url}/mcp/bench/tools/call`,
          body: restBody,
          headers: securedHeaders,
          pid: secured.pid,
          during: scraping(secured.url, securedHeaders)
        },
        { key: "gateway_rest_traced", name: "gateway REST, tracing on (OTLP)", url: `${traced.url}/mcp/bench/tools/call`, body: restBody, pid: traced.pid },
        { key: "gateway_mcp_v8_young", name: "gateway MCP endpoint, V8's young generation (node --max-semi-space-size=16)", url: `${v8Young.url}/mcp/bench`, body: rpcBody, session: v8YoungSession, pid: v8Young.pid }
      ]
      const rows = await measureRounds(systems, settings)
      const by = Object.fromEntries(rows.map((r) => [r.key, r]))
      result.sections.throughput = {
        what: `wrk -t1 -c${settings.connections} -d${settings.seconds}s, ${settings.rounds} alternated rounds, medians`,
        rows,
        ratios: {
          mcp_vs_bare_proxy: round(by.gateway_mcp.rps / by.bare_proxy.rps),
          mcp_vs_nginx: round(by.gateway_mcp.rps / by.nginx.rps),
          rest_vs_bare_proxy: round(by.gateway_rest.rps / by.bare_proxy.rps),
          mcp_p99_vs_bare_proxy: round(by.gateway_mcp.p99_ms / by.bare_proxy.p99_ms),
          rest_p99_vs_bare_proxy: round(by.gateway_rest.p99_ms / by.bare_proxy.p99_ms),
          secured_vs_rest: round(by.gateway_rest_secured.rps / by.gateway_rest.rps),
          traced_vs_rest: round(by.gateway_rest_traced.rps / by.gateway_rest.rps),
          v8_young_vs_mcp: round(by.gateway_mcp_v8_young.rps / by.gateway_mcp.rps)
        },
        gateway_rss_mb_after_load: Math.max(by.gateway_mcp.rss_mb, by.gateway_rest.rss_mb),
        gateway_v8_young_rss_mb_after_load: by.gateway_mcp_v8_young.rss_mb
      }
    }

    if (runs("latency")) {
      log("latency at one connection")
      const rows = await measureRounds([direct, bare, mcp, rest], { seconds: settings.latencySeconds, connections: 1 })
      const by = Object.fromEntries(rows.map((r) => [r.key, r]))
      result.sections.latency = {
        what: `wrk -t1 -c1 -d${settings.latencySeconds}s, ${settings.rounds} alternated rounds, medians`,
        rows,
        added_p50_ms: {
          bare_proxy: round(by.bare_proxy.p50_ms - by.direct.p50_ms, 3),
          gateway_mcp: round(by.gateway_mcp.p50_ms - by.direct.p50_ms, 3),
          gateway_rest: round(by.gateway_rest.p50_ms - by.direct.p50_ms, 3)
        }
      }
    }
    await stop(nodeProxy.child)
    for (const g of [secured, traced, v8Young]) await g.stop()
    await stop(sink.child)
  }

  if (runs("everything")) {
    // The REST face and the MCP endpoint at one connection against a real server: three
    // server-everything instances over Streamable HTTP (Express + the SDK's transport). Both faces
    // send one request on a reused backend session. The MCP session is opened at 2025-11-25, the
    // version of the gateway's own backend sessions (those REST requests use): the server answers
    // a session of 2025-11-25 or later with a priming SSE event first, and @hono/node-server (under
    // the SDK's transport) then waits a setTimeout(0) (1 ms or more) before it writes the answer.
    // A 2025-06-18 client's session gets no priming event, hence the third row: that difference is
    // the server's, not the gateway's (docs/benchmarks.md).
    log("everything: REST and MCP endpoint at one connection against server-everything over HTTP")
    const ports = []
    const servers = []
    for (let i = 0; i < 3; i++) {
      const port = await freePort()
      const { child } = await start(process.execPath, [serverEverything, "streamableHttp"], (o) => (o.includes("listening on port") ? true : undefined), { env: { ...process.env, PORT: String(port) } })
      servers.push(child)
      ports.push(port)
    }
    const g = await gateway("gateway-everything-http.json", {
      templates: {
        everything: {
          instances: ports.map((p, i) => ({ id: `e${i + 1}`, transport: "http", endpoint: `http://127.0.0.1:${p}/mcp` })),
          load_balancer: { strategy: "round_robin" }
        },
        // The same first instance alone: REST requests then land on one process, as an MCP
        // session's do, so the two faces compare like for like (round robin over three processes
        // wakes a different one each request, which costs this 2-core machine more than the gateway).
        everything_one: { instances: [{ id: "e1", transport: "http", endpoint: `http://127.0.0.1:${ports[0]}/mcp` }] }
      }
    })
    const rows = await measureRounds([
      { key: "rest", name: "gateway REST tools/call", url: `${g.url}/mcp/everything/tools/call`, body: restBody, pid: g.pid },
      { key: "rest_one", name: "gateway REST tools/call, one instance", url: `${g.url}/mcp/everything_one/tools/call`, body: restBody, pid: g.pid },
      { key: "mcp", name: "gateway MCP endpoint, a 2025-11-25 session", url: `${g.url}/mcp/everything`, body: rpcBody, session: await initializeSession(g.url, "everything"), pid: g.pid },
      { key: "mcp_2025_06_18", name: "gateway MCP endpoint, a 2025-06-18 session (no priming event)", url: `${g.url}/mcp/everything`, body: rpcBody, session: await initializeSession(g.url, "everything", {}, "2025-06-18"), pid: g.pid }
    ], { seconds: settings.latencySeconds, connections: 1 })
    const by = Object.fromEntries(rows.map((r) => [r.key, r]))
    result.sections.everything = {
      what: `3 server-everything instances (streamableHttp), round robin; wrk -t1 -c1 -d${settings.latencySeconds}s, ${settings.rounds} alternated rounds, medians`,
      rows,
      ratios: {
        rest_vs_mcp_p50: round(by.rest.p50_ms / by.mcp.p50_ms),
        rest_one_instance_vs_mcp_p50: round(by.rest_one.p50_ms / by.mcp.p50_ms),
        rest_vs_mcp_2025_06_18_p50: round(by.rest.p50_ms / by.mcp_2025_06_18.p50_ms)
      }
    }
    await g.stop()
    for (const child of servers) await stop(child)
  }

  if (runs("pool")) {
    // The client side of a proxy, three ways: node:http's Agent, undici's Pool (installed on
    // first use; left out when it cannot be), and the gateway's own HTTP/1.1 client.
    const { undici } = benchTools({ install: !quick })
    log("pool: the bare proxy on node:http's Agent, undici's Pool and the gateway's Http1Client")
    const agentProxy = await start(process.execPath, [path.join(here, "node-proxy.mjs"), "0", ...backends.map(String)], (o) => o.match(/^(\d+)\n/)?.[1])
    const ownProxy = await start(process.execPath, [path.join(here, "http1-proxy.mjs"), "0", ...backends.map(String)], (o) => o.match(/^(\d+)\n/)?.[1])
    const poolProxy = undici === undefined
      ? undefined
      : await start(process.execPath, [path.join(here, "undici-proxy.mjs"), undici, "0", ...backends.map(String)], (o) => o.match(/^(\d+)\n/)?.[1])
    if (poolProxy === undefined) log("pool: undici is not at hand; its row left out")
    const rows = await measureRounds([
      { key: "node_agent", name: "bare proxy, node:http Agent (keep-alive)", url: `http://127.0.0.1:${agentProxy.value}/mcp`, body: rpcBody, pid: agentProxy.child.pid },
      ...(poolProxy === undefined ? [] : [{ key: "undici_pool", name: "bare proxy, undici Pool", url: `http://127.0.0.1:${poolProxy.value}/mcp`, body: rpcBody, pid: poolProxy.child.pid }]),
      { key: "http1_client", name: "proxy on the gateway's Http1Client (reads both bodies)", url: `http://127.0.0.1:${ownProxy.value}/mcp`, body: rpcBody, pid: ownProxy.child.pid }
    ], settings)
    const by = Object.fromEntries(rows.map((r) => [r.key, r]))
    const cpuRatio = (a, b) => a?.cpu_us_per_request === undefined || b?.cpu_us_per_request === undefined ? undefined : round(a.cpu_us_per_request / b.cpu_us_per_request)
    result.sections.pool = {
      what: `the same proxy over each client, wrk -t1 -c${settings.connections} -d${settings.seconds}s, ${settings.rounds} alternated rounds, medians`,
      rows,
      ...(by.undici_pool === undefined ? {} : { undici_vs_agent: round(by.undici_pool.rps / by.node_agent.rps), undici_vs_agent_cpu: cpuRatio(by.undici_pool, by.node_agent) }),
      http1_vs_agent: round(by.http1_client.rps / by.node_agent.rps),
      http1_vs_agent_cpu: cpuRatio(by.http1_client, by.node_agent)
    }
    await stop(agentProxy.child)
    await stop(ownProxy.child)
    if (poolProxy !== undefined) await stop(poolProxy.child)
  }


  if (runs("stdio")) {
    log("stdio: the gateway over server-everything processes, and mcp-proxy over one")
    const everything = (id) => ({ id, transport: "stdio", command: [process.execPath, serverEverything, "stdio"] })
    const balanced = { strategy: "round_robin", session_affinity: "none" }
    const one = await gateway("gateway-stdio-1.json", { templates: { everything: { instances: [everything("e1")], load_balancer: balanced } } })
    const two = await gateway("gateway-stdio-2.json", { templates: { everything: { instances: [everything("e1"), everything("e2")], load_balancer: balanced } } })
    const systems = []
    for (const [key, name, g] of [["gateway_stdio_1", "gateway MCP endpoint, 1 server-everything process", one], ["gateway_stdio_2", "gateway MCP endpoint, 2 server-everything processes (balanced session)", two]]) {
      systems.push({ key, name, url: `${g.url}/mcp/everything`, body: rpcBody, session: await initializeSession(g.url, "everything"), pid: g.pid })
    }
    // (A quick run installs nothing from the network: without mcp-proxy at hand, its row is left out.)
    const bin = benchTools({ install: !quick }).mcpProxy
    let proxy
    if (bin !== undefined) {
      const port = await freePort()
      proxy = await start(process.execPath, [bin, "--port", String(port), "--host", "127.0.0.1", "--server", "stream", "--", process.execPath, serverEverything, "stdio"], () => true)
      await waitForPort(port)
      const url = `http://127.0.0.1:${port}/mcp`
      const response = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "bench", version: "1" } } })
      })
      await response.text()
      const session = response.headers.get("mcp-session-id")
      systems.unshift({ key: "mcp_proxy_1", name: "mcp-proxy (npm), 1 server-everything process", url, body: rpcBody, session, pid: proxy.child.pid })
    }
    const rows = await measureRounds(systems, settings)
    const by = Object.fromEntries(rows.map((r) => [r.key, r]))
    result.sections.stdio = {
      what: `tools/call echo through each, wrk -t1 -c${settings.connections} -d${settings.seconds}s, ${settings.rounds} alternated rounds, medians`,
      rows,
      ratios: by.mcp_proxy_1 === undefined ? {} : {
        one_process_vs_mcp_proxy: round(by.gateway_stdio_1.rps / by.mcp_proxy_1.rps),
        two_processes_vs_mcp_proxy: round(by.gateway_stdio_2.rps / by.mcp_proxy_1.rps)
      }
    }
    if (proxy !== undefined) await stop(proxy.child)
    await one.stop()
    await two.stop()
  }

  if (runs("capable")) {
    log("capable: new sessions that get a process of their own, cold and warm")
    const one = { instances: [{ id: "e1", transport: "stdio", command: [process.execPath, serverEverything, "stdio"] }] }
    const sequential = quick ? 2 : 10
    const burst = quick ? 4 : 32
    const rows = []
    for (const [key, name, warm] of [["cold", "warm_processes: 0 (a cold start each)", 0], ["warm", "warm_processes: 1 (the default)", 1]]) {
      const g = await gateway(`gateway-capable-${key}.json`, { gateway: { log_level: "warn" }, templates: { everything: { ...one, load_balancer: { warm_processes: warm } } } })
      const endpoint = `${g.url}/mcp/everything`
      // The first session makes the instance keep processes warm (from its first such session on).
      await newCapableSession(endpoint)
      const times = []
      for (let i = 0; i < sequential; i++) {
        // A new session now and then: time for its replacement to have started.
        await sleep(1500)
        times.push(await newCapableSession(endpoint))
      }
      // Sessions opened per second: `burst` sessions, 8 at a time, each to its first tools/list.
      const burstStarted = performance.now()
      let next = 0
      await Promise.all(Array.from({ length: 8 }, async () => {
        while (next < burst) {
          next++
          await newCapableSession(endpoint)
        }
      }))
      const perSecond = burst / ((performance.now() - burstStarted) / 1000)
      rows.push({ key, name, first_tools_list_ms_p50: round(median(times), 1), first_tools_list_ms_max: round(Math.max(...times), 1), sessions_per_second: round(perSecond, 1) })
      await g.stop()
    }
    const by = Object.fromEntries(rows.map((r) => [r.key, r]))
    result.sections.capable = {
      what: `a client declaring sampling, roots and elicitation (a process of its own): initialize to its first tools/list, ${sequential} sessions one at a time (1.5 s apart), medians; then ${burst} sessions 8 at a time; each ends with DELETE`,
      rows,
      warm_vs_cold: round(by.cold.first_tools_list_ms_p50 / by.warm.first_tools_list_ms_p50)
    }
  }

  if (runs("sandbox")) {
    if (!commandExists("bwrap")) log("sandbox: bwrap is not on PATH (Debian: apt-get install -y bubblewrap); section left out")
    else {
      log("sandbox: server-everything over stdio, unsandboxed and under \"sandbox\": \"strict\"")
      // One gateway, the same server four ways: unsandboxed or strict, cold (warm_processes 0: a
      // capable session's own process started for it) or warm (one kept ready). Strict with the
      // server's code readable (node_modules, through its real path when it is a link), which is
      // what a user of a server installed there writes; working directory of its own.
      const modules = fs.realpathSync(path.join(root, "node_modules"))
      const work = path.join(dir, "sandbox-work")
      fs.mkdirSync(work, { recursive: true })
      const template = (sandbox, warm) => ({
        load_balancer: { warm_processes: warm },
        instances: [{ id: "e1", transport: "stdio", command: [process.execPath, fs.realpathSync(serverEverything), "stdio"], working_dir: work, sandbox }]
      })
      const strict = { preset: "strict", read: [modules] }
      const g = await gateway("gateway-sandbox.json", {
        gateway: { log_level: "warn" },
        templates: { plain_cold: template("off", 0), strict_cold: template(strict, 0), plain_warm: template("off", 1), strict_warm: template(strict, 1) }
      })
      const registry = await (await fetch(`${g.url}/gateway/registry`)).json()
      const sandboxOf = (t) => registry.templates?.[t]?.instances?.[0]?.sandbox
      if (sandboxOf("strict_cold")?.network !== "none" || sandboxOf("plain_cold")?.preset !== "off") {
        throw new Error(`sandbox: the templates are not what they should be: ${JSON.stringify([sandboxOf("plain_cold"), sandboxOf("strict_cold")])}`)
      }
      // Session start: a capable client's initialize to its first tools/list, alternated between
      // unsandboxed and strict (A B, then B A); a pause between sessions gives a warm template
      // time to start the replacement of the process a session took.
      const sequential = quick ? 1 : 10
      const pause = quick ? 300 : 1500
      const starts = { plain_cold: [], strict_cold: [], plain_warm: [], strict_warm: [] }
      for (const warmth of ["cold", "warm"]) {
        const pair = [`plain_${warmth}`, `strict_${warmth}`]
        // The first session of each: a warm template keeps processes ready from its first such session on.
        if (warmth === "warm") for (const t of pair) await newCapableSession(`${g.url}/mcp/${t}`)
        for (let i = 0; i < sequential; i++) {
          for (const t of i % 2 === 0 ? pair : [...pair].reverse()) {
            await sleep(pause)
            starts[t].push(await newCapableSession(`${g.url}/mcp/${t}`))
          }
        }
      }
      const startRows = Object.entries(starts).map(([key, times]) => ({
        key,
        name: `${key.startsWith("strict") ? "sandbox: strict" : "unsandboxed"}, ${key.endsWith("cold") ? "warm_processes: 0 (a cold start each)" : "warm_processes: 1"}`,
        session_start_ms_p50: round(median(times), 1),
        session_start_ms_max: round(Math.max(...times), 1)
      }))
      // tools/call latency at one connection, on a session of each (a client without capabilities:
      // the instance's shared process, sandboxed or not).
      const rows = await measureRounds([
        { key: "plain", name: "tools/call, unsandboxed", url: `${g.url}/mcp/plain_cold`, body: rpcBody, session: await initializeSession(g.url, "plain_cold"), pid: g.pid },
        { key: "strict", name: "tools/call, sandbox: strict", url: `${g.url}/mcp/strict_cold`, body: rpcBody, session: await initializeSession(g.url, "strict_cold"), pid: g.pid }
      ], { seconds: settings.latencySeconds, connections: 1 })
      const by = Object.fromEntries([...startRows, ...rows].map((r) => [r.key, r]))
      result.sections.sandbox = {
        what: `server-everything over stdio, unsandboxed and under "sandbox": "strict" (bubblewrap; node_modules readable). Session start: a client declaring sampling, roots and elicitation (a process of its own), initialize to its first tools/list, ${sequential} sessions of each, alternated, ${pause} ms apart, medians. tools/call: wrk -t1 -c1 -d${settings.latencySeconds}s on one session of each, ${settings.rounds} alternated rounds, medians`,
        start_rows: startRows,
        rows,
        ratios: {
          start_cold_strict_vs_plain: round(by.strict_cold.session_start_ms_p50 / by.plain_cold.session_start_ms_p50),
          start_warm_strict_vs_plain: round(by.strict_warm.session_start_ms_p50 / by.plain_warm.session_start_ms_p50),
          call_p50_strict_vs_plain: round(by.strict.p50_ms / by.plain.p50_ms),
          call_p99_strict_vs_plain: round(by.strict.p99_ms / by.plain.p99_ms)
        }
      }
      await g.stop()
    }
  }

  if (runs("sessions")) {
    log(`memory: ${settings.sessions} idle MCP sessions`)
    // With the heap probe (bench/heap-probe.mjs): the live heap after a full collection, besides RSS.
    const probeFile = path.join(dir, "heap-probe.json")
    process.env.HEAP_PROBE_FILE = probeFile
    const g = await gateway(
      "gateway-sessions.json",
      { gateway: { log_level: "warn", max_sessions: settings.sessions + 100, max_sessions_per_client: settings.sessions + 100 } },
      { nodeArgs: ["--expose-gc", "--import", path.join(here, "heap-probe.mjs")] }
    )
    delete process.env.HEAP_PROBE_FILE
    const liveHeap = async () => {
      fs.rmSync(probeFile, { force: true })
      process.kill(g.pid, "SIGUSR2")
      for (let i = 0; i < 200 && !fs.existsSync(probeFile); i++) await sleep(50)
      await sleep(50)
      return JSON.parse(fs.readFileSync(probeFile, "utf8")).heapUsed
    }
    await initializeSession(g.url)
    await sleep(500)
    const heapBefore = await liveHeap()
    const before = rssBytes(g.pid)
    const t0 = Date.now()
    const opened = []
    // 32 at a time: as many clients connecting at once, not one at a time.
    let failure
    try {
      for (let i = 0; i < settings.sessions; i += 32) {
        const batch = Math.min(32, settings.sessions - i)
        opened.push(...await Promise.all(Array.from({ length: batch }, () => initializeSession(g.url))))
      }
    } catch (e) {
      // (A build that holds sockets per session runs out of file descriptors: said, not fatal to the run.)
      failure = `after ${opened.length} sessions: ${e.message}`
      log(`sessions: ${failure}`)
    }
    const descriptors = fs.readdirSync(`/proc/${g.pid}/fd`).length
    const openMs = Date.now() - t0
    await sleep(2000)
    const after = rssBytes(g.pid)
    // Idle for a while longer: V8's memory reducer collects what opening the sessions left behind
    // (garbage and heap slack) once allocation has stopped for some seconds. What an operator sees
    // of a gateway holding idle sessions is this settled number.
    await sleep(quick ? 1000 : 20_000)
    const settled = rssBytes(g.pid)
    const heapAfter = await liveHeap()
    const stats = await (await fetch(`${g.url}/gateway/stats`)).json()
    result.sections.sessions = {
      what: `${settings.sessions} MCP sessions opened (initialize, 32 at a time), then idle; RSS before and after`,
      sessions: opened.length,
      sessions_reported: stats.templates?.bench?.sessions,
      open_seconds: round(openMs / 1000, 1),
      rss_mb_before: round(before / 1e6, 1),
      rss_mb_after: round(after / 1e6, 1),
      kb_per_session: round((after - before) / 1024 / opened.length, 2),
      rss_mb_settled: round(settled / 1e6, 1),
      kb_per_session_settled: round((settled - before) / 1024 / opened.length, 2),
      live_heap_mb_before: round(heapBefore / 1e6, 1),
      live_heap_mb_after: round(heapAfter / 1e6, 1),
      live_heap_kb_per_session: round((heapAfter - heapBefore) / 1024 / opened.length, 2),
      file_descriptors: descriptors,
      ...(failure === undefined ? {} : { failure })
    }
    await g.stop()
  }

  if (runs("templates")) {
    log(`scale: 1 template against ${settings.templates} templates of 3 instances`)
    const many = {}
    for (let t = 0; t < settings.templates; t++) {
      many[t === 0 ? "bench" : `t${t}`] = {
        instances: backends.map((p, i) => ({ id: `t${t}-b${i + 1}`, transport: "http", endpoint: `http://127.0.0.1:${p}/mcp` })),
        load_balancer: { strategy: "round_robin" }
      }
    }
    const small = await gateway("gateway-1-template.json", {})
    const t0 = Date.now()
    const large = await gateway("gateway-many-templates.json", { templates: many }, { untilListening: true })
    const startupMs = Date.now() - t0
    const healthAtStart = await (await fetch(`${large.url}/mcp/bench/health`)).json()
    const unhealthyAtStart = (await (await fetch(`${large.url}/gateway/stats`)).json()).health_checker
    // Measured once the bench template is healthy (a first round that failed recovers on the next probes).
    for (let i = 0; i < 120; i++) {
      const health = await (await fetch(`${large.url}/mcp/bench/health`)).json()
      if (health.healthy_instances === health.total_instances) break
      await sleep(1000)
    }
    // What the gateways do with no request (health checks of their instances: 3 against 3,000, every
    // health_check_interval), so the per-request cost can be told from it. A whole interval (the
    // default 30 s), so that the window holds a round of scheduled probes, as the rounds below do.
    const idleSeconds = quick ? 2 : 30
    const idleBefore = [cpuMicros(small.pid), cpuMicros(large.pid)]
    await sleep(idleSeconds * 1000)
    const background = [(cpuMicros(small.pid) - idleBefore[0]) / idleSeconds, (cpuMicros(large.pid) - idleBefore[1]) / idleSeconds]
    const rows = await measureRounds([
      { key: "one_template", name: "REST tools/call, 1 template", url: `${small.url}/mcp/bench/tools/call`, body: restBody, pid: small.pid },
      { key: "many_templates", name: `REST tools/call, ${settings.templates} templates × 3 instances`, url: `${large.url}/mcp/bench/tools/call`, body: restBody, pid: large.pid }
    ], settings)
    const by = Object.fromEntries(rows.map((r) => [r.key, r]))
    // CPU per request less the background's share of it (its CPU per second over the requests per second).
    by.one_template.background_cpu_percent = round(background[0] / 1e4, 1)
    by.many_templates.background_cpu_percent = round(background[1] / 1e4, 1)
    by.one_template.net_cpu_us_per_request = round(by.one_template.cpu_us_per_request - background[0] / by.one_template.rps, 0)
    by.many_templates.net_cpu_us_per_request = round(by.many_templates.cpu_us_per_request - background[1] / by.many_templates.rps, 0)
    result.sections.templates = {
      what: `start-up (process start to its "listening on" line, after the first round of health checks) and per-request cost, 1 against ${settings.templates} templates`,
      startup_seconds: round(startupMs / 1000, 2),
      bench_template_healthy_at_start: `${healthAtStart.healthy_instances} of ${healthAtStart.total_instances}`,
      health_checker_at_start: unhealthyAtStart,
      rows,
      cpu_ratio: round(by.many_templates.cpu_us_per_request / by.one_template.cpu_us_per_request),
      net_cpu_ratio: round(by.many_templates.net_cpu_us_per_request / by.one_template.net_cpu_us_per_request),
      rps_ratio: round(by.many_templates.rps / by.one_template.rps)
    }
    await small.stop()
    await large.stop()
  }

  if (runs("replicas")) {
    if (!commandExists("redis-server")) log("replicas: redis-server is not at hand (Debian: apt-get install -y redis-server); section left out")
    else {
      log("replicas: two gateways on one Redis behind nginx, against one")
      const redisPort = await freePort()
      await start("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], (o) => (o.includes("Ready to accept connections") ? true : undefined))
      // One registry (Redis) and one session key: any replica serves any session (docs/scale-out.md).
      const fleet = {
        registry: { store: "redis", url: `redis://127.0.0.1:${redisPort}`, prefix: "bench:" },
        gateway: { session_keys: ["bench-session-key-0123456789abcdef0123456789"] }
      }
      const replicaA = await gateway("gateway-replica-a.json", fleet)
      const replicaB = await gateway("gateway-replica-b.json", fleet)
      const one = await startNginx(path.join(dir, "nginx-one"), [replicaA.port])
      const two = await startNginx(path.join(dir, "nginx-two"), [replicaA.port, replicaB.port])
      // One MCP session, opened through the balancer: its requests land on both replicas.
      const sessionOne = await initializeSession(`http://127.0.0.1:${one}`)
      const sessionTwo = await initializeSession(`http://127.0.0.1:${two}`)
      const rows = await measureRounds([
        { key: "one_rest", name: "nginx → 1 replica, REST tools/call", url: `http://127.0.0.1:${one}/mcp/bench/tools/call`, body: restBody },
        { key: "two_rest", name: "nginx → 2 replicas, REST tools/call", url: `http://127.0.0.1:${two}/mcp/bench/tools/call`, body: restBody },
        { key: "one_mcp", name: "nginx → 1 replica, MCP endpoint (one session)", url: `http://127.0.0.1:${one}/mcp/bench`, body: rpcBody, session: sessionOne },
        { key: "two_mcp", name: "nginx → 2 replicas, MCP endpoint (one session on both)", url: `http://127.0.0.1:${two}/mcp/bench`, body: rpcBody, session: sessionTwo }
      ], settings)
      const by = Object.fromEntries(rows.map((r) => [r.key, r]))
      result.sections.replicas = {
        what: "two gateways sharing one Redis (registry.store: redis) and one session key, behind nginx (1 worker, round robin), against one gateway behind the same nginx",
        rows,
        ratios: { rest_two_vs_one: round(by.two_rest.rps / by.one_rest.rps), mcp_two_vs_one: round(by.two_mcp.rps / by.one_mcp.rps) }
      }
      await replicaA.stop()
      await replicaB.stop()
    }
  }

  if (runs("cluster") && !quick) {
    log("what a worker per core would give: the REST face on node:cluster, 1 against 2 workers")
    const rows = []
    const clustered = {}
    for (const workers of [1, 2]) {
      const port = await freePort()
      const file = path.join(dir, `gateway-cluster-${workers}.json`)
      fs.writeFileSync(file, JSON.stringify({ gateway: { log_level: "info" }, templates: { bench: { instances: backends.map((p, i) => ({ id: `b${i + 1}`, transport: "http", endpoint: `http://127.0.0.1:${p}/mcp` })), load_balancer: { strategy: "round_robin" } } } }))
      const { child } = await start(process.execPath, [path.join(here, "cluster.mjs"), String(workers), gatewayMain, "start", "--config", file, "--port", String(port)], (o) => (o.includes("workers listening") ? true : undefined))
      clustered[workers] = { child, url: `http://127.0.0.1:${port}/mcp/bench/tools/call` }
    }
    rows.push(...await measureRounds([
      { key: "cluster_1", name: "gateway REST tools/call, node:cluster, 1 worker", url: clustered[1].url, body: restBody },
      { key: "cluster_2", name: "gateway REST tools/call, node:cluster, 2 workers", url: clustered[2].url, body: restBody }
    ], settings))
    for (const c of Object.values(clustered)) await stop(c.child)
    const by = Object.fromEntries(rows.map((r) => [r.key, r]))
    result.sections.cluster = { what: "REST tools/call through node:cluster (bench/cluster.mjs), workers sharing the port; no MCP sessions (they live in one worker)", rows, ratio: round(by.cluster_2.rps / by.cluster_1.rps) }
  }

  if (settings.soakMinutes > 0) {
    log(`soak: ${settings.soakMinutes} minutes of MCP-endpoint load, RSS every 30 s`)
    const g = await gateway("gateway-soak.json", {})
    const session = await initializeSession(g.url)
    const samples = []
    const end = Date.now() + settings.soakMinutes * 60_000
    while (Date.now() < end) {
      const r = wrk(`${g.url}/mcp/bench`, rpcBody, { seconds: 30, connections: settings.connections, session })
      samples.push({ minute: round((settings.soakMinutes * 60_000 - (end - Date.now())) / 60_000, 1), rps: round(r.rps, 0), rss_mb: round(rssBytes(g.pid) / 1e6, 1), errors: r.errors })
      log(`soak: ${JSON.stringify(samples.at(-1))}`)
    }
    const half = samples.slice(Math.floor(samples.length / 2))
    result.sections.soak = {
      what: `${settings.soakMinutes} minutes of wrk -c${settings.connections} on the MCP endpoint, RSS sampled every 30 s`,
      samples,
      rss_mb_first_half_max: Math.max(...samples.slice(0, Math.floor(samples.length / 2)).map((s) => s.rss_mb)),
      rss_mb_second_half_max: Math.max(...half.map((s) => s.rss_mb))
    }
    await g.stop()
  }

  for (const g of gateways) await g.stop()
  result.seconds = round((Date.now() - started) / 1000, 1)
  const report = renderMarkdown(result)
  console.log(report)
  const out = path.resolve(arg("out", here))
  fs.mkdirSync(out, { recursive: true })
  fs.writeFileSync(path.join(out, "last-run.md"), report + "\n")
  fs.writeFileSync(path.join(out, "last-run.json"), JSON.stringify(result, null, 2) + "\n")
}

const table = (rows, columns) => [
  `| ${columns.map((c) => c[0]).join(" | ")} |`,
  `| ${columns.map((c, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`,
  ...rows.map((r) => `| ${columns.map((c) => (r[c[1]] === undefined ? "" : String(r[c[1]]))).join(" | ")} |`)
]

const renderMarkdown = (r) => {
  const m = r.machine
  const lines = [
    `${r.date.slice(0, 10)}, ${m.cores} cores (${m.cpu}), ${m.memory_gb} GiB, node ${m.node}, load average at start ${m.load_average_at_start.join(" ")}${r.settings.quick ? ", QUICK (numbers mean nothing)" : ""}`,
    ""
  ]
  const rowsTable = (rows) =>
    table(rows, [["system", "name"], ["req/s", "rps"], ["p50 ms", "p50_ms"], ["p99 ms", "p99_ms"], ["CPU µs/req", "cpu_us_per_request"], ["RSS MB", "rss_mb"], ["errors", "errors"], ["rounds req/s", "rounds"]])
  const s = r.sections
  if (s.throughput) lines.push(`### Throughput (${s.throughput.what})`, "", ...rowsTable(s.throughput.rows), "", "ratios: " + JSON.stringify(s.throughput.ratios), "")
  if (s.latency) lines.push(`### Latency at one connection (${s.latency.what})`, "", ...rowsTable(s.latency.rows), "", "added p50 over direct (ms): " + JSON.stringify(s.latency.added_p50_ms), "")
  if (s.everything) lines.push(`### Against server-everything over HTTP, one connection (${s.everything.what})`, "", ...rowsTable(s.everything.rows), "", "p50 ratios: " + JSON.stringify(s.everything.ratios), "")
  if (s.pool) {
    lines.push(`### Client pool (${s.pool.what})`, "", ...rowsTable(s.pool.rows), "")
    if (s.pool.undici_vs_agent !== undefined) lines.push(`undici / node:http: ${s.pool.undici_vs_agent}x req/s, ${s.pool.undici_vs_agent_cpu}x CPU per request`, "")
    lines.push(`Http1Client / node:http: ${s.pool.http1_vs_agent}x req/s, ${s.pool.http1_vs_agent_cpu}x CPU per request`, "")
  }
  if (s.stdio) lines.push(`### stdio (${s.stdio.what})`, "", ...rowsTable(s.stdio.rows), "", "ratios: " + JSON.stringify(s.stdio.ratios), "")
  if (s.capable) {
    lines.push(`### New capable sessions (${s.capable.what})`, "", ...table(s.capable.rows, [["system", "name"], ["first tools/list p50 ms", "first_tools_list_ms_p50"], ["max ms", "first_tools_list_ms_max"], ["sessions/s", "sessions_per_second"]]), "", `cold / warm: ${s.capable.warm_vs_cold}x`, "")
  }
  if (s.sandbox) {
    lines.push(
      `### Sandboxed stdio servers (${s.sandbox.what})`,
      "",
      ...table(s.sandbox.start_rows, [["session start", "name"], ["initialize → first tools/list p50 ms", "session_start_ms_p50"], ["max ms", "session_start_ms_max"]]),
      "",
      ...rowsTable(s.sandbox.rows),
      "",
      "strict / unsandboxed: " + JSON.stringify(s.sandbox.ratios),
      ""
    )
  }
  if (s.sessions) {
    const x = s.sessions
    lines.push(`### Idle sessions (${x.what})`, "", `${x.sessions} sessions opened in ${x.open_seconds} s; RSS ${x.rss_mb_before} → ${x.rss_mb_after} MB: ${x.kb_per_session} KB per session (2 s after the last opened); ${x.rss_mb_settled} MB, ${x.kb_per_session_settled} KB per session once settled (20 s idle); live heap (after a full collection) ${x.live_heap_mb_before} → ${x.live_heap_mb_after} MB: ${x.live_heap_kb_per_session} KB per session; ${x.file_descriptors} file descriptors open${x.failure ? `; FAILED ${x.failure}` : ""}`, "")
  }
  if (s.templates) {
    const x = s.templates
    lines.push(`### Templates (${x.what})`, "", `start-up with ${r.settings.templates} templates: ${x.startup_seconds} s (bench template healthy at start: ${x.bench_template_healthy_at_start}; probes ${JSON.stringify(x.health_checker_at_start)})`, "", ...table(x.rows, [["system", "name"], ["req/s", "rps"], ["p99 ms", "p99_ms"], ["CPU µs/req", "cpu_us_per_request"], ["idle CPU %", "background_cpu_percent"], ["net CPU µs/req", "net_cpu_us_per_request"], ["RSS MB", "rss_mb"], ["errors", "errors"]]), "", `CPU per request ratio: ${x.cpu_ratio} (net of the idle CPU: ${x.net_cpu_ratio}); req/s ratio: ${x.rps_ratio}`, "")
  }
  if (s.replicas) lines.push(`### Replicas (${s.replicas.what})`, "", ...rowsTable(s.replicas.rows), "", "ratios: " + JSON.stringify(s.replicas.ratios), "")
  if (s.cluster) lines.push(`### node:cluster (${s.cluster.what})`, "", ...rowsTable(s.cluster.rows), "", `2 workers / 1 worker: ${s.cluster.ratio}x`, "")
  if (s.soak) lines.push(`### Soak (${s.soak.what})`, "", `RSS max, first half: ${s.soak.rss_mb_first_half_max} MB; second half: ${s.soak.rss_mb_second_half_max} MB`, "")
  lines.push(`(${r.seconds} s in all)`)
  return lines.join("\n")
}

main().then(
  () => {
    stopAll()
    process.exit(0)
  },
  (e) => {
    console.error(`bench: ${e.stack ?? e.message}`)
    stopAll()
    process.exit(1)
  }
)
