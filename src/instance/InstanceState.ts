import type { InstanceDefinition } from "../domain/Instance.js"
import type { HealthStatus, InstanceView } from "../domain/InstanceView.js"
import type { LoadBalancerSettings } from "../domain/LoadBalancer.js"
import { redactCommand, redactUrl, redactUrlsIn } from "../domain/redact.js"
import { ActiveHealth, type ProbeStatus } from "./ActiveHealth.js"
import { OutlierDetector } from "./OutlierDetector.js"
import { CircuitBreaker } from "./CircuitBreaker.js"
import { isoTime } from "../clock/Timer.js"
import type { ChannelStatus } from "../transport/Supervision.js"

/** Weight of the newest sample in the latency and success-rate averages. */
const EWMA_ALPHA = 0.2

/** How long an instance shows as saturated after a new session found every process slot busy. */
export const SATURATION_SHOWN_MS = 60_000

/** What one outcome on live traffic changed, for the log. */
export interface OutcomeEvents {
  /** The instance was ejected from balancing for this many ms. */
  readonly ejectedForMs?: number | undefined
  /** The breaker opened (its next trial is at `nextTrialAt`). */
  readonly breakerOpened?: boolean | undefined
}

/**
 * The live state of one instance: what strategies read (the InstanceView) and the state
 * machines behind its health: probes with hysteresis (ActiveHealth), passive outlier detection
 * on live traffic (OutlierDetector), the circuit breaker, and its shared channel's life (for
 * stdio: running, restarting, failed). Plain mutable fields on purpose: they change on every
 * request and the runtime is single-threaded; the Dispatcher, the HealthChecker and the
 * transport's reports are the only writers. Times are epoch ms from the Clock.
 */
export class InstanceState implements InstanceView {
  activeRequests = 0
  latencyMs: number | undefined = undefined
  successRate = 1
  /** Removed (deregistered, or gone from the config): no new requests, in-flight ones finish. */
  draining = false
  readonly health = new ActiveHealth()
  readonly outlier = new OutlierDetector()
  readonly breaker = new CircuitBreaker()
  /** The instance's shared channel, as its transport reports it (stdio and legacy SSE instances). */
  channel: ChannelStatus | undefined = undefined
  /** Its channel ended and no new one runs yet (restarting, starting again, or failed). */
  private channelDown = false
  /** Processes of client sessions' own it runs now, or starts (max_sessions_per_instance bounds them): ClientSessions writes it. */
  sessionProcesses = 0
  /** When a new client session last found every process slot of its template busy, none idle to end (ClientSessions writes it). */
  saturatedAt: number | undefined = undefined
  /**
   * Its own lists differ from its template's pins (drift between instances, under the
   * `route_to_pinned` policy): no new requests or sessions while another instance matches.
   * integrity/InstanceOffers.ts writes it; the dispatcher reads it (one boolean on the hot path).
   */
  offerDrifted = false
  /** Its own lists differ from its template's pins, whatever the policy makes of it (for views). */
  offerDiffers = false
  /** `registeredAt`: when the registry took the instance in (epoch ms from the Clock). */
  constructor(readonly definition: InstanceDefinition, readonly registeredAt: number) {}

  get id() {
    return this.definition.id
  }
  get template() {
    return this.definition.template
  }
  get weight() {
    return this.definition.weight
  }

  /**
   * What the instance's state adds up to: `failed` when its process restarted too often,
   * `unhealthy` while its process is down (until a restart succeeds) or when probes say so.
   */
  get status(): HealthStatus {
    if (this.channel?.state === "failed") return "failed"
    if (this.channelDown) return "unhealthy"
    return this.health.status
  }

  get lastError(): string | undefined {
    if (this.channelDown) return this.channel?.lastExit
    return this.health.status === "healthy" ? undefined : this.health.lastError
  }

  /** Eligible for a balanced request or a new session now (strategies choose among these). */
  selectable(now: number): boolean {
    const status = this.status
    return !this.draining && status !== "unhealthy" && status !== "failed" && !this.outlier.isEjected(now) &&
      this.breaker.allows(now)
  }

  /** Eligible as a last resort (`fail_open`): anything not removed. */
  get lastResort(): boolean {
    return !this.draining
  }

  /** A request is about to go out: the breaker lets it through (taking the trial when half-open), or not. */
  admit(now: number): boolean {
    return this.breaker.acquire(now)
  }

  /** The instance answered (a result or a JSON-RPC error: either way it works). */
  succeeded(latencyMs: number, now: number, settings: LoadBalancerSettings) {
    this.latencyMs = this.latencyMs === undefined ? latencyMs : this.latencyMs + EWMA_ALPHA * (latencyMs - this.latencyMs)
    this.successRate += EWMA_ALPHA * (1 - this.successRate)
    this.outlier.onSuccess(now, settings)
    this.breaker.onSuccess()
  }

