import type { Effect, Exit, Runtime, Scope } from "effect"
import type { JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from "../domain/JsonRpc.js"
import type { SandboxSettings } from "../domain/Sandbox.js"
import type { Http1Pools } from "./Http1Pools.js"
import type { SandboxProbes } from "./sandboxProbe.js"
import type { ChannelStatus, SupervisionPolicy } from "./Supervision.js"
import type { RequestTimeout, TransportError } from "./TransportError.js"

/**
 * When a request must be answered by. The transport arms it while the request is out and, when
 * it fires, cancels the request at the backend and fails it with RequestTimeout. The policy
 * (how long, whether progress extends it) is the Dispatcher's; the timer under it is a plain
 * one (see clock/Timer.ts): Effect.timeout forks a fiber per call, which halved the
 * throughput of the request path when measured.
 */
export interface RequestDeadline {
  /** Calls `onExpire` once when the time is up, unless `disarm` comes first. One arming at a time. */
  readonly arm: (onExpire: () => void) => void
  readonly disarm: () => void
  /** Milliseconds left (for transports that must open a session before they can send). */
  readonly remainingMs: () => number
  /** The allowance, for messages. */
  readonly timeoutMs: number
}

export interface RequestOptions {
  readonly deadline?: RequestDeadline | undefined
  /**
   * The credential the request is made for, with auth on: the Transport sends it to that
   * caller's own process (legacy SSE or HTTP session) of the instance, never one another caller
   * uses (see CallerConnections.ts). Undefined: the instance's shared one (health probes, no auth).
   */
  readonly caller?: string | undefined
  /**
   * Client headers the template forwards (its `forward_headers`), sent with the request by the
   * transports that have headers (HTTP); the instance's own headers win over them.
   */
  readonly headers?: Readonly<Record<string, string>> | undefined
  /**
   * Notifications the server sends about this request while it runs (`notifications/progress`
   * for the request's progress token), delivered as they arrive, before the response.
   */
  readonly onNotification?: ((notification: JsonRpcNotification) => void) | undefined
  /**
   * Requests the server makes of its client while this request runs (`sampling/createMessage`,
   * `elicitation/create`, `roots/list`): whoever can answer calls `reply`, and the transport
   * sends the answer back under the id the server used. Without it the transport answers them
   * itself (`ping`) or with an error, so that the server never waits in vain.
   */
  readonly onServerRequest?: ((request: JsonRpcRequest, reply: (response: JsonRpcResponse) => void) => void) | undefined
  /**
   * A modern client's own request: a modern server's `input_required` result goes back to it
   * as it is (the client retries with the answers and the server's requestState), instead of
   * being turned into server requests through `onServerRequest`.
   */
  readonly passInputRequired?: boolean | undefined
  /**
   * A modern client's own `Mcp-Param-*` headers (lower-cased names): a modern server gets these,
   * as they are, instead of headers the gateway derives from the body, so that it checks the
   * client's as it would if the client talked to it directly.
   */
  readonly clientParamHeaders?: Readonly<Record<string, string>> | undefined
  /**
   * A modern client's own `clientInfo` and `capabilities` (initialize-params shaped): what a
   * modern server's envelope says for this request, whichever connection carries it (an
   * instance's shared one speaks for the gateway otherwise).
   */
  readonly client?: Readonly<Record<string, unknown>> | undefined
  /**
   * Told a 2026-07-28 server's caching hints (`ttlMs`, `cacheScope`) of its answer, before the
   * answer is shaped for an old caller (which drops them): the gateway's cache honours them.
   */
  readonly onCacheHints?: ((hints: { readonly ttlMs: number; readonly cacheScope: "public" | "private" }) => void) | undefined
}

/** How a request sent without an Effect step (`requestNow`) ends: called once, never after it was cancelled. */
export type RequestDone = (exit: Exit.Exit<JsonRpcResponse, TransportError | RequestTimeout>) => void

/**
 * `request` without an Effect step, for the request path (the Dispatcher's `callNow`): sends at
 * once and calls `done` with the answer or the failure; the function it returns cancels the
 * request (at the backend, as interrupting `request` does). Undefined when the connection cannot
 * send at once (nothing open yet, a restart in progress, a revision that needs more than one
 * exchange): `request` then does the work. Both are one implementation: `request` is this
 * wrapped in `Effect.async` wherever both exist, so they cannot drift apart.
 */
export type RequestNow = (
  method: string,
  params: Record<string, unknown> | undefined,
  options: RequestOptions | undefined,
  done: RequestDone
) => (() => void) | undefined

/** One instance's live link (a child process, or an HTTP session over a keep-alive pool). */
export interface Connection {
  /** See RequestNow; absent where a transport has no such path. */
  readonly requestNow?: RequestNow | undefined
  /** Sends one request and waits for its response; interrupting it cancels the request at the backend. */
  readonly request: (
    method: string,
    params: Record<string, unknown> | undefined,
    options?: RequestOptions
  ) => Effect.Effect<JsonRpcResponse, TransportError | RequestTimeout>
  /**
   * Starts the process or opens the session now (it also happens on first use), and gives the
   * server's answer to `initialize` (its capabilities, serverInfo, instructions).
   */
  readonly initialize: Effect.Effect<Record<string, unknown>, TransportError>
  /**
   * Messages the server sends outside any request (list changes, resource updates, log
   * messages; over HTTP also its requests on the standing stream), for as long as the scope
   * lasts. Server requests come with `reply`; without a listener that takes them, the
   * transport answers them itself.
   */
  readonly listen: (
    onMessage: (message: JsonRpcNotification | JsonRpcRequest, reply?: (response: JsonRpcResponse) => void) => void
  ) => Effect.Effect<void, never, Scope.Scope>
  /**
   * Counts the processes started or sessions opened so far. A client session pinned to the
   * connection compares it with the one it began with: a change means the server it talked to
   * is gone (restarted), and so is the client's session.
   */
  readonly generation: () => number
  /** False once the process this connection started has exited (and none replaced it yet). */
  readonly alive: () => boolean
  /**
   * The server's answer to `server/discover` when it speaks the modern revision (HTTP only;
   * undefined for an old server, or before the connection is open).
   */
  readonly discovered?: () => Record<string, unknown> | undefined
  /** The backend's own session id (an old Streamable HTTP server's `Mcp-Session-Id`), once there is one. */
  readonly sessionId?: () => string | undefined
  /**
   * From now on, `close` leaves the backend's session open at the server (no DELETE): another
   * replica of the gateway serves it (a rolling restart must not end the fleet's sessions).
   */
  readonly keepAtServer?: () => void
  /** Sends a notification to the server (e.g. a client's `notifications/roots/list_changed`). */
  readonly notify: (method: string, params: Record<string, unknown> | undefined) => Effect.Effect<void>
  /** Stops the process (its whole group) or ends the session; later requests fail. */
  readonly close: Effect.Effect<void>
}

/** How a connection reports what it sees (stderr lines, notifications, restarts) to the gateway's log. */
export interface ConnectionLog {
  readonly debug: (message: string) => void
  readonly info: (message: string) => void
  readonly warn: (message: string) => void
}

/** What a connection is given by the Transport that owns it. */
export interface ConnectionEnv {
  readonly log: ConnectionLog
  /** Where the connection's background work runs (opening, restarts); closed with the connection. */
  readonly scope: Scope.Scope
  /** Runs the connection's background effects from callbacks, with the gateway's services (its Clock, Random). */
  readonly runtime: Runtime.Runtime<never>
  /**
   * How many processes of the gateway are being stopped right now (the Transport's count, shared
   * by its connections): when many stop at once (shutdown, a drained instance with many
   * sessions), each gets a shorter grace after its stdin closes (see stdio.ts).
   */
  readonly stopping?: { count: number } | undefined
  /** For an instance's shared channel: how to restart it and where to report its state. Absent: never restarted. */
  /**
   * The Transport's HTTP/1.1 pools (keyed by origin, credentials and TLS options; closed with
   * its layer). Absent (a connection made on its own, in tests): a pool of the connection's own.
   */
  readonly http1Pools?: Http1Pools | undefined
  /**
   * stdio: what a process may see of the gateway's environment besides the default list
   * (childEnvironment.ts), asked each time one starts; absent: nothing more.
   */
  readonly inheritEnv?: (() => ReadonlyArray<string>) | undefined
  /** stdio: the sandbox a process starts in (transport/sandbox.ts), asked each time one starts; absent or undefined: none. */
  readonly sandbox?: (() => SandboxSettings | undefined) | undefined
  /** stdio: whether sandboxes can be set up here (the Transport's probes, shared by its connections); absent: the connection probes for itself. */
  readonly sandboxProbes?: SandboxProbes | undefined
  readonly supervision?: {
    readonly policy: () => SupervisionPolicy
    readonly report: (status: ChannelStatus) => void
  } | undefined
}
