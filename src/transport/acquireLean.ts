import { Effect, Scope } from "effect"

/**
 * `Effect.acquireRelease` for what lives as long as a client session: acquires `acquire()` and
 * ties `release` to the current scope, without keeping the acquiring fiber's state.
 * `Effect.acquireRelease` (and `Effect.addFinalizer`) keep a snapshot of the acquiring fiber's
 * FiberRefs, its whole Context among them, until the scope closes, so that the release runs
 * with them; held by every idle session (its backend connection, its listen stream), that was
 * about 2 KB of a session's 16. A release that needs no fiber state (closing a socket, ending a
 * connection) uses this instead.
 */
export const acquireLean = <A>(
  acquire: () => A,
  release: (a: A) => Effect.Effect<void>
): Effect.Effect<A, never, Scope.Scope> =>
  Effect.uninterruptible(
    Effect.flatMap(Effect.scope, (scope) => {
      const a = acquire()
      return Effect.as(Scope.addFinalizer(scope, Effect.suspend(() => release(a))), a)
    })
  )
