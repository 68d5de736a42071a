/**
 * Messages for a client session that belong to no request (the standing GET stream), numbered
 * so that a client that reconnects with Last-Event-ID gets what it missed. Keeps the latest
 * `capacity` messages; messages that arrive while no stream is open wait here.
 */
export class SessionOutbox {
  private readonly events: Array<{ readonly id: number; readonly message: unknown }> = []
  private nextId = 1
  private delivered = 0
  private sink: ((id: number, message: unknown) => void) | undefined

  constructor(private readonly capacity = 256) {}

  push(message: unknown) {
    const id = this.nextId++
    this.events.push({ id, message })
    if (this.events.length > this.capacity) this.events.shift()
    if (this.sink !== undefined) {
      this.sink(id, message)
      this.delivered = id
    }
  }

  /**
   * Sends to `sink` from now on, starting with what the client has not seen: the events after
   * `lastEventId` when it resumes, otherwise those never delivered. Returns the detach function.
   * One stream at a time: a new one replaces the previous.
   */
  attach(sink: (id: number, message: unknown) => void, lastEventId?: number): () => void {
    this.sink = sink
    const from = lastEventId ?? this.delivered
    for (const event of this.events) {
      if (event.id > from) {
        sink(event.id, event.message)
        this.delivered = event.id
      }
    }
    return () => {
      if (this.sink === sink) this.sink = undefined
    }
  }
}
