import { Duration, Schema } from "effect"

const positive = (unit: string) =>
  Schema.Number.pipe(Schema.filter((n) => (Number.isFinite(n) && n > 0) || `expected a positive number of ${unit}, got ${n}`))

const nonNegative = (unit: string) =>
  Schema.Number.pipe(Schema.filter((n) => (Number.isFinite(n) && n >= 0) || `expected a number of ${unit} (0 or more), got ${n}`))

const integer = (min: number, max: number) =>
  Schema.Number.pipe(
    Schema.filter((n) => (Number.isInteger(n) && n >= min && n <= max) || `expected an integer from ${min} to ${max}, got ${n}`)
  )

const Seconds = positive("seconds")
const Fraction = Schema.Number.pipe(Schema.filter((n) => (n >= 0 && n <= 1) || `expected a number from 0 to 1, got ${n}`))
const Options = Schema.Record({ key: Schema.String, value: Schema.Unknown })

/** An exponential backoff as users write it: the first delay, the cap, and how much each delay may vary (0.2 = ±20%). */
const BackoffInput = Schema.Struct({
  base_delay_ms: Schema.optional(nonNegative("milliseconds")),
  max_delay_ms: Schema.optional(nonNegative("milliseconds")),
  jitter: Schema.optional(Fraction)
})
export type BackoffInput = typeof BackoffInput.Type

/** `load_balancer` as written for a template (or as the gateway-wide defaults): every field optional. Times in seconds. */
export const LoadBalancerInput = Schema.Struct({
  strategy: Schema.optional(
    Schema.String.pipe(Schema.filter((s) => s.length > 0 || "expected a strategy name or a module path"))
  ),
  strategy_options: Schema.optional(Options),
  /** `mcp_ping` (default), `http_get`, or a plugin by path. */
  health_probe: Schema.optional(
    Schema.String.pipe(Schema.filter((s) => s.length > 0 || "expected a health probe name or a module path"))
  ),
  health_probe_options: Schema.optional(Options),
  health_check_interval: Schema.optional(Seconds),
  health_check_timeout: Schema.optional(Seconds),
  /** Consecutive failed probes that make a healthy instance unhealthy. */
  unhealthy_threshold: Schema.optional(integer(1, 100)),
  /** Consecutive successful probes that make an unhealthy instance healthy. */
  healthy_threshold: Schema.optional(integer(1, 100)),
  max_retries: Schema.optional(integer(0, 100)),
  /** The delay before each retry (always on another instance). */
  retry: Schema.optional(BackoffInput),
  timeout: Schema.optional(Seconds),
  /** A request whose backend reports progress gets a fresh `timeout` with each report, up to `max_timeout`. */
  timeout_resets_on_progress: Schema.optional(Schema.Boolean),
  max_timeout: Schema.optional(Seconds),
  /** Failures in a row on live traffic that eject an instance from balancing (0: never). */
  outlier_consecutive_failures: Schema.optional(integer(0, 1000)),
  outlier_base_ejection: Schema.optional(Seconds),
  outlier_max_ejection: Schema.optional(Seconds),
  /** At most this share of a template's instances is ejected at once (a lone instance never is). */
  outlier_max_ejection_percent: Schema.optional(integer(0, 100)),
  /** A health probe that passes ends an ejection (as Envoy's `successful_active_health_check_uneject_host`). */
  outlier_uneject_on_probe: Schema.optional(Schema.Boolean),
  circuit_breaker: Schema.optional(Schema.Struct({
    /** Failures in a row that open the breaker (0: no breaker). */
    failure_threshold: Schema.optional(integer(0, 1000)),
    ...BackoffInput.fields
  })),
  /** With nothing healthy, send traffic to unhealthy instances rather than refuse it. */
  fail_open: Schema.optional(Schema.Boolean),
  /** How long a removed instance (and shutdown) lets requests in flight finish. */
  drain_timeout: Schema.optional(nonNegative("seconds")),
  /** A stdio process (legacy SSE stream) that exits is restarted; more than this many restarts within `restart_window` marks it failed. */
  max_restarts: Schema.optional(integer(0, 1000)),
  restart_window: Schema.optional(Seconds),
  restart_backoff: Schema.optional(BackoffInput),
  /**
   * MCP endpoint sessions: `sticky` pins a client session to one instance; `none` balances
   * each request on its own (for stateless servers).
   */
  session_affinity: Schema.optional(Schema.Literal("sticky", "none")),
  /**
   * stdio and legacy SSE instances, MCP endpoint sessions: `auto` (the default: a client session
   * shares the instance's process only when sharing cannot change what it sees; otherwise it
   * gets a process of its own), `shared` (one process for every session, whatever the client
   * declared) or `per_session` (a process of its own for each client session).
   */
  session_process: Schema.optional(Schema.Literal("auto", "shared", "per_session")),
  /** How many client sessions with a process of their own one instance may have at once. */
  max_sessions_per_instance: Schema.optional(integer(1, 100_000)),
  /** Client sessions unused for this long are ended (their processes stopped). */
  session_idle_timeout: Schema.optional(Seconds),
  /**
   * A client session with a process of its own that has nothing in flight, no stream open and
   * no request for this long is ended, and its process stopped (clients that leave without DELETE).
   */
  session_process_idle_timeout: Schema.optional(Seconds),
  /** stdio instances: processes kept started and waiting for a new session's `initialize` (counted in max_sessions_per_instance). */
  warm_processes: Schema.optional(integer(0, 100))
})
export type LoadBalancerInput = typeof LoadBalancerInput.Type

