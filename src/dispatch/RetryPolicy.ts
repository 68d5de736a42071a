import { Duration, Effect, Schedule } from "effect"
import type { Backoff } from "../domain/LoadBalancer.js"

/**
 * The delays between a request's attempts: exponential from `base`, varied by ±`jitter`,
 * never above `max`, at most `retries` of them, and never past `remainingMs()` (the request's
 * deadline): a delay is cut to the time left, and the attempt after it finds none left.
 */
export const retrySchedule = (backoff: Backoff, retries: number, remainingMs: () => number) =>
  Schedule.exponential(backoff.base, 2).pipe(
    Schedule.jitteredWith({ min: 1 - backoff.jitter, max: 1 + backoff.jitter }),
    Schedule.union(Schedule.spaced(backoff.max)),
    Schedule.intersect(Schedule.recurs(retries)),
    Schedule.modifyDelay((_, delay) => Duration.min(delay, Duration.millis(Math.max(0, remainingMs()))))
  )

/**
 * Runs `once`; while it fails with an error `shouldRetry` accepts, runs it again after the
 * schedule's next delay, until the schedule is done (then the last error stands). Unlike
 * `Effect.retry`, nothing is built on the path that succeeds at once: the driver comes to life
 * with the first failure.
 */
export const retryWhile = <A, E, R>(
  once: Effect.Effect<A, E, R>,
  schedule: () => Schedule.Schedule<unknown, E>,
  shouldRetry: (error: E) => boolean
): Effect.Effect<A, E, R> => Effect.catchAll(once, (first) => retryAfter(first, once, schedule, shouldRetry))

/**
 * What `retryWhile` does once `once` has failed with `first`: for a first attempt made outside
 * any Effect (the Dispatcher's request path), the retries go on from here, by the same schedule.
 */
export const retryAfter = <A, E, R>(
  first: E,
  once: Effect.Effect<A, E, R>,
  schedule: () => Schedule.Schedule<unknown, E>,
  shouldRetry: (error: E) => boolean
): Effect.Effect<A, E, R> =>
  shouldRetry(first)
    ? Effect.flatMap(Schedule.driver(schedule()), (driver) => {
      const again = (error: E): Effect.Effect<A, E, R> =>
        driver.next(error).pipe(
          Effect.matchEffect({
            onFailure: () => Effect.fail(error),
            onSuccess: () => Effect.catchAll(once, (next) => shouldRetry(next) ? again(next) : Effect.fail(next))
          })
        )
      return again(first)
    })
    : Effect.fail(first)
