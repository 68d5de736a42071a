/** One Server-Sent Event, as the WHATWG spec assembles it. */
export interface SseEvent {
  readonly event: string
  readonly data: string
  readonly id: string | undefined
  readonly retry: number | undefined
}

/** The largest event the gateway assembles (16 Mi characters); a larger one is dropped. */
export const MAX_EVENT_LENGTH = 16 * 1024 * 1024

/**
 * An incremental SSE parser: feed it decoded text as it arrives, it calls `onEvent` for every
 * complete event (blank-line terminated). Comments and events without data are skipped. Lines
 * end at \n, \r\n or \r. Each chunk is scanned once; an event larger than `maxEventLength` is
 * dropped (`onOversized`) instead of buffered, so a server gone wrong cannot exhaust memory.
 */
export const makeSseParser = (
  onEvent: (event: SseEvent) => void,
  options: { readonly maxEventLength?: number; readonly onOversized?: () => void } = {}
) => {
  const max = options.maxEventLength ?? MAX_EVENT_LENGTH
  let pending = ""
  let size = 0
  let oversized = false
  let afterCR = false
  let data: Array<string> = []
  let event = ""
  let id: string | undefined
  let retry: number | undefined

  const dispatch = () => {
    if (oversized) options.onOversized?.()
    else if (data.length > 0) onEvent({ event: event || "message", data: data.join("\n"), id, retry })
    data = []
    event = ""
    retry = undefined
    size = 0
    oversized = false
  }

  const line = (text: string) => {
    if (text.startsWith(":")) return
    const colon = text.indexOf(":")
    const field = colon === -1 ? text : text.slice(0, colon)
    let value = colon === -1 ? "" : text.slice(colon + 1)
    if (value.startsWith(" ")) value = value.slice(1)
    switch (field) {
      case "data":
        data.push(value)
        break
      case "event":
        event = value
        break
      case "id":
        if (!value.includes("\0")) id = value
        break
      case "retry":
        if (/^\d+$/.test(value)) retry = Number(value)
        break
    }
  }

  return (chunk: string) => {
    let start = 0
    // The \n of a \r\n split between two chunks.
    if (afterCR && chunk.charCodeAt(0) === 10) start = 1
    afterCR = false
    for (let i = start; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i)
      if (c !== 10 && c !== 13) continue
      const piece = chunk.slice(start, i)
      size += piece.length
      if (size > max) oversized = true
      if (pending === "" && piece === "") dispatch()
      else if (!oversized) line(pending + piece)
      pending = ""
      if (c === 13) {
        if (i + 1 < chunk.length) {
          if (chunk.charCodeAt(i + 1) === 10) i++
        } else {
          afterCR = true
        }
      }
      start = i + 1
    }
    if (start < chunk.length) {
      const rest = chunk.slice(start)
      size += rest.length
      if (size > max) {
        oversized = true
        pending = ""
      } else {
        pending += rest
      }
    }
  }
}
