import { Duration, Effect, FiberId, type Fiber, type Scope } from "effect"
import type { DispatchError } from "../domain/GatewayError.js"
import {
  ErrorCode,
  type JsonRpcErrorObject,
  type JsonRpcId,
  type JsonRpcRequest,
  type JsonRpcResponse
} from "../domain/JsonRpc.js"
import type { InstanceState } from "../registry/InstanceState.js"
import type { Connection, RequestOptions } from "../transport/Connection.js"
import type { DispatcherShape } from "./Dispatcher.js"
import { SessionOutbox } from "./SessionOutbox.js"

/** What became of one request of a session, for the endpoint to tell the client. */
export type SessionAnswer =
  /** The server's answer (a result or a JSON-RPC error), or a gateway error the client reads as one. */
  | { readonly _tag: "Answer"; readonly message: { readonly result: unknown } | { readonly error: JsonRpcErrorObject } }
  /** The session is over (its instance or its backend state is gone): the client must initialize again. */
  | { readonly _tag: "Gone"; readonly message: string }
  /** Nothing can serve the request now (a balanced session with no healthy instance). */
  | { readonly _tag: "Unavailable"; readonly message: string; readonly retryAfterSeconds: number }

/** A JSON-RPC id as a map key that keeps "1" and 1 apart. */
const requestKey = (id: unknown) => (typeof id === "string" ? `s:${id}` : `n:${String(id)}`)

const errorAnswer = (code: number, message: string): SessionAnswer => ({ _tag: "Answer", message: { error: { code, message } } })

/**
 * A session the gateway holds for an MCP client of `/mcp/{template}`. Pinned to one instance
 * (`session_affinity: "sticky"`), it reaches it through `backend` (its own HTTP session or
 * process, or the instance's shared channel); balanced (`"none"`), each request goes wherever
 * the strategy sends it. Either way every request is one Dispatcher call, so the instance's
 * in-flight count, latency, breaker and the stats see it. ClientSessions creates and ends sessions.
 */
export class ClientSession {
  /** Requests in flight by the client's JSON-RPC id (see requestKey), so that notifications/cancelled can stop them. */
  private readonly inflight = new Map<string, Fiber.RuntimeFiber<unknown, unknown>>()
  /**
   * Server→client requests relayed to the client and not answered yet, by the id the gateway
   * gave them; each `reply` sends the client's answer back to the server under the server's id.
   */
  private readonly serverRequests = new Map<string, (response: JsonRpcResponse) => void>()
  private nextServerRequest = 1
  /** What the server sends outside requests, for the client's standing GET stream (stream "0"). */
  readonly outbox = new SessionOutbox()
  /**
   * The session's SSE streams by key, for resumption with Last-Event-ID (`{key}-{seq}`): "0" is
   * the standing stream, requests answered with a stream get "1", "2", ... (kept a while after they finish).
   */
  private readonly streams = new Map<string, SessionOutbox>([["0", this.outbox]])
  private nextStream = 1
  /** Resources the client subscribed to: on a shared process, updates go only to their subscribers. */
  readonly subscriptions = new Set<string>()
  /** Called when the session ends (to close its open streams). */
  readonly onClose = new Set<() => void>()
  /** When the client last used the session (epoch ms, the Clock's). */
  lastSeen: number
  /**
   * The session serves a client of the 2026-07-28 revision: it has no standing stream, so what
   * its server asks outside a request's own relay goes to a request in flight (see askRelay).
   */
  servesModernClient = false
  /**
   * For a modern client: what the server sends outside requests (list changes, resource
   * updates) goes to these (its `subscriptions/listen` streams) instead of a standing stream.
   */
  readonly listeners = new Set<(message: { readonly method: string; readonly params?: unknown }) => void>()
  /** Relays of the requests in flight that take the server's questions, oldest first. */
  private readonly askRelays: Array<NonNullable<RequestOptions["onServerRequest"]>> = []

