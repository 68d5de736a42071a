import { Context, Duration, Effect, FiberId, Layer, Runtime } from "effect"

export interface TimerShape {
  /** The current time in epoch ms (the Clock's). */
  readonly now: () => number
  /**
   * A monotonic time in ms with sub-millisecond precision, for measuring durations (latency):
   * `performance.now()` live, the Clock's time under `fromClock` (so tests see exact latencies).
   */
  readonly elapsedMs: () => number
  /** Calls `callback` after `ms`; returns the function that cancels it. */
  readonly schedule: (ms: number, callback: () => void) => () => void
}

/**
 * The timer under every request's deadline. Request deadlines are armed and disarmed on every
 * call, so the live timer is a plain `setTimeout`: `Effect.timeout` (or a fiber sleeping on the
 * Clock) forks a fiber per call, which halved the request path's throughput when measured.
 * Tests use `Timer.fromClock`, which runs on the Clock of the fiber that builds the layer (the
 * TestClock inside `it.effect`), so `TestClock.adjust` drives every deadline.
 */
export class Timer extends Context.Tag("mcp-gateway/Timer")<Timer, TimerShape>() {
  static readonly live: Layer.Layer<Timer> = Layer.effect(
    Timer,
    Effect.map(Effect.clock, (clock) => ({
      now: () => clock.unsafeCurrentTimeMillis(),
      elapsedMs: () => performance.now(),
      schedule: (ms, callback) => {
        const handle = setTimeout(callback, ms)
        return () => clearTimeout(handle)
      }
    }))
  )

  static readonly fromClock: Layer.Layer<Timer> = Layer.effect(
    Timer,
    Effect.gen(function*() {
      const clock = yield* Effect.clock
      const runtime = yield* Effect.runtime<never>()
      return {
        now: () => clock.unsafeCurrentTimeMillis(),
        elapsedMs: () => clock.unsafeCurrentTimeMillis(),
        schedule: (ms, callback) => {
          const fiber = Runtime.runFork(runtime)(Effect.sleep(Duration.millis(ms)).pipe(Effect.zipRight(Effect.sync(callback))))
          return () => fiber.unsafeInterruptAsFork(FiberId.none)
        }
      }
    })
  )
}
