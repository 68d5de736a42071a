import { Clock, Context, Duration, Effect, FiberId, FiberSet, Layer } from "effect"

export interface TimerShape {
  /** The current time in epoch ms (the Clock's). */
  readonly now: () => number
  /**
   * A monotonic time in ms with sub-millisecond precision, for measuring durations (latency):
   * `performance.now()` live, the Clock's time under `layerTest` (so tests see exact latencies).
   */
  readonly elapsedMs: () => number
  /** Calls `callback` after `ms`; returns the function that cancels it. */
  readonly schedule: (ms: number, callback: () => void) => () => void
}

/** The live timer over a Clock: the Clock's time, plain `setTimeout`s (see Timer for why). */
const liveTimer = (clock: Clock.Clock): TimerShape => ({
  now: () => clock.unsafeCurrentTimeMillis(),
  elapsedMs: () => performance.now(),
  schedule: (ms, callback) => {
    const handle = setTimeout(callback, ms)
    return () => clearTimeout(handle)
  }
})

/**
 * The timer under every request's deadline, and the one clock of every view (stats, metrics),
 * cache and sweeper that runs outside a fiber. Request deadlines are armed and disarmed on every
 * call, so the live timer is a plain `setTimeout`: `Effect.timeout` (or a fiber sleeping on the
 * Clock) forks a fiber per call, which halved the request path's throughput when measured.
 * Inside an Effect, read Effect's `Clock` instead: it is the same clock.
 *
 * Layers, as Effect's own packages name them: `Timer.layer` (live) and `Timer.layerTest`, which
 * runs on the Clock of the fiber that builds the layer (the TestClock inside `it.effect`), so
 * `TestClock.adjust` drives every deadline, window, cache TTL and sweep.
 */
export class Timer extends Context.Tag("mcp-gateway/Timer")<Timer, TimerShape>() {
  /** The live timer: the Clock's time (the system's, unless a test replaced it), plain timers. */
  static readonly layer: Layer.Layer<Timer> = Layer.effect(Timer, Effect.map(Effect.clock, liveTimer))

  /**
   * For tests: everything on the Clock of the fiber that builds the layer (the TestClock inside
   * `it.effect`/`it.scoped`). A scheduled callback is a fiber sleeping on that Clock, in a
   * FiberSet of the layer's scope (none outlives the test), interrupted when cancelled.
   */
  static readonly layerTest: Layer.Layer<Timer> = Layer.scoped(
    Timer,
    Effect.gen(function*() {
      const clock = yield* Effect.clock
      const run = yield* FiberSet.makeRuntime<never>()
      return {
        now: () => clock.unsafeCurrentTimeMillis(),
        elapsedMs: () => clock.unsafeCurrentTimeMillis(),
        schedule: (ms, callback) => {
          const fiber = run(Effect.sleep(Duration.millis(ms)).pipe(Effect.zipRight(Effect.sync(callback))))
          return () => fiber.unsafeInterruptAsFork(FiberId.none)
        }
      }
    })
  )

  /** The former name of `Timer.layer`. */
  static readonly live: Layer.Layer<Timer> = Timer.layer
  /** The former name of `Timer.layerTest`. */
  static readonly fromClock: Layer.Layer<Timer> = Timer.layerTest
}

/**
 * The live timer on the system clock, for code that runs outside any layer (the CLI before the
 * gateway starts, unit tests of socket-level pieces that run in real time). The gateway's own
 * services take the Timer service instead.
 */
export const systemTimer: TimerShape = liveTimer(Clock.make())

/**
 * Calls `callback` every `everyMs` on `timer` (one pending schedule at a time, so the test
 * timer runs it under `TestClock.adjust` as the live one does); returns the function that stops it.
 */
export const repeat = (timer: TimerShape, everyMs: number, callback: () => void): () => void => {
  let cancel: (() => void) | undefined
  let stopped = false
  const tick = () => {
    if (stopped) return
    callback()
    if (!stopped) cancel = timer.schedule(everyMs, tick)
  }
  cancel = timer.schedule(everyMs, tick)
  return () => {
    stopped = true
    cancel?.()
  }
}

/** An ISO 8601 timestamp of an epoch-ms time read from the clock (the Timer or Effect's Clock). */
export const isoTime = (epochMs: number): string => new Date(epochMs).toISOString()
