// The bare Node proxy of node-proxy.mjs with undici's Pool (one per backend) in place of
// node:http's keep-alive Agent: the bench's measure of whether undici's pool would beat the
// agent the gateway uses. Bodies streamed both ways, untouched, as in node-proxy.mjs.
//
//   node bench/undici-proxy.mjs UNDICI_DIR PORT BACKEND_PORT...
import * as http from "node:http"
import { createRequire } from "node:module"
import * as path from "node:path"

const [undiciDir, port, ...backends] = process.argv.slice(2)
const { Pool } = createRequire(path.join(undiciDir, "index.js"))("undici")
const pools = backends.map((p) => new Pool(`http://127.0.0.1:${p}`, { connections: 256 }))
/** Hop-by-hop headers, which undici sets itself (and refuses from the caller). */
const HOP = new Set(["connection", "keep-alive", "transfer-encoding", "host", "upgrade"])
let next = 0

const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  const pool = pools[next++ % pools.length]
  const headers = {}
  for (const name in req.headers) if (!HOP.has(name)) headers[name] = req.headers[name]
  pool.request({ path: req.url, method: req.method, headers, body: req }).then(
    ({ statusCode, headers: answerHeaders, body }) => {
      const out = {}
      for (const name in answerHeaders) if (!HOP.has(name)) out[name] = answerHeaders[name]
      res.writeHead(statusCode, out)
      body.pipe(res)
    },
    () => res.writeHead(502).end()
  )
})
server.listen(Number(port), "127.0.0.1", () => process.stdout.write(`${server.address().port}\n`))
process.on("SIGTERM", () => server.close(() => process.exit(0)))
