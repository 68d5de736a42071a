// An OTLP/HTTP receiver that accepts and drops spans, so the bench can measure the gateway with
// tracing on (the export, not a collector, is what is measured). Prints its port, then the
// number of spans received when it is stopped.
import * as http from "node:http"

let spans = 0
const server = http.createServer((req, res) => {
  const chunks = []
  req.on("data", (c) => chunks.push(c))
  req.on("end", () => {
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8"))
      for (const r of body.resourceSpans ?? []) for (const s of r.scopeSpans ?? []) spans += s.spans?.length ?? 0
    } catch {
      // Not JSON: still answered, the gateway's exporter is not what is under test.
    }
    res.writeHead(200, { "content-type": "application/json" }).end("{}")
  })
})
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => process.stdout.write(`${server.address().port}\n`))
process.on("SIGTERM", () => {
  process.stderr.write(`otlp-sink: ${spans} spans received\n`)
  process.exit(0)
})