/** An exponential backoff, decoded: delay n is `base × 2^(n-1)`, varied by ±`jitter`, never above `max`. */
export interface Backoff {
  readonly base: Duration.Duration
  readonly max: Duration.Duration
  readonly jitter: number
}

/** Resolved settings of one template: every field has its value, every time is a Duration. */
export interface LoadBalancerSettings {
  readonly strategy: string
  readonly strategy_options: Readonly<Record<string, unknown>>
  readonly health_probe: string
  readonly health_probe_options: Readonly<Record<string, unknown>>
  readonly health_check_interval: Duration.Duration
  readonly health_check_timeout: Duration.Duration
  readonly unhealthy_threshold: number
  readonly healthy_threshold: number
  readonly max_retries: number
  readonly retry: Backoff
  readonly timeout: Duration.Duration
  readonly timeout_resets_on_progress: boolean
  readonly max_timeout: Duration.Duration
  readonly outlier_consecutive_failures: number
  readonly outlier_base_ejection: Duration.Duration
  readonly outlier_max_ejection: Duration.Duration
  readonly outlier_max_ejection_percent: number
  readonly outlier_uneject_on_probe: boolean
  readonly circuit_breaker: Backoff & { readonly failure_threshold: number }
  readonly fail_open: boolean
  readonly drain_timeout: Duration.Duration
  readonly max_restarts: number
  readonly restart_window: Duration.Duration
  readonly restart_backoff: Backoff
  readonly session_affinity: "sticky" | "none"
  readonly session_process: "auto" | "shared" | "per_session"
  readonly max_sessions_per_instance: number
  readonly session_idle_timeout: Duration.Duration
  readonly session_process_idle_timeout: Duration.Duration
  readonly warm_processes: number
}

const backoff = (baseMs: number, maxMs: number, jitter: number): Backoff => ({
  base: Duration.millis(baseMs),
  max: Duration.millis(maxMs),
  jitter
})

/** The one place where each default is written. */
export const DEFAULT_LOAD_BALANCER: LoadBalancerSettings = {
  strategy: "round_robin",
  strategy_options: {},
  health_probe: "mcp_ping",
  health_probe_options: {},
  health_check_interval: Duration.seconds(30),
  health_check_timeout: Duration.seconds(10),
  unhealthy_threshold: 2,
  healthy_threshold: 1,
  max_retries: 3,
  retry: backoff(50, 1000, 0.2),
  timeout: Duration.seconds(60),
  timeout_resets_on_progress: true,
  max_timeout: Duration.minutes(10),
  outlier_consecutive_failures: 3,
  outlier_base_ejection: Duration.seconds(30),
  outlier_max_ejection: Duration.minutes(5),
  outlier_max_ejection_percent: 50,
  outlier_uneject_on_probe: true,
  circuit_breaker: { failure_threshold: 5, ...backoff(5000, 60_000, 0.2) },
  fail_open: false,
  drain_timeout: Duration.seconds(30),
  max_restarts: 5,
  restart_window: Duration.seconds(60),
  restart_backoff: backoff(1000, 30_000, 0.2),
  session_affinity: "sticky",
  session_process: "auto",
  max_sessions_per_instance: 16,
  session_idle_timeout: Duration.minutes(30),
  session_process_idle_timeout: Duration.minutes(2),
  warm_processes: 1
}

export const seconds = (s: number): Duration.Duration => Duration.millis(Math.round(s * 1000))

const resolveBackoff = (defaults: Backoff, input: BackoffInput | undefined): Backoff => ({
  base: input?.base_delay_ms === undefined ? defaults.base : Duration.millis(input.base_delay_ms),
  max: input?.max_delay_ms === undefined ? defaults.max : Duration.millis(input.max_delay_ms),
  jitter: input?.jitter ?? defaults.jitter
})

const orSeconds = (value: number | undefined, fallback: Duration.Duration) => value === undefined ? fallback : seconds(value)

