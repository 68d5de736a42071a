import type * as http from "node:http"
import { repeat, type TimerShape } from "../clock/Timer.js"

/**
 * Backpressure toward clients: what the gateway writes goes out as fast as each client takes it,
 * and what a lagging client has not taken is bounded.
 *
 * - A response writes straight to its socket while the socket keeps up (`res.write` returns
 *   true). Once it returns false the response lags: what comes next waits in the response's
 *   queue until 'drain'. Droppable events coalesce while they wait: a progress notification
 *   replaces the one of the same token still waiting, a list_changed the same list_changed, a
 *   resources/updated that of the same URI; a log message (notifications/message) is dropped.
 *   Everything else (responses, the server's requests of the client) waits in order.
 * - An answer larger than one slice (64 KiB) is written a slice at a time, each on 'drain', so
 *   that it is held once, as its text, and progress is seen slice by slice.
 * - Bounds: the events one response may hold (`max_buffered_bytes_per_response`; past it the
 *   connection is closed), and what all responses hold together (`max_buffered_bytes`; past it
 *   the responses that have taken nothing for the longest are closed first, down to the bound).
 * - A response that lags and has taken nothing for `write_timeout` is closed; its `onStall`
 *   cancels the work behind it (the request in flight, down to the backend).
 *
 * Byte counts are characters of the queued text (equal for the ASCII JSON that MCP mostly is).
 * The flow belongs to the HTTP server (one per server, created and closed by its layer); a
 * response finds it through its socket's server, so the plain answer path costs nothing more.
 */
export interface ResponseFlowSettings {
  readonly writeTimeoutMs: number
  readonly maxBufferedBytesPerResponse: number
  readonly maxBufferedBytes: number
}

/** How long a response must have taken nothing before the total's bound may close it. */
const STALLED_MS = 1000

/** The size of one write of a large answer. */
export const SLICE_CHARS = 64 * 1024

const FLOW = Symbol.for("mcp-gateway/ResponseFlow")

/** A queued piece of text; `key` set when a newer one of the same key replaces it. */
interface Pending {
  text: string
  readonly key: string | undefined
  /** Part of an answer (counted in the total only: an answer is held whole, whatever its size). */
  readonly answer: boolean
}

/** Why a response was closed by the flow (for the log line and the tests). */
export type StallReason = "write_timeout" | "response_buffer_full" | "gateway_buffer_full"

export class ResponseFlow {
  /** Responses that hold something now (lagging, or writing an answer slice by slice). */
  private readonly holding = new Set<FlowWriter>()
  /** Bytes held by all responses. */
  held = 0
  /** How many responses the flow closed, by reason (for stats and tests). */
  readonly closed: Record<StallReason, number> = { write_timeout: 0, response_buffer_full: 0, gateway_buffer_full: 0 }
  private stopSweeper: (() => void) | undefined

  /** `timer`: the clock of write timeouts and stalls, and their sweep (the Timer: tests drive it with TestClock). */
  constructor(
    readonly settings: ResponseFlowSettings,
    readonly timer: TimerShape,
    private readonly onClosed: (reason: StallReason) => void = () => {}
  ) {}

  /** Makes this the flow of every response of `server`. */
  attach(server: http.Server) {
    ;(server as unknown as Record<symbol, unknown>)[FLOW] = this
  }

  /** The flow of the server `res` belongs to (none outside a gateway server: unbounded plain writes). */
  static of(res: http.ServerResponse): ResponseFlow | undefined {
    // (Through the request's socket: a pipelined response has none of its own until the one before it ends.)
    const socket = res.socket ?? res.req?.socket
    const server = (socket as unknown as { server?: Record<symbol, unknown> } | null | undefined)?.server
    return server?.[FLOW] as ResponseFlow | undefined
  }

  /** A writer for a response written over time (a stream, or a large answer). */
  writer(res: http.ServerResponse, onStall?: (reason: StallReason) => void): FlowWriter {
    return new FlowWriter(this, res, onStall)
  }

  /** @internal */
  hold(writer: FlowWriter, delta: number) {
    this.held += delta
    if (delta > 0) {
      if (!this.holding.has(writer)) this.holding.add(writer)
      this.startSweeping()
      if (this.held > this.settings.maxBufferedBytes) this.shed()
    }
  }

  /** @internal */
  lagging(writer: FlowWriter) {
    this.holding.add(writer)
    this.startSweeping()
  }

  /** @internal */
  done(writer: FlowWriter) {
    this.holding.delete(writer)
  }

