/** One Server-Sent Event, as the WHATWG spec assembles it. */
export interface SseEvent {
  readonly event: string
  readonly data: string
  readonly id: string | undefined
  readonly retry: number | undefined
}

/**
 * An incremental SSE parser: feed it decoded text as it arrives, it calls `onEvent` for every
 * complete event (blank-line terminated). Comments and events without data are skipped.
 */
export const makeSseParser = (onEvent: (event: SseEvent) => void) => {
  let buffer = ""
  let data: Array<string> = []
  let event = ""
  let id: string | undefined
  let retry: number | undefined

  const dispatch = () => {
    if (data.length > 0) onEvent({ event: event || "message", data: data.join("\n"), id, retry })
    data = []
    event = ""
    retry = undefined
  }

  const line = (text: string) => {
    if (text === "") return dispatch()
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
    buffer += chunk
    let start = 0
    for (let i = 0; i < buffer.length; i++) {
      const c = buffer.charCodeAt(i)
      if (c === 10 || c === 13) {
        // A lone \r at the end of a chunk may be the first half of \r\n: wait for more.
        if (c === 13 && i === buffer.length - 1) break
        line(buffer.slice(start, i))
        if (c === 13 && buffer.charCodeAt(i + 1) === 10) i++
        start = i + 1
      }
    }
    buffer = buffer.slice(start)
  }
}
