// The bare Node proxy of node-proxy.mjs with the gateway's own HTTP/1.1 client
// (src/transport/Http1Client.ts, bundled as dist/http1-client.js) in place of node:http's
// keep-alive Agent: the pool section's third system, next to the Agent and undici's Pool. Like
// the gateway, it reads the request and the answer whole (the gateway must parse both).
//
//   node bench/http1-proxy.mjs PORT BACKEND_PORT...
import * as http from "node:http"
import { Http1Pool } from "../dist/http1-client.js"

const [port, ...backends] = process.argv.slice(2)
const pools = backends.map((p) => new Http1Pool(new URL(`http://127.0.0.1:${p}/`)))
/** Hop-by-hop headers, and the length the client sets itself. */
const HOP = new Set(["connection", "keep-alive", "transfer-encoding", "host", "upgrade", "content-length"])
let next = 0

const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  const pool = pools[next++ % pools.length]
  const headers = {}
  for (const name in req.headers) if (!HOP.has(name)) headers[name] = req.headers[name]
  const chunks = []
  req.on("data", (c) => chunks.push(c))
  req.on("end", () => {
    let head
    let text = ""
    pool.request(req.method, req.url, headers, chunks.length === 0 ? undefined : Buffer.concat(chunks).toString("utf8"), {
      onHead: (h) => (head = h),
      onData: (t) => (text += t),
      onEnd: () => {
        const out = {}
        for (const name in head.headers) if (!HOP.has(name)) out[name] = head.headers[name]
        res.writeHead(head.status, out)
        res.end(text)
      },
      onError: () => res.writeHead(502).end()
    })
  })
})
server.listen(Number(port), "127.0.0.1", () => process.stdout.write(`${server.address().port}\n`))
process.on("SIGTERM", () => server.close(() => process.exit(0)))