  constructor(
    /** The gateway's own session id (what the client sends as MCP-Session-Id); never the backend's. */
    readonly id: string,
    readonly template: string,
    /** The instance the session is pinned to; undefined when each request is balanced. */
    readonly instance: InstanceState | undefined,
    readonly protocolVersion: string,
    /** The way to the pinned instance; undefined for a balanced session. */
    readonly backend: Connection | undefined,
    /** The backend serves this session alone (HTTP session, own process): the client's notifications go to it. */
    readonly ownBackend: boolean,
    /** The session's resources (backend session, own process); closed when it ends. */
    readonly scope: Scope.CloseableScope,
    /** Who opened it (a credential's id, or `ip:{address}` without auth): only they may use it. */
    readonly owner: string,
    private readonly dispatcher: DispatcherShape,
    now: number
  ) {
    this.generation = backend?.generation() ?? 0
    this.lastSeen = now
  }

  /** The backend's generation when the session began: a change means the server it talked to restarted. */
  readonly generation: number

  /**
   * Where a question the server asked outside any request's relay goes (a process of the
   * session's own says nothing of which request it concerns): the latest request in flight
   * that takes questions, if any.
   */
  askRelay(): NonNullable<RequestOptions["onServerRequest"]> | undefined {
    return this.askRelays.at(-1)
  }

  /**
   * A modern client's view of its tools' `x-mcp-header` declarations (from the `tools/list`
   * answers it got through this session): what its `Mcp-Param-*` headers are checked against
   * when its server is an old one.
   */
  readonly toolHeaders = new Map<string, Array<{ readonly path: ReadonlyArray<string>; readonly header: string }>>()

  /** The server's `server/discover` answer when it speaks the modern revision (a pinned HTTP session only). */
  get backendDiscover(): Record<string, unknown> | undefined {
    return this.backend?.discovered?.()
  }

  /** Whether the server state the client talked to is gone (its process restarted or died, its HTTP session ended). */
  get backendLost(): boolean {
    return this.backend !== undefined && (!this.backend.alive() || this.backend.generation() !== this.generation)
  }

  /** One client request, through the Dispatcher (pinned: to the session's instance and backend). */
  request(
    method: string,
    params: Record<string, unknown> | undefined,
    relay: Pick<RequestOptions, "onNotification" | "onServerRequest" | "passInputRequired" | "clientParamHeaders" | "client">,
    headers?: Readonly<Record<string, string>>
  ): Effect.Effect<SessionAnswer> {
    const ask = relay.onServerRequest
    if (ask !== undefined) this.askRelays.push(ask)
    return this.dispatcher.call(this.template, method, params, { instance: this.instance, connection: this.backend, relay, headers }).pipe(
      Effect.ensuring(Effect.sync(() => {
        if (ask !== undefined) this.askRelays.splice(this.askRelays.indexOf(ask), 1)
      })),
      Effect.match({
        onSuccess: (r): SessionAnswer => {
          if (method === "resources/subscribe" && typeof params?.uri === "string") this.subscriptions.add(params.uri)
          else if (method === "resources/unsubscribe" && typeof params?.uri === "string") this.subscriptions.delete(params.uri)
          return { _tag: "Answer", message: { result: r.result } }
        },
        onFailure: (e) => this.answerFor(e)
      })
    )
  }

  /** How a failed request reaches the client: as a JSON-RPC error, or as the end of the session. */
  private answerFor(error: DispatchError): SessionAnswer {
    switch (error._tag) {
      case "BackendError":
        return { _tag: "Answer", message: { error: error.error } }
      case "RequestRejected":
        return errorAnswer(ErrorCode.InvalidRequest, error.message)
      case "ListTooLong":
      case "UpstreamTimeout":
        return errorAnswer(ErrorCode.InternalError, error.message)
      case "NoHealthyInstance":
        return { _tag: "Unavailable", message: error.message, retryAfterSeconds: error.retryAfterSeconds }
      case "TemplateNotFound":
      case "InstanceNotFound":
      case "InstanceUnavailable":
        return { _tag: "Gone", message: `Session not found: ${error.message}` }
      case "AllAttemptsFailed":
        // The server the client talked to is gone: so is the session. Otherwise the request failed, not the session.
        return this.backendLost
          ? { _tag: "Gone", message: `Session not found: its server is gone (${error.message})` }
          : errorAnswer(ErrorCode.InternalError, error.message)
    }
  }

  /** A client notification: to a backend that serves this session alone (a shared process is not told one client's news). */
  notify(method: string, params: Record<string, unknown> | undefined): Effect.Effect<void> {
    return this.ownBackend && this.backend !== undefined ? this.backend.notify(method, params) : Effect.void
  }

