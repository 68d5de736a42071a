// Runs the gateway as `workers` node:cluster workers sharing one listening port (the primary
// hands connections out round robin), to measure what a worker per core would give. A bench
// experiment, not a way to deploy: each worker has its own sessions, health checks, breakers
// and rate limits, so an MCP session opened on one worker is unknown to the others.
//
//   node bench/cluster.mjs WORKERS path/to/dist/main.js start --config FILE --port PORT
import cluster from "node:cluster"
import * as path from "node:path"
import { pathToFileURL } from "node:url"

const [workers, main, ...args] = process.argv.slice(2)

if (cluster.isPrimary) {
  let listening = 0
  for (let i = 0; i < Number(workers); i++) cluster.fork()
  cluster.on("listening", () => {
    if (++listening === Number(workers)) process.stderr.write(`${workers} workers listening\n`)
  })
  const stopWorkers = () => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill("SIGTERM")
    setTimeout(() => process.exit(0), 3000).unref()
    cluster.on("exit", () => {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0)
    })
  }
  process.on("SIGTERM", stopWorkers)
  process.on("SIGINT", stopWorkers)
} else {
  process.argv = [process.argv[0], path.resolve(main), ...args]
  await import(pathToFileURL(path.resolve(main)).href)
}
