// Preloaded into a gateway the bench measures (node --expose-gc --import bench/heap-probe.mjs):
// on SIGUSR2 it collects garbage (twice: what the first frees may hold more) and writes
// process.memoryUsage() to the file named by HEAP_PROBE_FILE. The bench uses it to tell what
// idle sessions keep alive (the live heap) from what the process holds (RSS, which V8's heap
// policy keeps well above the live heap after a burst of allocation).
import * as fs from "node:fs"

process.on("SIGUSR2", () => {
  globalThis.gc?.()
  globalThis.gc?.()
  fs.writeFileSync(process.env.HEAP_PROBE_FILE ?? "heap-probe.json", JSON.stringify(process.memoryUsage()))
})
