import type { Effect } from "effect"
import type { DispatchError, SessionLimitReached } from "../domain/GatewayError.js"
import type { Identity } from "../domain/Identity.js"
import type { EndpointSession } from "./EndpointSession.js"

/** Why a request's session cannot be used, as the endpoint tells the client (400: none named; 404: unknown or over). */
export interface SessionRefusal {
  readonly status: 400 | 404
  readonly message: string
}

/**
 * A session this replica does not hold, whose id another replica of the gateway sealed (or this
 * one, before a restart): it is taken over on first use, from what the id carries.
 */
export interface Adoption {
  readonly adopt: Effect.Effect<EndpointSession | SessionRefusal>
}

export interface OpenedSession {
  readonly session: EndpointSession
  /** The answer to the client's `initialize`. */
  readonly result: Record<string, unknown>
}

/**
 * The sessions behind one kind of MCP endpoint, as the endpoint (http/mcp/) speaks to them:
 * `/mcp/{template}` (ClientSessions) or an aggregate, `/mcp` and `/mcp/v/{name}`
 * (AggregateSessions). `endpoint` is the template's name or the aggregate's key.
 */
export interface EndpointSessionsShape {
  /** Whether the endpoint serves anything (an unknown template is a 404). */
  readonly exists: (endpoint: string) => boolean
  /** Why an endpoint that does not exist is a 404, in a few words (`unknown template "x"`). */
  readonly unknown: (endpoint: string) => string
  /** The client headers passed on to the endpoint's HTTP backends. */
  readonly forwardHeaders: (endpoint: string) => ReadonlyArray<string>
  /** Opens a session for a client's `initialize`. */
  readonly open: (endpoint: string, initializeParams: Record<string, unknown>, caller: Identity) => Effect.Effect<OpenedSession, DispatchError | SessionLimitReached>
  /**
   * The session a request names, if the request's credential may use it (at once, or once
   * taken over); else why not. Every request is authorized so: the session must be the
   * caller's, and an aggregate serves it the templates the credential allows now.
   */
  readonly resolve: (id: string | undefined, endpoint: string, caller: Identity) => EndpointSession | SessionRefusal | Adoption
  /** Ends a session for good (on every replica). False when unknown. */
  readonly close: (id: string) => Effect.Effect<boolean>
  /** The session that serves a modern (2026-07-28) client, which has no session of its own (one per caller and declared client). */
  readonly forModernClient: (
    endpoint: string,
    caller: Identity,
    initializeParams: Record<string, unknown>
  ) => Effect.Effect<OpenedSession, DispatchError | SessionLimitReached>
}
