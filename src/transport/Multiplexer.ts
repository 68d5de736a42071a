import { Effect, Exit } from "effect"
import {
  isNotification,
  isObject,
  isRequest,
  isResponse,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse
} from "../domain/JsonRpc.js"
import type { ConnectionLog, RequestDeadline, RequestDone } from "./Connection.js"
import { answerServerRequest } from "./serverRequests.js"
import { RequestTimeout, serialize, TransportError } from "./TransportError.js"

type Pending = (response: JsonRpcResponse | TransportError) => void

/** Hears what the server sends outside requests; server requests come with `reply`. */
export type ChannelListener = (message: JsonRpcNotification | JsonRpcRequest, reply?: (response: JsonRpcResponse) => void) => void

/**
 * Many callers' requests over one message channel the gateway shares (a stdio process, a legacy
 * SSE connection): every request goes out under an id of the gateway's choosing and its answer
 * is routed back to its caller; progress tokens are replaced the same way, so callers never see
 * each other's answers or progress. Subclasses say how a message is written.
 */
export abstract class Multiplexer {
  private readonly pending = new Map<number, Pending>()
  private nextId = 1
  /** Progress tokens in use, by the token the server knows: the caller's token and where its notifications go. */
  private readonly progress = new Map<string, { readonly token: unknown; readonly onNotification: (n: JsonRpcNotification) => void }>()
  closed = false
  private readonly closeListeners: Array<(reason: string) => void> = []

  constructor(
    readonly instanceId: string,
    protected readonly log: ConnectionLog,
    /** Who hears the notifications that belong to no request. */
    private readonly listeners: ReadonlySet<ChannelListener>,
    /**
     * The channel serves one client session (a process of its own): the server's requests go
     * to its listener to answer. A shared channel answers them itself.
     */
    private readonly relayRequests = false
  ) {}

  /**
   * Sends one serialised message. False when the channel cannot take it now (nothing was sent).
   * A send that fails later calls `failed`, which the request it carried is failed with.
   */
  protected abstract send(text: string, failed: (error: TransportError) => void): boolean

  /** Sends a request and waits for its answer; interrupting it cancels the request at the server. */
  call(
    method: string,
    params: Record<string, unknown> | undefined,
    deadline?: RequestDeadline,
    onNotification?: (n: JsonRpcNotification) => void
  ): Effect.Effect<JsonRpcResponse, TransportError | RequestTimeout> {
    return Effect.async<JsonRpcResponse, TransportError | RequestTimeout>((resume) => {
      const cancel = this.callNow(method, params, deadline, onNotification, resume)
      return Effect.sync(cancel)
    })
  }

  /**
   * `call` without an Effect step (see RequestNow in Connection.ts): `done` is called once with
   * the answer or the failure, unless the returned function cancelled the request first.
   */
  callNow(
    method: string,
    params: Record<string, unknown> | undefined,
    deadline: RequestDeadline | undefined,
    onNotification: ((n: JsonRpcNotification) => void) | undefined,
    done: RequestDone
  ): () => void {
    const id = this.nextId++
    const meta = params?._meta
    let progressToken: string | undefined
    if (onNotification !== undefined && isObject(meta) && meta.progressToken !== undefined) {
      progressToken = `gateway-${id}`
      this.progress.set(progressToken, { token: meta.progressToken, onNotification })
      params = { ...params, _meta: { ...meta, progressToken } }
    }
    let settled = false
    const settle = () => {
      settled = true
      deadline?.disarm()
      if (progressToken !== undefined) this.progress.delete(progressToken)
    }
    const cancel = () => {
      if (settled) return
      settle()
      this.cancel(id)
    }
    const text = serialize(this.instanceId, params === undefined ? { jsonrpc: "2.0", id, method } : { jsonrpc: "2.0", id, method, params })
    if (typeof text !== "string") {
      settle()
      done(Exit.fail(text))
      return cancel
    }
    this.pending.set(id, (r) => {
      settle()
      done(r instanceof TransportError ? Exit.fail(r) : Exit.succeed(r))
    })
    const sent = !this.closed && this.send(text, (error) => {
      const waiting = this.pending.get(id)
      if (waiting !== undefined) {
        this.pending.delete(id)
        waiting(error)
      }
    })
    if (!sent) {
      this.pending.delete(id)
      settle()
      done(Exit.fail(new TransportError({ instanceId: this.instanceId, reason: "unavailable", message: "not connected", reachedBackend: false })))
      return cancel
    }
    deadline?.arm(() => {
      if (settled) return
      if (progressToken !== undefined) this.progress.delete(progressToken)
      this.cancel(id)
      settled = true
      done(Exit.fail(new RequestTimeout({ instanceId: this.instanceId, timeoutMs: deadline.timeoutMs })))
    })
    return cancel
  }

  /** Sends a message that has no answer (one that cannot be serialised is dropped). */
  notify(message: unknown) {
    if (this.closed) return
    const text = serialize(this.instanceId, message)
    if (typeof text === "string") this.send(text, () => {})
  }

  /** Called once when the channel ends (its process exited, its stream dropped, or it was stopped). */
  onClose(callback: (reason: string) => void) {
    this.closeListeners.push(callback)
  }

  /** The caller gave up (timeout, client gone): tell the server to stop working on it. */
  private cancel(id: number) {
    if (this.pending.delete(id)) {
      this.notify({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: id, reason: "cancelled by the gateway" } })
    }
  }

  /** A message from the server: an answer goes to its caller, progress to its request, the rest to listeners. */
  receive(message: unknown) {
    if (isResponse(message)) {
      const id = message.id
      const resume = typeof id === "number" ? this.pending.get(id) : undefined
      if (resume !== undefined) {
        this.pending.delete(id as number)
        resume(message)
      } else {
        this.log.debug(`response to an unknown or cancelled request id ${JSON.stringify(id)}`)
      }
    } else if (isRequest(message)) {
      const [listener] = this.listeners
      if (this.relayRequests && listener !== undefined && message.method !== "ping") {
        listener(message, (answer) => this.notify({ ...answer, id: message.id }))
      } else {
        // Nothing says which caller a request on a shared channel is for: answered here.
        this.notify(answerServerRequest(message))
      }
    } else if (isNotification(message)) {
      const token = message.method === "notifications/progress" && isObject(message.params) ? message.params.progressToken : undefined
      const waiting = typeof token === "string" ? this.progress.get(token) : undefined
      if (waiting !== undefined) {
        waiting.onNotification({ ...message, params: { ...message.params, progressToken: waiting.token } })
      } else if (this.listeners.size > 0) {
        for (const listener of this.listeners) listener(message)
      } else {
        this.log.debug(`notification ${message.method}`)
      }
    } else {
      this.log.debug("ignoring a message that is not JSON-RPC")
    }
  }

  /** The channel is gone: every caller still waiting gets the error (the request may have reached the server). */
  failAll(reason: string) {
    if (this.closed) return
    this.closed = true
    const error = new TransportError({ instanceId: this.instanceId, reason: "reset", message: reason, reachedBackend: true })
    for (const resume of this.pending.values()) resume(error)
    this.pending.clear()
    this.progress.clear()
    for (const listener of this.closeListeners) listener(reason)
  }
}
