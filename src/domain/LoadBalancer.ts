import { Duration, Schema } from "effect"

const PositiveSeconds = Schema.Number.pipe(
  Schema.filter((n) => (Number.isFinite(n) && n > 0) || `expected a positive number of seconds, got ${n}`)
)

const Retries = Schema.Number.pipe(
  Schema.filter((n) => (Number.isInteger(n) && n >= 0 && n <= 100) || `expected an integer from 0 to 100, got ${n}`)
)

/** `load_balancer` as written for a template (or as the gateway-wide defaults): every field optional. */
export const LoadBalancerInput = Schema.Struct({
  strategy: Schema.optional(
    Schema.String.pipe(Schema.filter((s) => s.length > 0 || "expected a strategy name or a module path"))
  ),
  strategy_options: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  health_check_interval: Schema.optional(PositiveSeconds),
  health_check_timeout: Schema.optional(PositiveSeconds),
  max_retries: Schema.optional(Retries),
  timeout: Schema.optional(PositiveSeconds),
  /**
   * MCP endpoint sessions: `sticky` pins a client session to one instance; `none` balances
   * each request on its own (for stateless servers).
   */
  session_affinity: Schema.optional(Schema.Literal("sticky", "none")),
  /**
   * stdio instances and MCP endpoint sessions: `shared` (one process for every session) or
   * `per_session` (a process of its own for each client session, initialized with the client's
   * capabilities, for servers that ask their client for sampling, elicitation or roots).
   */
  session_process: Schema.optional(Schema.Literal("shared", "per_session")),
  /** With `per_session`: how many client sessions (processes) one instance may have at once. */
  max_sessions_per_instance: Schema.optional(Retries.pipe(Schema.filter((n) => n >= 1 || "expected at least 1"))),
  /** Client sessions unused for this long are ended (their processes stopped). */
  session_idle_timeout: Schema.optional(PositiveSeconds)
})
export type LoadBalancerInput = typeof LoadBalancerInput.Type

/** Resolved settings of one template: every field has its value. Times are in seconds. */
export interface LoadBalancerSettings {
  readonly strategy: string
  readonly strategy_options: Readonly<Record<string, unknown>>
  readonly health_check_interval: number
  readonly health_check_timeout: number
  readonly max_retries: number
  readonly timeout: number
  readonly session_affinity: "sticky" | "none"
  readonly session_process: "shared" | "per_session"
  readonly max_sessions_per_instance: number
  readonly session_idle_timeout: number
}

/** The one place where each default is written. */
export const DEFAULT_LOAD_BALANCER: LoadBalancerSettings = {
  strategy: "round_robin",
  strategy_options: {},
  health_check_interval: 30,
  health_check_timeout: 10,
  max_retries: 3,
  timeout: 60,
  session_affinity: "sticky",
  session_process: "shared",
  max_sessions_per_instance: 16,
  session_idle_timeout: 1800
}

/** Fills what a template leaves unset from the gateway-wide defaults. */
export const resolveLoadBalancer = (
  defaults: LoadBalancerSettings,
  input: LoadBalancerInput | undefined
): LoadBalancerSettings => ({
  strategy: input?.strategy ?? defaults.strategy,
  strategy_options: input?.strategy_options ?? defaults.strategy_options,
  health_check_interval: input?.health_check_interval ?? defaults.health_check_interval,
  health_check_timeout: input?.health_check_timeout ?? defaults.health_check_timeout,
  max_retries: input?.max_retries ?? defaults.max_retries,
  timeout: input?.timeout ?? defaults.timeout,
  session_affinity: input?.session_affinity ?? defaults.session_affinity,
  session_process: input?.session_process ?? defaults.session_process,
  max_sessions_per_instance: input?.max_sessions_per_instance ?? defaults.max_sessions_per_instance,
  session_idle_timeout: input?.session_idle_timeout ?? defaults.session_idle_timeout
})

export const seconds = (s: number): Duration.Duration => Duration.millis(Math.round(s * 1000))