  track(requestId: JsonRpcId, fiber: Fiber.RuntimeFiber<unknown, unknown>) {
    const key = requestKey(requestId)
    this.inflight.set(key, fiber)
    fiber.addObserver(() => {
      if (this.inflight.get(key) === fiber) this.inflight.delete(key)
    })
  }

  /** In use: a request in flight, or a modern client listening (it must not idle out under them). */
  get busy(): boolean {
    return this.inflight.size > 0 || this.listeners.size > 0
  }

  /** Listen streams holding each resource subscription on the backend (a modern client's). */
  private readonly held = new Map<string, number>()

  /**
   * A listen stream wants updates of a resource: the first one subscribes it on the server
   * (`resources/subscribe`); true when the server took it.
   */
  holdSubscription(uri: string): Effect.Effect<boolean> {
    const count = this.held.get(uri) ?? 0
    this.held.set(uri, count + 1)
    if (count > 0) return Effect.succeed(true)
    return Effect.map(this.request("resources/subscribe", { uri }, {}), (answer) => {
      const ok = answer._tag === "Answer" && !("error" in answer.message)
      if (!ok) this.releaseCount(uri)
      return ok
    })
  }

  /** A listen stream that held a subscription closed: the last one unsubscribes it on the server. */
  dropSubscription(uri: string): Effect.Effect<void> {
    return this.releaseCount(uri) > 0 ? Effect.void : Effect.asVoid(this.request("resources/unsubscribe", { uri }, {}))
  }

  private releaseCount(uri: string): number {
    const left = (this.held.get(uri) ?? 1) - 1
    if (left > 0) this.held.set(uri, left)
    else this.held.delete(uri)
    return left
  }

  /** `notifications/cancelled` from the client: stops the request, down to the backend. */
  cancel(requestId: unknown) {
    this.inflight.get(requestKey(requestId))?.unsafeInterruptAsFork(FiberId.none)
  }

  /** The session ends: what is in flight is interrupted (ClientSessions closes the scope after). */
  interruptAll(): ReadonlyArray<Fiber.RuntimeFiber<unknown, unknown>> {
    for (const closed of this.onClose) closed()
    this.onClose.clear()
    const fibers = Array.from(this.inflight.values())
    this.inflight.clear()
    return fibers
  }

  /** Relays a server→client request to the client under a gateway id; the answer goes back through `reply`. */
  relayServerRequest(request: JsonRpcRequest, reply: (response: JsonRpcResponse) => void, send: (message: unknown) => void): string {
    const relayId = `gateway-${this.nextServerRequest++}`
    this.serverRequests.set(relayId, reply)
    send({ ...request, id: relayId })
    return relayId
  }

  /** The client's answer to a relayed server request. False when nothing waits for it. */
  answerServerRequest(response: JsonRpcResponse): boolean {
    const reply = this.serverRequests.get(String(response.id))
    if (reply === undefined) return false
    this.serverRequests.delete(String(response.id))
    reply(response)
    return true
  }

  /** Relayed requests the client never answered, when the request that caused them ends: the server gets an error rather than silence. */
  abandonServerRequests(relayIds: ReadonlyArray<string>) {
    for (const relayId of relayIds) {
      const reply = this.serverRequests.get(relayId)
      if (reply === undefined) continue
      this.serverRequests.delete(relayId)
      reply({ jsonrpc: "2.0", id: relayId, error: { code: ErrorCode.InternalError, message: "the client's request ended before it answered" } })
    }
  }

  /** A new resumable stream for one request's answer. */
  openStream(): { readonly key: string; readonly stream: SessionOutbox } {
    const key = String(this.nextStream++)
    const stream = new SessionOutbox()
    this.streams.set(key, stream)
    return { key, stream }
  }

  /** A number for a stream that is answered in one write (nothing to resume but the answer, which is in it). */
  reserveStreamKey(): string {
    return String(this.nextStream++)
  }

  stream(key: string): SessionOutbox | undefined {
    return this.streams.get(key)
  }

  /** A finished request's stream stays resumable for `retention`, then is forgotten. */
  retireStream(key: string, retention: Duration.Duration) {
    setTimeout(() => this.streams.delete(key), Duration.toMillis(retention)).unref()
  }
}
