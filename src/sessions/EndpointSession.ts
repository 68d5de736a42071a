import { Duration, Effect, type Exit, FiberId, type Fiber, type Scope, type Tracer } from "effect"
import { ErrorCode, type JsonRpcErrorObject, type JsonRpcId, type JsonRpcRequest, type JsonRpcResponse, type ServerNotice } from "../domain/JsonRpc.js"
import type { InstanceState } from "../instance/InstanceState.js"
import type { Connection, RequestOptions } from "../transport/Connection.js"
import { intern } from "../domain/intern.js"
import { SessionOutbox } from "./SessionOutbox.js"

/** What became of one request of a session, for the endpoint to tell the client. */
export type SessionAnswer =
  /** The server's answer (a result or a JSON-RPC error), or a gateway error the client reads as one. */
  | { readonly _tag: "Answer"; readonly message: { readonly result: unknown } | { readonly error: JsonRpcErrorObject } }
  /** The session is over (its instance or its backend state is gone): the client must initialize again. */
  | { readonly _tag: "Gone"; readonly message: string }
  /** Nothing can serve the request now (a balanced session with no healthy instance). */
  | { readonly _tag: "Unavailable"; readonly message: string; readonly retryAfterSeconds: number }
  /**
   * The gateway answers for itself with an HTTP status: 502 when it failed the request (a
   * transform plugin threw), 429 when a template's rate limit refused it (an aggregate's member).
   */
  | {
    readonly _tag: "Failed"
    readonly status: 429 | 502
    readonly error: JsonRpcErrorObject
    readonly headers?: Readonly<Record<string, string>> | undefined
  }

/** How a request's relays reach the client while it runs: progress, the server's questions. */
export type RequestRelay = Pick<RequestOptions, "onNotification" | "onServerRequest" | "passInputRequired" | "clientParamHeaders" | "client" | "onCacheHints">

/** A JSON-RPC id as a map key that keeps "1" and 1 apart. */
const requestKey = (id: unknown) => (typeof id === "string" ? `s:${id}` : `n:${String(id)}`)

/**
 * What the MCP endpoint speaks to for one client: the client's side of a session, whatever is
 * behind it. It holds the client's requests in flight (for `notifications/cancelled`), the
 * server→client requests relayed to the client and not yet answered, the SSE streams (for
 * resumption with Last-Event-ID), a modern client's listen streams, and the resource
 * subscriptions listen streams hold. What serves the requests is the subclass's:
 * `ClientSession` (one template's instance or balanced requests) or `AggregateSession` (many
 * templates behind one endpoint).
 */
export abstract class EndpointSession {
  // The collections below that a session may never need are made on first use: an idle session
  // holds none of them (each empty Map or Set is 150-250 bytes, and a gateway holds thousands of
  // idle sessions). Readers that must not allocate use the private fields.

  /**
   * Requests in flight by the client's JSON-RPC id (see requestKey), so that notifications/cancelled
   * can stop them: the fiber that runs one, or the function that cancels one run without a fiber.
   */
  private inflight: Map<string, Fiber.RuntimeFiber<unknown, unknown> | (() => void)> | undefined
  /**
   * Server→client requests relayed to the client and not answered yet, by the id the gateway
   * gave them; each `reply` sends the client's answer back to the server under the server's id.
   */
  private serverRequests: Map<string, (response: JsonRpcResponse) => void> | undefined
  private nextServerRequest = 1
  /** What the server sends outside requests, for the client's standing GET stream (stream "0"). */
  readonly outbox = new SessionOutbox()
  /**
   * The session's SSE streams by key, for resumption with Last-Event-ID (`{key}-{seq}`): "0" is
   * the standing stream, requests answered with a stream get "1", "2", ... (kept a while after they finish).
   */
  private streams: Map<string, SessionOutbox> | undefined
  private nextStream = 1
  private subscribed: Set<string> | undefined
  /** Resources the client subscribed to: on a shared process, updates go only to their subscribers. */
  get subscriptions(): Set<string> {
    return (this.subscribed ??= new Set())
  }
  /** Whether the client subscribed to `uri` (without making the set). */
  subscribedTo(uri: string): boolean {
    return this.subscribed?.has(uri) ?? false
  }
  private closers: Set<() => void> | undefined
  /** Called when the session ends (to close its open streams). */
  get onClose(): Set<() => void> {
    return (this.closers ??= new Set())
  }
  /** When the client last used the session (epoch ms, the Clock's). */
  lastSeen: number
  /**
   * `lastSeen` when the client's standing stream last closed from its side: while `lastSeen` has
   * not moved since, the client has neither reconnected it nor sent a request (it has most
   * likely gone without DELETE, as most clients go). Undefined: no stream of its ever closed.
   */
  streamDroppedAt: number | undefined = undefined
  /** When it ends however busy (epoch ms): its sealed id's expiry (`gateway.session_max_lifetime`). */
  expiresAt = Number.POSITIVE_INFINITY
  /** When this replica last told the others it serves the session (EndedSessions.touch). */
  lastTouched = 0
  /**
   * The session serves a client of the 2026-07-28 revision: it has no standing stream, so what
   * its server asks outside a request's own relay goes to a request in flight (see askRelay).
   */
  servesModernClient = false
  /**
   * For a modern client: what the server sends outside requests (list changes, resource
   * updates) goes to these (its `subscriptions/listen` streams) instead of a standing stream.
   */
  get listeners(): Set<(message: ServerNotice) => void> {
    return (this.listening ??= new Set())
  }
  private listening: Set<(message: ServerNotice) => void> | undefined
  /** Tells every listen stream of a modern client (none made if there is none). */
  tellListeners(message: ServerNotice) {
    if (this.listening !== undefined) for (const listener of this.listening) listener(message)
  }
  /** Relays of the requests in flight that take the server's questions, oldest first. */
  private askRelays: Array<NonNullable<RequestOptions["onServerRequest"]>> | undefined
  /**
   * A modern client's view of its tools' `x-mcp-header` declarations (from the `tools/list`
   * answers it got through this session): what its `Mcp-Param-*` headers are checked against
   * when its server is an old one.
   */
  get toolHeaders(): Map<string, Array<{ readonly path: ReadonlyArray<string>; readonly header: string }>> {
    return (this.declaredHeaders ??= new Map())
  }
  private declaredHeaders: Map<string, Array<{ readonly path: ReadonlyArray<string>; readonly header: string }>> | undefined
  /** Listen streams holding each resource subscription on the backend (a modern client's). */
  private held: Map<string, number> | undefined

