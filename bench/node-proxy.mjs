// The bare Node proxy the gateway is held against: node:http, a keep-alive agent, round robin
// over the backends, bodies piped through untouched. No health checks, no failover.
import * as http from "node:http"

const [port, ...backends] = process.argv.slice(2).map(Number)
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 })
let next = 0

const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  const backend = backends[next++ % backends.length]
  const upstream = http.request(
    { host: "127.0.0.1", port: backend, path: req.url, method: req.method, headers: req.headers, agent },
    (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(res)
    }
  )
  upstream.on("error", () => res.writeHead(502).end())
  req.pipe(upstream)
})
server.listen(port, "127.0.0.1", () => process.stdout.write(`${server.address().port}\n`))
process.on("SIGTERM", () => server.close(() => process.exit(0)))
