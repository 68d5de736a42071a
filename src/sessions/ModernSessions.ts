import { Deferred, Effect, FiberId } from "effect"
import { declarationOf } from "../domain/canonicalJson.js"

/** A session a modern client is served through, as far as this cache needs to know it. */
interface Held {
  readonly session: { readonly id: string; lastSeen: number }
}

/**
 * The sessions the gateway keeps for clients of the 2026-07-28 revision, which have none of their
 * own: one per endpoint, caller and declared client (capabilities, client name), opened on first
 * use (concurrent requests wait for the same opening; a failed one is not remembered), used
 * again while it lives, opened anew once it has ended. ClientSessions and AggregateSessions
 * each keep one.
 */
export class ModernSessions<S extends Held, E> {
  private readonly byKey = new Map<string, Deferred.Deferred<S, E>>()
  private readonly keyOf = new Map<string, string>()

  constructor(
    /** Whether the session is still open (an idle one was reaped, its server went). */
    private readonly alive: (id: string) => boolean,
    private readonly now: () => number
  ) {}

  /** The session for this client of `endpoint`, `open`ing one if need be. */
  get(endpoint: string, owner: string, initializeParams: Record<string, unknown>, open: Effect.Effect<S, E>): Effect.Effect<S, E> {
    return Effect.suspend(() => {
      const key = `${endpoint}\u0000${owner}\u0000${declarationOf(initializeParams)}`
      const existing = this.byKey.get(key)
      if (existing !== undefined) {
        return Effect.flatMap(Deferred.await(existing), (opened) => {
          if (this.alive(opened.session.id)) {
            opened.session.lastSeen = this.now()
            return Effect.succeed(opened)
          }
          if (this.byKey.get(key) === existing) this.byKey.delete(key)
          return this.get(endpoint, owner, initializeParams, open)
        })
      }
      const deferred = Deferred.unsafeMake<S, E>(FiberId.none)
      this.byKey.set(key, deferred)
      return open.pipe(
        Effect.tap((opened) => Effect.sync(() => void this.keyOf.set(opened.session.id, key))),
        Effect.onExit((exit) =>
          Effect.suspend(() => {
            if (exit._tag === "Failure" && this.byKey.get(key) === deferred) this.byKey.delete(key)
            return Deferred.done(deferred, exit)
          })
        )
      )
    })
  }

  /** A session ended: the next request of its client opens another. */
  forget(sessionId: string) {
    const key = this.keyOf.get(sessionId)
    if (key === undefined) return
    this.keyOf.delete(sessionId)
    this.byKey.delete(key)
  }
}