  /** The endpoint it belongs to: a template's name, or an aggregate's key. */
  readonly template: string
  readonly protocolVersion: string
  /** Who opened it (a credential's id, or `ip:{address}` without auth): only they may use it. */
  readonly owner: string

  constructor(
    /** The gateway's own session id (what the client sends as MCP-Session-Id); never the backend's. */
    readonly id: string,
    template: string,
    protocolVersion: string,
    /** The session's resources (backend sessions, own processes); closed when it ends. */
    readonly scope: Scope.CloseableScope,
    owner: string,
    now: number
  ) {
    // (Interned: thousands of idle sessions hold the same few of these; see domain/intern.ts.)
    this.template = intern(template)
    this.protocolVersion = intern(protocolVersion)
    this.owner = intern(owner)
    this.lastSeen = now
  }

  /** One client request. */
  abstract request(
    method: string,
    params: Record<string, unknown> | undefined,
    relay: RequestRelay,
    headers?: Readonly<Record<string, string>>
  ): Effect.Effect<SessionAnswer>

  /** A client notification, for the server(s) behind the session that should hear it. */
  abstract notify(method: string, params: Record<string, unknown> | undefined): Effect.Effect<void>

  /** The instance the session is pinned to; undefined when requests are balanced or spread over templates. */
  abstract get instance(): InstanceState | undefined
  /** The way to the pinned instance, if any (a listen needs one to hear anything). */
  abstract get backend(): Connection | undefined
  /** The server's `server/discover` answer when it speaks the modern revision (a pinned HTTP session only). */
  abstract get backendDiscover(): Record<string, unknown> | undefined
  /** Whether the server state the client talked to is gone. */
  abstract get backendLost(): boolean
  /** Whether something behind the session can carry what servers say outside requests (a listen honours nothing otherwise). */
  abstract get canListen(): boolean

  /** The client opened its standing stream here: a session taken over from another replica starts hearing its server. */
  standingStreamOpened(): void {}

  /**
   * Where a question the server asked outside any request's relay goes (a process of the
   * session's own says nothing of which request it concerns): the latest request in flight
   * that takes questions, if any.
   */
  askRelay(): NonNullable<RequestOptions["onServerRequest"]> | undefined {
    return this.askRelays?.at(-1)
  }

  /** Runs a request with its relay registered as one that takes the server's questions (askRelay). */
  protected asking<A, E>(relay: RequestRelay, effect: Effect.Effect<A, E>): Effect.Effect<A, E> {
    const release = this.askingNow(relay)
    return release === undefined ? effect : Effect.ensuring(effect, Effect.sync(release))
  }

  /** `asking` for a request run without a fiber: registers its relay; the function it returns (if any) unregisters it. */
  protected askingNow(relay: RequestRelay): (() => void) | undefined {
    const ask = relay.onServerRequest
    if (ask === undefined) return undefined
    const relays = (this.askRelays ??= [])
    relays.push(ask)
    let released = false
    return () => {
      if (released) return
      released = true
      relays.splice(relays.indexOf(ask), 1)
    }
  }

  /** A request in flight in a fiber: cancellable until the fiber ends. */
  track(requestId: JsonRpcId, fiber: Fiber.RuntimeFiber<unknown, unknown>) {
    const key = requestKey(requestId)
    const inflight = (this.inflight ??= new Map())
    inflight.set(key, fiber)
    fiber.addObserver(() => {
      if (inflight.get(key) === fiber) inflight.delete(key)
    })
  }

  /**
   * A request in flight without a fiber: `cancel` stops it (and answers the client). Call the
   * function returned when it ends.
   */
  trackNow(requestId: JsonRpcId, cancel: () => void): () => void {
    const key = requestKey(requestId)
    const inflight = (this.inflight ??= new Map())
    inflight.set(key, cancel)
    return () => {
      if (inflight.get(key) === cancel) inflight.delete(key)
    }
  }

