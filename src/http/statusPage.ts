import type * as http from "node:http"

/**
 * `GET /gateway/ui`: a read-only status page. One static document (HTML, CSS and script inline,
 * nothing from a CDN) that polls `/gateway/stats` every second and redraws: templates and their
 * instances, health, breaker, ejection, process, sessions, request rate, error rate, latency,
 * and each template's tool integrity (pins, changes with their diffs).
 * The document holds no data, so it is served without a credential; the stats it polls need
 * `gateway:read`, and with auth on the page asks for a key or token (kept in sessionStorage).
 */
const page = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mcp-gateway status</title>
<style>
  :root { --ok: #1a7f37; --warn: #b35900; --bad: #c62828; --dim: #6e7781; --line: #d8dee4; --bg: #f6f8fa; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; background: var(--bg); }
  header { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: baseline; padding: .8rem 1rem; background: #fff; border-bottom: 1px solid var(--line); }
  header h1 { font-size: 1.1rem; margin: 0; }
  header .meta { color: var(--dim); }
  /* minmax(0, 1fr): a wide table scrolls inside its section instead of widening the page (phones). */
  main, #templates { display: grid; gap: 1rem; grid-template-columns: minmax(0, 1fr); }
  main { padding: 1rem; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
  section h2 { font-size: 1rem; margin: 0; padding: .6rem .8rem; border-bottom: 1px solid var(--line); display: flex; flex-wrap: wrap; gap: .3rem 1rem; }
  section h2 small { font-weight: normal; color: var(--dim); }
  .table { overflow-x: auto; }
  table { border-collapse: collapse; width: 100%; min-width: 720px; }
  th, td { text-align: left; padding: .45rem .8rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
  th { font-weight: 600; color: var(--dim); font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  tr:last-child td { border-bottom: none; }
  th:first-child, td:first-child { position: sticky; left: 0; background: #fff; }
  .badge { display: inline-block; padding: .05rem .5rem; border-radius: 1rem; font-size: .8rem; font-weight: 600; color: #fff; background: var(--dim); }
  .healthy, .closed, .running { background: var(--ok); }
  .unhealthy, .half_open, .restarting, .starting, .ejected { background: var(--warn); }
  .failed, .open, .stopped, .blocked { background: var(--bad); }
  .warned { background: var(--warn); }
  .integrity { padding: .5rem .8rem; border-top: 1px solid var(--line); }
  .integrity pre { margin: .3rem 0 0; padding: .5rem; background: var(--bg); border-radius: 6px; overflow-x: auto; font-size: .8rem; }
  #state { color: var(--dim); }
  #state.error { color: var(--bad); font-weight: 600; }
  form { display: none; gap: .5rem; align-items: center; padding: 1rem; background: #fff; border: 1px solid var(--line); border-radius: 8px; }
  form.shown { display: flex; flex-wrap: wrap; }
  input { flex: 1 1 16rem; padding: .4rem .6rem; font: inherit; border: 1px solid var(--line); border-radius: 6px; }
  button { padding: .4rem .9rem; font: inherit; border-radius: 6px; border: 1px solid var(--line); background: #f3f4f6; cursor: pointer; }
  @media (max-width: 600px) { main { padding: .5rem; } main, #templates { gap: .5rem; } th, td { padding: .4rem .5rem; } }
</style>
</head>
<body>
<header>
  <h1>mcp-gateway</h1>
  <span class="meta" id="summary">…</span>
  <span id="state">connecting…</span>
</header>
<main>
  <form id="login">
    <label for="credential">This gateway requires a credential with <code>gateway:read</code>:</label>
    <input id="credential" type="password" autocomplete="off" placeholder="API key or token">
    <button type="submit">Show</button>
  </form>
  <div id="templates"></div>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const previous = new Map();
let lastAt = 0;
const text = (v) => String(v === null || v === undefined ? "–" : v).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
const badge = (cls, label) => '<span class="badge ' + text(cls) + '">' + text(label) + "</span>";
const ms = (v) => (v === null || v === undefined ? "–" : v < 10 ? v.toFixed(2) : v.toFixed(0));
const count = (n, noun) => text(n) + " " + noun + (n === 1 ? "" : "s");
const pct = (v) => (v * 100).toFixed(v > 0 && v < 0.01 ? 2 : 0) + "%";

async function poll() {
  const credential = sessionStorage.getItem("mcp-gateway-credential");
  try {
    const response = await fetch("/gateway/stats", { headers: credential ? { authorization: "Bearer " + credential } : {} });
    if (response.status === 401 || response.status === 403) {
      $("login").classList.add("shown");
      $("state").textContent = response.status === 401 ? "a credential is needed" : "this credential may not read the gateway's state";
      $("state").className = "error";
      return;
    }
    if (!response.ok) throw new Error("HTTP " + response.status);
    $("login").classList.remove("shown");
    render(await response.json());
    $("state").textContent = "live · updated " + new Date().toLocaleTimeString();
    $("state").className = "";
  } catch (e) {
    $("state").textContent = "cannot reach the gateway (" + e.message + ")";
    $("state").className = "error";
  }
}

/** A template's tool integrity: its pins, and each change with what the policy made of it and its diff. */
function integrity(ti) {
  if (!ti || ti.pin === "off") return "";
  const changes = ti.changes.map((c) =>
    "<details><summary>" + badge(c.action, c.action) + " " + text(c.kind.replace("_", " ") + " " + c.name + " " + c.change) + "</summary><pre>" + text(c.diff) + "</pre></details>"
  ).join("");
  return '<div class="integrity" data-integrity="' + text(ti.changes.length) + '"><small>tool integrity: ' + count(ti.pins, "pinned definition") + " · on change: " + text(ti.on_change) +
    (ti.changes.length === 0 ? " · no changes" : "") + "</small>" + changes + "</div>";
}

function render(stats) {
  const now = Date.now();
  const seconds = lastAt === 0 ? 0 : (now - lastAt) / 1000;
  lastAt = now;
  const total = stats.requests;
  $("summary").textContent = count(total.requests, "request") + " · " + pct(total.error_rate) + " errors · p95 " + ms(total.latency_ms.p95) +
    " ms · " + count(stats.sessions, "MCP session");
  const sections = Object.entries(stats.templates).filter(([, t]) => t.instances !== undefined).map(([name, t]) => {
    const rows = Object.entries(t.instances).map(([id, i]) => {
      const key = name + "/" + id;
      const before = previous.get(key);
      previous.set(key, i.requests);
      const rate = seconds > 0 && before !== undefined ? ((i.requests - before) / seconds).toFixed(1) : "–";
      return '<tr data-instance="' + text(key) + '" data-status="' + text(i.status) + '" data-restarts="' + text(i.restarts ?? 0) + '">' +
        "<td>" + text(id) + "</td>" +
        "<td>" + badge(i.status, i.status) + (i.ejected ? " " + badge("ejected", "ejected") : "") + "</td>" +
        "<td>" + badge(i.circuit_breaker, i.circuit_breaker) + "</td>" +
        "<td>" + (i.process ? badge(i.process, i.process) + (i.restarts > 0 ? " <small>" + count(i.restarts, "restart") + "</small>" : "") : "–") + "</td>" +
        '<td class="num">' + text(i.active_requests) + "</td>" +
        '<td class="num">' + text(rate) + "</td>" +
        '<td class="num">' + text(i.requests) + "</td>" +
        '<td class="num">' + pct(i.error_rate) + "</td>" +
        '<td class="num">' + ms(i.latency_ms.p50) + " / " + ms(i.latency_ms.p95) + "</td>" +
        '<td class="num">' + pct(i.share) + " / " + pct(i.weight_share) + "</td>" +
        "</tr>";
    }).join("");
    return '<section data-template="' + text(name) + '"><h2>' + text(name) +
      " <small>" + text(t.strategy) + " · " + count(t.sessions, "session") + " · " + count(t.requests, "request") + " · " + pct(t.error_rate) + " errors</small></h2>" +
      '<div class="table"><table><thead><tr><th>instance</th><th>health</th><th>breaker</th><th>process</th><th>in flight</th>' +
      "<th>req/s</th><th>requests</th><th>errors</th><th>p50 / p95 ms</th><th>share / weight</th></tr></thead><tbody>" +
      rows + "</tbody></table></div>" + integrity(t.tool_integrity) + "</section>";
  });
  $("templates").innerHTML = sections.join("") || "<p>No templates.</p>";
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("mcp-gateway-credential", $("credential").value.trim());
  $("credential").value = "";
  poll();
});
poll();
setInterval(poll, 1000);
</script>
</body>
</html>
`

const body = Buffer.from(page, "utf8")

export const statusPage = (res: http.ServerResponse) => {
  res.writeHead(200, {
    "content-type": "text/html; charset=utf-8",
    "content-length": body.length,
    "cache-control": "no-cache",
    // Everything is inline and it only talks to this gateway; it is never framed.
    "content-security-policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
    "x-frame-options": "DENY"
  })
  res.end(body)
}