/** Fills what a template leaves unset from the gateway-wide defaults; times become Durations here, once. */
export const resolveLoadBalancer = (
  defaults: LoadBalancerSettings,
  input: LoadBalancerInput | undefined
): LoadBalancerSettings => ({
  strategy: input?.strategy ?? defaults.strategy,
  strategy_options: input?.strategy_options ?? defaults.strategy_options,
  health_probe: input?.health_probe ?? defaults.health_probe,
  health_probe_options: input?.health_probe_options ?? defaults.health_probe_options,
  health_check_interval: orSeconds(input?.health_check_interval, defaults.health_check_interval),
  health_check_timeout: orSeconds(input?.health_check_timeout, defaults.health_check_timeout),
  unhealthy_threshold: input?.unhealthy_threshold ?? defaults.unhealthy_threshold,
  healthy_threshold: input?.healthy_threshold ?? defaults.healthy_threshold,
  max_retries: input?.max_retries ?? defaults.max_retries,
  retry: resolveBackoff(defaults.retry, input?.retry),
  timeout: orSeconds(input?.timeout, defaults.timeout),
  timeout_resets_on_progress: input?.timeout_resets_on_progress ?? defaults.timeout_resets_on_progress,
  max_timeout: orSeconds(input?.max_timeout, defaults.max_timeout),
  outlier_consecutive_failures: input?.outlier_consecutive_failures ?? defaults.outlier_consecutive_failures,
  outlier_base_ejection: orSeconds(input?.outlier_base_ejection, defaults.outlier_base_ejection),
  outlier_max_ejection: orSeconds(input?.outlier_max_ejection, defaults.outlier_max_ejection),
  outlier_max_ejection_percent: input?.outlier_max_ejection_percent ?? defaults.outlier_max_ejection_percent,
  outlier_uneject_on_probe: input?.outlier_uneject_on_probe ?? defaults.outlier_uneject_on_probe,
  circuit_breaker: {
    failure_threshold: input?.circuit_breaker?.failure_threshold ?? defaults.circuit_breaker.failure_threshold,
    ...resolveBackoff(defaults.circuit_breaker, input?.circuit_breaker)
  },
  fail_open: input?.fail_open ?? defaults.fail_open,
  drain_timeout: input?.drain_timeout === undefined ? defaults.drain_timeout : Duration.millis(Math.round(input.drain_timeout * 1000)),
  max_restarts: input?.max_restarts ?? defaults.max_restarts,
  restart_window: orSeconds(input?.restart_window, defaults.restart_window),
  restart_backoff: resolveBackoff(defaults.restart_backoff, input?.restart_backoff),
  session_affinity: input?.session_affinity ?? defaults.session_affinity,
  session_process: input?.session_process ?? defaults.session_process,
  max_sessions_per_instance: input?.max_sessions_per_instance ?? defaults.max_sessions_per_instance,
  session_idle_timeout: orSeconds(input?.session_idle_timeout, defaults.session_idle_timeout),
  session_process_idle_timeout: orSeconds(input?.session_process_idle_timeout, defaults.session_process_idle_timeout),
  warm_processes: input?.warm_processes ?? defaults.warm_processes
})

/**
 * The nth delay of a backoff (n from 1): `base × 2^(n-1)`, varied by ±jitter with `random`
 * (a number in [0, 1)), capped at `max`. For the state machines that keep their own time (the
 * breaker's cool-down, restarts); request retries use the same numbers as a Schedule.
 */
export const backoffDelayMs = (backoff: Backoff, n: number, random: number): number => {
  const base = Duration.toMillis(backoff.base) * 2 ** Math.max(0, n - 1)
  const varied = base * (1 + backoff.jitter * (2 * random - 1))
  return Math.min(Duration.toMillis(backoff.max), Math.max(0, varied))
}

const secondsOf = (d: Duration.Duration) => Duration.toMillis(d) / 1000
const backoffJson = (b: Backoff) => ({ base_delay_ms: Duration.toMillis(b.base), max_delay_ms: Duration.toMillis(b.max), jitter: b.jitter })

/** The settings as users write them (seconds, milliseconds): what `/gateway/registry` shows. */
export const loadBalancerJson = (s: LoadBalancerSettings) => ({
  strategy: s.strategy,
  strategy_options: s.strategy_options,
  health_probe: s.health_probe,
  health_probe_options: s.health_probe_options,
  health_check_interval: secondsOf(s.health_check_interval),
  health_check_timeout: secondsOf(s.health_check_timeout),
  unhealthy_threshold: s.unhealthy_threshold,
  healthy_threshold: s.healthy_threshold,
  max_retries: s.max_retries,
  retry: backoffJson(s.retry),
  timeout: secondsOf(s.timeout),
  timeout_resets_on_progress: s.timeout_resets_on_progress,
  max_timeout: secondsOf(s.max_timeout),
  outlier_consecutive_failures: s.outlier_consecutive_failures,
  outlier_base_ejection: secondsOf(s.outlier_base_ejection),
  outlier_max_ejection: secondsOf(s.outlier_max_ejection),
  outlier_max_ejection_percent: s.outlier_max_ejection_percent,
  outlier_uneject_on_probe: s.outlier_uneject_on_probe,
  circuit_breaker: { failure_threshold: s.circuit_breaker.failure_threshold, ...backoffJson(s.circuit_breaker) },
  fail_open: s.fail_open,
  drain_timeout: secondsOf(s.drain_timeout),
  max_restarts: s.max_restarts,
  restart_window: secondsOf(s.restart_window),
  restart_backoff: backoffJson(s.restart_backoff),
  session_affinity: s.session_affinity,
  session_process: s.session_process,
  max_sessions_per_instance: s.max_sessions_per_instance,
  session_idle_timeout: secondsOf(s.session_idle_timeout),
  session_process_idle_timeout: secondsOf(s.session_process_idle_timeout),
  warm_processes: s.warm_processes
})
