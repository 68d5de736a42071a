/**
 * Splits a text stream into lines (stdio MCP framing is one JSON message per line); accepts \n
 * and \r\n. A line longer than `maxLineLength` characters is not kept: its pieces are dropped
 * as they arrive and `onOversized` hears how long it was once it ends, so a child that writes a
 * 50 MB line costs the gateway no more than `maxLineLength` of memory. Each chunk is scanned
 * once (never the buffered part again), so a long line costs linear time.
 */
export const makeLineSplitter = (
  onLine: (line: string) => void,
  options: { readonly maxLineLength: number; readonly onOversized: (length: number) => void } = {
    maxLineLength: Infinity,
    onOversized: () => {}
  }
) => {
  let pieces: Array<string> = []
  let buffered = 0
  /** Inside an oversized line: its length so far (-1 when not). */
  let skipped = -1

  const emit = (line: string) => {
    if (line.charCodeAt(line.length - 1) === 13) line = line.slice(0, -1)
    if (line.length > 0) onLine(line)
  }

  return (chunk: string) => {
    let start = 0
    let nl: number
    while ((nl = chunk.indexOf("\n", start)) !== -1) {
      const piece = chunk.slice(start, nl)
      start = nl + 1
      if (skipped >= 0) {
        options.onOversized(skipped + piece.length)
        skipped = -1
      } else if (buffered + piece.length > options.maxLineLength) {
        options.onOversized(buffered + piece.length)
        pieces = []
        buffered = 0
      } else if (pieces.length === 0) {
        emit(piece)
      } else {
        pieces.push(piece)
        const line = pieces.join("")
        pieces = []
        buffered = 0
        emit(line)
      }
    }
    if (start === chunk.length) return
    const rest = start === 0 ? chunk : chunk.slice(start)
    if (skipped >= 0) {
      skipped += rest.length
    } else if (buffered + rest.length > options.maxLineLength) {
      skipped = buffered + rest.length
      pieces = []
      buffered = 0
    } else {
      pieces.push(rest)
      buffered += rest.length
    }
  }
}

/**
 * A log line that may repeat without end (a child flooding stdout with non-JSON, or stderr):
 * at most `burst` lines per `everyMs`; how many were left out is said at the end of the window,
 * so a flood costs neither memory nor a log line (and a fiber) per message.
 */
export const throttled = <A>(
  describe: (value: A) => string,
  log: (message: string) => void,
  options: { readonly everyMs: number; readonly burst: number } = { everyMs: 5000, burst: 5 }
) => {
  let windowStart = -Infinity
  let inWindow = 0
  let suppressed = 0
  const report = () => {
    if (suppressed > 0) log(`${suppressed} more like it were not logged`)
    suppressed = 0
  }
  return (value: A) => {
    // wall clock: a log line's rate limit (no state of the gateway's), on a server's stderr.
    const now = Date.now()
    if (now - windowStart >= options.everyMs) {
      windowStart = now
      inWindow = 0
    }
    if (inWindow < options.burst) {
      inWindow++
      return log(describe(value))
    }
    // raw timer: see above; unref'd, a pending count must not hold the process up.
    if (suppressed++ === 0) setTimeout(report, options.everyMs - (now - windowStart)).unref()
  }
}