  /** The instance failed a request (transport error, 5xx, timeout): evidence against it. */
  failed(now: number, settings: LoadBalancerSettings, random: number, mayEject: boolean): OutcomeEvents {
    this.successRate += EWMA_ALPHA * (0 - this.successRate)
    const ejectedForMs = this.outlier.onFailure(now, settings, mayEject)
    const breakerOpened = this.breaker.onFailure(now, settings.circuit_breaker, random)
    return { ejectedForMs, breakerOpened }
  }

  /** The request ended saying nothing of the instance (the client left, or its message was refused). */
  neutral() {
    this.breaker.onNeutral()
  }

  /** A probe started at `startedAt` passed: evidence for the instance, which may end its ejection (OutlierDetector). */
  probeSucceeded(now: number, settings: LoadBalancerSettings, startedAt = now): ProbeStatus | undefined {
    this.successRate += EWMA_ALPHA * (1 - this.successRate)
    this.outlier.onProbeSuccess(startedAt, now, settings)
    return this.health.succeeded(now, settings)
  }

  probeFailed(now: number, reason: string, settings: LoadBalancerSettings): ProbeStatus | undefined {
    this.successRate += EWMA_ALPHA * (0 - this.successRate)
    return this.health.failed(now, reason, settings)
  }

  /** The transport's report on the instance's shared channel. */
  channelChanged(status: ChannelStatus, now: number) {
    const was = this.channel?.state
    this.channel = status
    if (status.state === "restarting" || status.state === "failed") this.channelDown = true
    if (status.state === "running") {
      this.channelDown = false
      // A process that (re)started and answered `initialize` is as good as a passed probe.
      if (was !== "running") this.health.markHealthy(now)
    }
  }

  /** Seconds until something here may change its mind (an ejection ends, a breaker trial, a restart), if known. */
  secondsUntilChange(now: number): number | undefined {
    const times = [
      this.outlier.isEjected(now) ? this.outlier.ejectedUntil : undefined,
      this.breaker.state === "open" ? this.breaker.nextTrialAt : undefined,
      this.channel?.state === "restarting" ? this.channel.nextRestartAt : undefined,
      this.status === "unhealthy" ? this.health.nextProbeAt : undefined
    ].filter((t): t is number => t !== undefined && t > now)
    return times.length === 0 ? undefined : Math.ceil((Math.min(...times) - now) / 1000)
  }

  /** Whether a new client session found every process slot busy lately (within SATURATION_SHOWN_MS). */
  saturated(now: number): boolean {
    return this.saturatedAt !== undefined && now - this.saturatedAt < SATURATION_SHOWN_MS
  }

  /** The instance as `/gateway/registry` and `/mcp/{t}/health` show it. */
  toJSON(now: number) {
    const d = this.definition
    const channel = this.channel
    return {
      id: d.id,
      transport: d.transport,
      // Never a secret: URLs lose user:password and query values, secret-looking arguments their values.
      ...(d.transport === "stdio" ? { command: redactCommand(d.command), working_dir: d.working_dir } : { endpoint: redactUrl(d.endpoint) }),
      weight: d.weight,
      source: d.source,
      healthy: this.status === "healthy",
      status: this.status,
      draining: this.draining,
      active_requests: this.activeRequests,
      latency_ms: this.latencyMs === undefined ? null : Math.round(this.latencyMs * 100) / 100,
      success_rate: Math.round(this.successRate * 1000) / 1000,
      consecutive_failures: this.health.consecutiveFailures,
      last_checked_at: this.health.lastCheckedAt === undefined ? null : isoTime(this.health.lastCheckedAt),
      last_error: this.lastError === undefined ? null : redactUrlsIn(this.lastError),
      outlier: this.outlier.toJSON(now),
      circuit_breaker: this.breaker.toJSON(now),
      ...(d.transport === "http" ? {} : { session_processes: this.sessionProcesses, saturated: this.saturated(now) }),
      ...(channel === undefined ? {} : {
        process: {
          state: channel.state,
          pid: channel.pid ?? null,
          restarts: channel.restarts,
          last_exit: channel.lastExit === undefined ? null : redactUrlsIn(channel.lastExit),
          next_restart_at: channel.nextRestartAt === undefined ? null : isoTime(channel.nextRestartAt),
          stderr_tail: channel.stderrTail.map(redactUrlsIn)
        }
      }),
      registered_at: isoTime(this.registeredAt),
      ...(d.metadata ? { metadata: d.metadata } : {})
    }
  }
}
