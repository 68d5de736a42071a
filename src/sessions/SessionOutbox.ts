/**
 * One SSE stream of a client session (the standing GET stream, or the stream answering one
 * request), with its events numbered and the latest kept, so that a client that reconnects
 * with Last-Event-ID gets what it missed. Messages that arrive while no connection carries the
 * stream wait here. A request's stream finishes with the response.
 */
export class SessionOutbox {
  private readonly events: Array<{ readonly seq: number; readonly message: unknown }> = []
  private nextSeq = 1
  private delivered = 0
  private sink: ((seq: number, message: unknown) => void) | undefined
  private onEnd: (() => void) | undefined
  finished = false

  constructor(private readonly capacity = 256) {}

  push(message: unknown) {
    const seq = this.nextSeq++
    this.events.push({ seq, message })
    if (this.events.length > this.capacity) this.events.shift()
    if (this.sink !== undefined) {
      this.sink(seq, message)
      this.delivered = seq
    }
  }

  /** The stream is complete (its response was pushed): the connection carrying it may close. */
  finish() {
    this.finished = true
    this.onEnd?.()
  }

  /**
   * Sends to `sink` from now on, starting with what the client has not seen: the events after
   * `lastSeq` when it resumes, otherwise those never delivered. `onEnd` is called when the
   * stream finishes (at once if it already has). Returns the detach function. One connection
   * at a time: a new one replaces the previous.
   */
  attach(sink: (seq: number, message: unknown) => void, lastSeq?: number, onEnd?: () => void): () => void {
    this.sink = sink
    this.onEnd = onEnd
    const from = lastSeq ?? this.delivered
    for (const event of this.events) {
      if (event.seq > from) {
        sink(event.seq, event.message)
        this.delivered = event.seq
      }
    }
    if (this.finished) onEnd?.()
    return () => {
      if (this.sink === sink) {
        this.sink = undefined
        this.onEnd = undefined
      }
    }
  }
}
