/**
 * Splits a byte stream into lines (stdio MCP framing is one JSON message per line).
 * Keeps the unfinished tail between chunks; accepts \n and \r\n.
 */
export const makeLineSplitter = (onLine: (line: string) => void) => {
  let buffer = ""
  return (chunk: string) => {
    buffer += chunk
    let start = 0
    let nl: number
    while ((nl = buffer.indexOf("\n", start)) !== -1) {
      const end = nl > start && buffer.charCodeAt(nl - 1) === 13 ? nl - 1 : nl
      const line = buffer.slice(start, end)
      start = nl + 1
      if (line.length > 0) onLine(line)
    }
    buffer = start === 0 ? buffer : buffer.slice(start)
  }
}