  /**
   * One client request without a fiber, where the session can serve it so (see
   * ClientSession.requestNow): `done` is called once with what `request` would give, unless the
   * returned function cancelled it first. Undefined when it cannot: `request` then serves it.
   * `spanNow`: with tracing on, makes the request's span (the parent of the dispatch's spans);
   * called only when the session serves the request so.
   */
  requestNow(
    _method: string,
    _params: Record<string, unknown> | undefined,
    _relay: RequestRelay,
    _headers: Readonly<Record<string, string>> | undefined,
    _requestId: string,
    _done: (exit: Exit.Exit<SessionAnswer>) => void,
    _spanNow?: () => Tracer.AnySpan | undefined
  ): (() => void) | undefined {
    return undefined
  }

  /** In use: a request in flight, or a modern client listening (it must not idle out under them). */
  get busy(): boolean {
    return (this.inflight?.size ?? 0) > 0 || (this.listening?.size ?? 0) > 0
  }

  /**
   * The client is there: a request in flight, a listen or a standing stream open (what an idle
   * session's process of its own must not be ended under, whatever `busy` adds).
   */
  get engaged(): boolean {
    return (this.inflight?.size ?? 0) > 0 || (this.listening?.size ?? 0) > 0 || (this.closers?.size ?? 0) > 0
  }

  /**
   * A listen stream wants updates of a resource: the first one subscribes it on the server
   * (`resources/subscribe`); true when the server took it.
   */
  holdSubscription(uri: string): Effect.Effect<boolean> {
    const held = (this.held ??= new Map())
    const count = held.get(uri) ?? 0
    held.set(uri, count + 1)
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
    const left = (this.held?.get(uri) ?? 1) - 1
    if (left > 0) this.held?.set(uri, left)
    else this.held?.delete(uri)
    return left
  }

  /** `notifications/cancelled` from the client: stops the request, down to the backend. */
  cancel(requestId: unknown) {
    const running = this.inflight?.get(requestKey(requestId))
    if (typeof running === "function") running()
    else running?.unsafeInterruptAsFork(FiberId.none)
  }

  /** The session ends: what is in flight is interrupted (the owner closes the scope after); the fibers, to await. */
  interruptAll(): ReadonlyArray<Fiber.RuntimeFiber<unknown, unknown>> {
    const closers = this.closers
    this.closers = undefined
    if (closers !== undefined) for (const closed of closers) closed()
    const fibers: Array<Fiber.RuntimeFiber<unknown, unknown>> = []
    const running = this.inflight === undefined ? [] : Array.from(this.inflight.values())
    this.inflight?.clear()
    for (const r of running) {
      if (typeof r === "function") r()
      else fibers.push(r)
    }
    return fibers
  }

  /** Relays a server→client request to the client under a gateway id; the answer goes back through `reply`. */
  relayServerRequest(request: JsonRpcRequest, reply: (response: JsonRpcResponse) => void, send: (message: unknown) => void): string {
    const relayId = `gateway-${this.nextServerRequest++}`
    ;(this.serverRequests ??= new Map()).set(relayId, reply)
    send({ ...request, id: relayId })
    return relayId
  }

  /** The client's answer to a relayed server request. False when nothing waits for it. */
  answerServerRequest(response: JsonRpcResponse): boolean {
    const reply = this.serverRequests?.get(String(response.id))
    if (reply === undefined) return false
    this.serverRequests?.delete(String(response.id))
    reply(response)
    return true
  }

  /** Relayed requests the client never answered, when the request that caused them ends: the server gets an error rather than silence. */
  abandonServerRequests(relayIds: ReadonlyArray<string>) {
    for (const relayId of relayIds) {
      const reply = this.serverRequests?.get(relayId)
      if (reply === undefined) continue
      this.serverRequests?.delete(relayId)
      reply({ jsonrpc: "2.0", id: relayId, error: { code: ErrorCode.InternalError, message: "the client's request ended before it answered" } })
    }
  }

  /** A new resumable stream for one request's answer. */
  openStream(): { readonly key: string; readonly stream: SessionOutbox } {
    const key = String(this.nextStream++)
    const stream = new SessionOutbox()
    ;(this.streams ??= new Map()).set(key, stream)
    return { key, stream }
  }

  /** A number for a stream that is answered in one write (nothing to resume but the answer, which is in it). */
  reserveStreamKey(): string {
    return String(this.nextStream++)
  }

  stream(key: string): SessionOutbox | undefined {
    return key === "0" ? this.outbox : this.streams?.get(key)
  }

  /** A finished request's stream stays resumable for `retention`, then is forgotten. */
  retireStream(key: string, retention: Duration.Duration) {
    // raw timer: on the MCP endpoint's request path (one per finished streamed request), where a
    // fiber sleeping on the Clock would cost more than the request; unref'd; what it forgets is
    // only a resumable stream.
    setTimeout(() => this.streams?.delete(key), Duration.toMillis(retention)).unref()
  }
}
