import { type Cause, Effect, Exit, type Scope, type Tracer } from "effect"
import type { DispatchError } from "../domain/GatewayError.js"
import { intern } from "../domain/intern.js"
import type { InstanceState } from "../instance/InstanceState.js"
import type { Connection } from "../transport/Connection.js"
import type { DispatcherShape } from "../dispatch/Dispatcher.js"
import type { ExposureShape } from "../exposure/Exposure.js"
import { EndpointSession, type RequestRelay, type SessionAnswer } from "./EndpointSession.js"

export type { SessionAnswer } from "./EndpointSession.js"

const errorAnswer = (code: number, message: string): SessionAnswer => ({ _tag: "Answer", message: { error: { code, message } } })

/** What a ClientSession is made of (ClientSessions makes them). */
export interface ClientSessionOptions {
  readonly id: string
  readonly template: string
  /** The instance the session is pinned to; undefined when each request is balanced. */
  readonly pinned: InstanceState | undefined
  readonly protocolVersion: string
  /** The way to the pinned instance; undefined for a balanced session. */
  readonly connection: Connection | undefined
  /** The backend serves this session alone (HTTP session, own process): the client's notifications go to it. */
  readonly ownBackend: boolean
  readonly scope: Scope.CloseableScope
  readonly owner: string
  readonly dispatcher: DispatcherShape
  /** When it began (the Timer's time). */
  readonly now: number
  /** What the template shows (filters, transforms, cache) around every request. */
  readonly exposure: ExposureShape
  /** What the client declared (capabilities, name), canonical: part of its cache keys. */
  readonly declaration: string
}

/**
 * A session the gateway holds for an MCP client of `/mcp/{template}`. Pinned to one instance
 * (`session_affinity: "sticky"`), it reaches it through `backend` (its own HTTP session or
 * process, or the instance's shared channel); balanced (`"none"`), each request goes wherever
 * the strategy sends it. Either way every request is one Dispatcher call, so the instance's
 * in-flight count, latency, breaker and the stats see it. ClientSessions creates and ends sessions.
 */
export class ClientSession extends EndpointSession {
  /** Held by an aggregate session (one of its members): it lives as long as the aggregate does. */
  heldByAggregate = false
  /** The aggregate session that holds it: a member's own process is in use while its aggregate's client is. */
  holder: EndpointSession | undefined = undefined
  /** A balanced session's requests, with auth on: to its owner's own process of each instance (CallOptions.caller). */
  processCaller: string | undefined = undefined
  /** A session taken over from another replica: how it starts hearing its server (once). */
  private deferredListen: (() => void) | undefined

  /** Listens only when the client's standing stream reaches this replica (see ClientSessions' takeOver). */
  listenLater(start: () => void) {
    this.deferredListen = start
  }

  override standingStreamOpened() {
    const start = this.deferredListen
    this.deferredListen = undefined
    start?.()
  }

  /** The instance the session is pinned to; undefined when each request is balanced. */
  private readonly pinned: InstanceState | undefined
  /** The way to the pinned instance; undefined for a balanced session. */
  private readonly connection: Connection | undefined
  /** The backend serves this session alone (HTTP session, own process): the client's notifications go to it. */
  readonly ownBackend: boolean
  private readonly dispatcher: DispatcherShape
  /** What the template shows (filters, transforms, cache) around every request. */
  private readonly exposure: ExposureShape

  constructor(options: ClientSessionOptions) {
    super(options.id, options.template, options.protocolVersion, options.scope, options.owner, options.now)
    this.pinned = options.pinned
    this.connection = options.connection
    this.ownBackend = options.ownBackend
    this.dispatcher = options.dispatcher
    this.exposure = options.exposure
    this.declaration = intern(options.declaration)
    this.generation = options.connection?.generation() ?? 0
  }

  /** What the client declared (capabilities, name), canonical: part of its cache keys. */
  private readonly declaration: string

  /** The backend's generation when the session began: a change means the server it talked to restarted. */
  readonly generation: number

  get instance(): InstanceState | undefined {
    return this.pinned
  }

  get backend(): Connection | undefined {
    return this.connection
  }

  get backendDiscover(): Record<string, unknown> | undefined {
    return this.connection?.discovered?.()
  }