  /**
   * Over the total: the responses that have taken nothing for the longest are closed first, among
   * those stalled for a second at least (clients that read are not cut off for their answers'
   * sizes); past twice the total, whatever has taken nothing for the longest.
   */
  private shed() {
    const now = this.timer.now()
    const hard = this.held > 2 * this.settings.maxBufferedBytes
    const oldestFirst = Array.from(this.holding).sort((a, b) => a.lastProgress - b.lastProgress)
    for (const writer of oldestFirst) {
      if (this.held <= this.settings.maxBufferedBytes) return
      if (!hard && now - writer.lastProgress < STALLED_MS) return
      // (One that only waits for its socket holds nothing here: closing it would free nothing.)
      if (writer.heldBytes > 0) writer.stall("gateway_buffer_full")
    }
  }

  /** The responses that hold something, when the sweep finds the total still over its bound. */
  private shedStalled() {
    if (this.held > this.settings.maxBufferedBytes) this.shed()
  }

  /** One timer for the write timeouts of every lagging response, running only while one lags. */
  private startSweeping() {
    if (this.stopSweeper !== undefined) return
    const every = Math.max(10, Math.min(250, Math.floor(this.settings.writeTimeoutMs / 4)))
    this.stopSweeper = repeat(this.timer, every, () => {
      const now = this.timer.now()
      for (const writer of Array.from(this.holding)) {
        if (writer.isLagging && now - writer.lastProgress >= this.settings.writeTimeoutMs) writer.stall("write_timeout")
      }
      this.shedStalled()
      if (this.holding.size === 0) this.stopSweeping()
    })
  }

  private stopSweeping() {
    this.stopSweeper?.()
    this.stopSweeper = undefined
  }

  /** @internal */
  report(reason: StallReason) {
    this.closed[reason]++
    this.onClosed(reason)
  }

  close() {
    this.stopSweeping()
  }
}

/** Writes one response through its flow: see ResponseFlow. */
export class FlowWriter implements ResponseWriter {
  private readonly queue: Array<Pending> = []
  /** Where the queue starts (taken from the front by index: shift is linear in a long queue). */
  private head = 0
  private coalesced: Map<string, Pending> | undefined
  /** Characters of events (not answers) queued: bounded per response. */
  private queuedEvents = 0
  private queuedAll = 0
  private waiting = false
  private ending = false
  private over = false
  lastProgress: number

  constructor(private readonly flow: ResponseFlow, readonly res: http.ServerResponse, private readonly onStall?: (reason: StallReason) => void) {
    this.lastProgress = flow.timer.now()
    res.on("drain", () => this.drained())
    // (After its end a response emits no 'drain': 'finish' says the last of it was taken.)
    res.once("finish", () => this.release())
    res.once("close", () => this.release())
  }

  /** What this response holds (events and unsent parts of answers). */
  get heldBytes() {
    return this.queuedAll
  }

  /** Waiting for the client to take what was written. */
  get isLagging() {
    return this.waiting
  }

  private get empty() {
    return this.head === this.queue.length
  }

  private get writable() {
    return !this.over && !this.res.destroyed && !this.res.writableEnded
  }

  /**
   * An event (an SSE frame). `key`: a droppable event that a newer one of the same key replaces
   * while they wait; `"drop"`: an event left out while the client lags.
   */
  event(text: string, key?: string, answer = false) {
    if (!this.writable) return
    if (!this.waiting && this.empty && text.length <= SLICE_CHARS) {
      if (!this.res.write(text)) this.lag()
      return
    }
    if (answer || (!this.waiting && this.empty)) {
      // (Part of an answer, or one large event while the client keeps up: held whole, counted in
      // the total only, written a slice at a time.)
      this.queue.push({ text, key: undefined, answer: true })
      this.account(0, text.length)
      if (!this.waiting) this.pump()
      return
    }
    if (key === "drop") return
    if (key !== undefined) {
      const waiting = this.coalesced?.get(key)
      if (waiting !== undefined) {
        this.account(text.length - waiting.text.length, text.length - waiting.text.length)
        waiting.text = text
        return
      }
    }
    const pending: Pending = { text, key, answer: false }
    this.queue.push(pending)
    if (key !== undefined) (this.coalesced ??= new Map()).set(key, pending)
    this.account(text.length, text.length)
    if (this.queuedEvents > this.flow.settings.maxBufferedBytesPerResponse) this.stall("response_buffer_full")
  }

  /** The rest of the response (an answer, possibly large), then its end. */
  end(text?: string) {
    if (!this.writable || this.ending) return
    this.ending = true
    if (text !== undefined && text !== "") {
      if (!this.waiting && this.empty && text.length <= SLICE_CHARS) {
        this.res.end(text)
        if (!this.res.writableFinished) return this.lag()
        return this.release()
      }
      this.queue.push({ text, key: undefined, answer: true })
      this.account(0, text.length)
    }
    if (!this.waiting) this.pump()
  }

  /** Closes the response (and its connection): the client took too little, or there is no room left. */
  stall(reason: StallReason) {
    if (this.over) return
    this.release()
    this.over = true
    this.flow.report(reason)
    this.res.destroy()
    this.onStall?.(reason)
  }

