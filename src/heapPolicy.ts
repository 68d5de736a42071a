import { PerformanceObserver } from "node:perf_hooks"
import * as v8 from "node:v8"

/**
 * V8 heap settings, made before any of the gateway's code is loaded (main.ts imports this
 * first). Flags set at run time rather than on node's command line, so that `node dist/main.js`
 * (the documented way to run the gateway) gets them; each is one V8 reads as it decides, not
 * once at start-up.
 */

/**
 * Allocation-site pretenuring off.
 *
 * Why: V8 allocates objects of an allocation site directly in the old generation once most of
 * them survive a young collection. With many instances (from ~15 templates on), start-up and
 * the first probe rounds made V8 take request-path sites (an answer's handler object, an
 * exchange, node:http's header records) for long-lived; each such object, dead once its request
 * ends, then kept its request's young objects alive until the next full collection. The result,
 * measured with 1,000 templates: 7.7 KB promoted per request instead of 0.1, young collections
 * of 7-8 ms instead of under 1, 1.4x the CPU per request of a one-template gateway and 450 MB
 * of RSS; with the flag, 1.08x and 360 MB, and nothing changes for a small gateway. The
 * gateway's request objects all die young, which is what V8's default (no pretenuring) assumes.
 */
v8.setFlagsFromString("--no-allocation-site-pretenuring")

/**
 * The young generation held at two 8 MiB semi-spaces (16 MiB) instead of V8's 64-bit default
 * maximum of two 16 MiB ones.
 *
 * Why: under sustained load V8 keeps doubling the semi-spaces up to their maximum; the gateway's
 * per-request garbage dies young either way, so the second doubling buys nothing measurable
 * (same throughput and CPU per request in the bench, a lower p99) and costs 16 MiB of RSS, most
 * of the difference between an idle and a loaded gateway. `--max-semi-space-size` would say it
 * directly, but V8 reads that flag only when it creates the heap, before any script runs. What
 * it reads at each growth is `--semi-space-growth-factor` (the new size is the old times the
 * factor, within the maximum), so after every collection the factor is set to 1 (no growth)
 * once the young generation has reached the cap, and back to V8's default of 2 when V8 has
 * shrunk it below (it does when allocation slows down). A gc observer's callback runs soon after
 * each collection, and V8 grows the young generation only after as much as its size has survived
 * collections since the last growth, so it cannot grow twice between two callbacks under the
 * gateway's load.
 *
 * A young-generation flag of the user's own (`node --max-semi-space-size=…`, or in NODE_OPTIONS)
 * wins: the policy then stays out.
 */
const YOUNG_GENERATION_CAP = 16 * 1024 * 1024
const V8_DEFAULT_GROWTH_FACTOR = 2

const userSizedYoungGeneration = [...process.execArgv, ...(process.env["NODE_OPTIONS"] ?? "").split(/\s+/)].some((a) =>
  /^--(max|min)[-_]semi[-_]space[-_]size|^--semi[-_]space[-_]growth[-_]factor/.test(a)
)

const youngGenerationSize = (): number => {
  for (const space of v8.getHeapSpaceStatistics()) if (space.space_name === "new_space") return space.space_size
  return 0
}

if (!userSizedYoungGeneration) {
  let capped = false
  const holdAtCap = () => {
    const atCap = youngGenerationSize() >= YOUNG_GENERATION_CAP
    if (atCap === capped) return
    capped = atCap
    v8.setFlagsFromString(`--semi-space-growth-factor=${atCap ? 1 : V8_DEFAULT_GROWTH_FACTOR}`)
  }
  // The observer holds nothing open: the process still exits when its work is done.
  new PerformanceObserver(holdAtCap).observe({ entryTypes: ["gc"] })
  holdAtCap()
}

/**
 * The old generation grown by half its live size between full collections, not V8's dynamic
 * factor (up to 4×).
 *
 * Why: a large message (a 7 MB file a tool reads) goes straight to the old generation, and each
 * one passing through leaves three or four copies of its size behind as garbage (the stdout
 * line, the parsed value, the answer's text). With V8's factor, 60 clients fetching 7 MB answers
 * took the gateway to 500 MB of RSS around a live heap of 100 MB, only for garbage waiting for
 * the next full collection; grown by half, the peak stayed under 300 MB. The request path's
 * garbage dies young, so full collections stay as rare as before under ordinary load.
 *
 * A heap-growing flag of the user's own wins.
 */
const userSizedOldGeneration = [...process.execArgv, ...(process.env["NODE_OPTIONS"] ?? "").split(/\s+/)].some((a) =>
  /^--heap[-_]growing[-_]percent/.test(a)
)
if (!userSizedOldGeneration) v8.setFlagsFromString("--heap-growing-percent=50")