  /** Whether the server state the client talked to is gone (its process restarted or died, its HTTP session ended). */
  get backendLost(): boolean {
    return this.connection !== undefined && (!this.connection.alive() || this.connection.generation() !== this.generation)
  }

  /** A balanced session has no backend of its own that could listen. */
  get canListen(): boolean {
    return this.connection !== undefined
  }

  override get busy(): boolean {
    return this.heldByAggregate || super.busy
  }

  /** One client request, through the Dispatcher (pinned: to the session's instance and backend). */
  request(
    method: string,
    params: Record<string, unknown> | undefined,
    relay: RequestRelay,
    headers?: Readonly<Record<string, string>>
  ): Effect.Effect<SessionAnswer> {
    const call = (sent: Record<string, unknown> | undefined, onCacheHints?: RequestRelay["onCacheHints"]) =>
      Effect.map(
        this.dispatcher.call(this.template, method, sent, {
          instance: this.pinned,
          connection: this.connection,
          relay: onCacheHints === undefined ? relay : { ...relay, onCacheHints },
          headers,
          caller: this.processCaller
        }),
        (r) => r.result
      )
    const answered = this.exposure.involved(this.template, method, params)
      ? this.exposure.run(this.template, method, params, { id: this.owner, declaration: this.declaration, session: this.id }, call)
      : call(params)
    return this.asking(relay, answered).pipe(
      Effect.match({
        onSuccess: (result): SessionAnswer => {
          this.keepSubscriptions(method, params)
          return { _tag: "Answer", message: { result } }
        },
        onFailure: (e) => this.answerFor(e)
      })
    )
  }

  /**
   * `request` without a fiber (Dispatcher.callNow), the endpoint's request path: for a method
   * the template's exposure (filters, transforms, cache) has nothing to do with; otherwise
   * undefined, and `request` serves it.
   */
  override requestNow(
    method: string,
    params: Record<string, unknown> | undefined,
    relay: RequestRelay,
    headers: Readonly<Record<string, string>> | undefined,
    requestId: string,
    done: (exit: Exit.Exit<SessionAnswer>) => void,
    spanNow?: () => Tracer.AnySpan | undefined
  ): (() => void) | undefined {
    if (this.exposure.involved(this.template, method, params)) return undefined
    const release = this.askingNow(relay)
    const cancel = this.dispatcher.callNow(
      this.template,
      method,
      params,
      { instance: this.pinned, connection: this.connection, relay, headers, caller: this.processCaller, span: spanNow?.() },
      requestId,
      (exit) => {
        release?.()
        if (Exit.isSuccess(exit)) {
          this.keepSubscriptions(method, params)
          return done(Exit.succeed({ _tag: "Answer", message: { result: exit.value.result } }))
        }
        // (A defect stays one: the endpoint logs it and answers 500.)
        done(exit.cause._tag === "Fail" ? Exit.succeed(this.answerFor(exit.cause.error)) : Exit.failCause(exit.cause as Cause.Cause<never>))
      }
    )
    return () => {
      release?.()
      cancel()
    }
  }

  /** Keeps the client's resource subscriptions (for the updates of a shared process) as its requests succeed. */
  private keepSubscriptions(method: string, params: Record<string, unknown> | undefined) {
    if (method === "resources/subscribe" && typeof params?.uri === "string") this.subscriptions.add(params.uri)
    else if (method === "resources/unsubscribe" && typeof params?.uri === "string") this.subscriptions.delete(params.uri)
  }

  /** How a failed request reaches the client: as a JSON-RPC error, or as the end of the session. */
  private answerFor(error: DispatchError): SessionAnswer {
    switch (error._tag) {
      case "BackendError":
        return { _tag: "Answer", message: { error: error.error } }
      case "RequestRejected":
      case "ListTooLong":
      case "UpstreamTimeout":
        return errorAnswer(error.rpcCode, error.message)
      case "TransformFailed":
        return { _tag: "Failed", status: error.httpStatus, error: { code: error.rpcCode, message: error.message } }
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
          : errorAnswer(error.rpcCode, error.message)
    }
  }

  /** A client notification: to a backend that serves this session alone (a shared process is not told one client's news). */
  notify(method: string, params: Record<string, unknown> | undefined): Effect.Effect<void> {
    return this.ownBackend && this.connection !== undefined ? this.connection.notify(method, params) : Effect.void
  }
}