  private lag() {
    if (this.waiting) return
    this.waiting = true
    this.flow.lagging(this)
  }

  private drained() {
    this.lastProgress = this.flow.timer.now()
    this.waiting = false
    this.pump()
  }

  /** Writes what waits until the socket is full again (a large answer a slice at a time); then the end, if asked. */
  private pump() {
    while (!this.empty && this.writable) {
      const first = this.queue[this.head]!
      let piece = first.text
      if (piece.length > SLICE_CHARS) {
        let cut = SLICE_CHARS
        // (Not between the two halves of a surrogate pair: each slice is encoded on its own.)
        const code = piece.charCodeAt(cut - 1)
        if (code >= 0xd800 && code <= 0xdbff) cut--
        first.text = piece.slice(cut)
        piece = piece.slice(0, cut)
      } else {
        this.queue[this.head++] = undefined as unknown as Pending
        if (this.empty) {
          this.queue.length = 0
          this.head = 0
        } else if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
          this.queue.splice(0, this.head)
          this.head = 0
        }
        if (first.key !== undefined && this.coalesced?.get(first.key) === first) this.coalesced.delete(first.key)
      }
      this.account(first.answer ? 0 : -piece.length, -piece.length)
      const full = !this.res.write(piece)
      if (full) return this.lag()
    }
    if (this.empty && this.ending && this.writable) {
      this.res.end()
      // The end may still wait for the client: the write timeout goes on until 'finish'.
      if (!this.res.writableFinished) this.lag()
      else this.release()
    } else if (this.empty && !this.waiting) {
      // Caught up: nothing held, nothing to time.
      this.flow.done(this)
    }
  }

  private account(events: number, all: number) {
    this.queuedEvents += events
    this.queuedAll += all
    this.flow.hold(this, all)
  }

  /** Nothing more to hold: the response ended, closed, or was closed. */
  private release() {
    if (this.queuedAll !== 0) this.flow.held -= this.queuedAll
    this.queuedAll = 0
    this.queuedEvents = 0
    this.queue.length = 0
    this.head = 0
    this.coalesced = undefined
    this.waiting = false
    this.flow.done(this)
  }
}

/**
 * Writes a whole answer: at once when it is small (the usual case) or outside a gateway server,
 * otherwise through the flow, a slice at a time, bounded and timed like a stream.
 */
export const writeAnswer = (
  res: http.ServerResponse,
  status: number,
  headers: http.OutgoingHttpHeaders,
  body: string,
  frame?: { readonly head: string; readonly tail: string }
) => {
  const flow = body.length > SLICE_CHARS ? ResponseFlow.of(res) : undefined
  res.writeHead(status, headers)
  if (flow === undefined) return void res.end(frame === undefined ? body : frame.head + body + frame.tail)
  // (A large body is not joined to its frame: that would copy it once more.)
  const writer = flow.writer(res)
  if (frame === undefined) return writer.end(body)
  writer.event(frame.head)
  writer.event(body, undefined, true)
  writer.end(frame.tail)
}

/** What writes a response over time: a FlowWriter, or (outside a gateway server) plain writes. */
export interface ResponseWriter {
  readonly res: http.ServerResponse
  event(text: string, key?: string): void
  end(text?: string): void
}

/**
 * The writer of a response written over time: its server's flow's, or plain writes where the
 * response belongs to no gateway server. `onStall` cancels the work behind the response.
 */
export const responseWriter = (res: http.ServerResponse, onStall?: (reason: StallReason) => void): ResponseWriter =>
  ResponseFlow.of(res)?.writer(res, onStall) ?? {
    res,
    event: (text) => void (res.destroyed || res.writableEnded ? undefined : res.write(text)),
    end: (text) => void (res.destroyed || res.writableEnded ? undefined : res.end(text))
  }

/**
 * How an MCP message may be treated while its client lags (see ResponseFlow): a coalescing key
 * for notifications a newer one supersedes, "drop" for log messages, undefined for the rest.
 */
export const lagKeyOf = (message: unknown): string | undefined => {
  if (typeof message !== "object" || message === null) return undefined
  const { id, method, params } = message as { id?: unknown; method?: unknown; params?: Record<string, unknown> }
  if (id !== undefined || typeof method !== "string") return undefined
  switch (method) {
    case "notifications/progress": {
      const token = params?.progressToken
      return `progress:${typeof token}:${String(token)}`
    }
    case "notifications/message":
      return "drop"
    case "notifications/resources/updated":
      return `updated:${String(params?.uri)}`
    case "notifications/tools/list_changed":
    case "notifications/prompts/list_changed":
    case "notifications/resources/list_changed":
      return method
    default:
      return undefined
  }
}
