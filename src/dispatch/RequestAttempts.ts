import { Data, Duration, Effect, Exit, FiberId } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import {
  AllAttemptsFailed,
  type DispatchError,
  type FailedAttempt,
  InstanceUnavailable,
  NoHealthyInstance,
  RequestRejected,
  UpstreamTimeout
} from "../domain/GatewayError.js"
import type { InstanceView } from "../domain/InstanceView.js"
import { redactUrlsIn } from "../domain/redact.js"
import type { RequestLogFields } from "../observability/RequestLog.js"
import type { InstanceState } from "../instance/InstanceState.js"
import type { TemplateState } from "../registry/Registry.js"
import type { SelectionContext, Strategy } from "../strategy/StrategyPlugin.js"
import type { RequestTimeout, TransportError } from "../transport/TransportError.js"
import { Deadline } from "./Deadline.js"
import type { StatsShape } from "../observability/Stats.js"
import { isoTime, type TimerShape } from "../clock/Timer.js"

/**
 * The dispatch core: one request's attempts as a small synchronous state machine, written once
 * for both drivers of the Dispatcher (the callback driver of the request path, without a fiber;
 * the Effect driver of `execute`, under the retry Schedule). As undici's `dispatch` with its
 * handlers: the core decides (which instance, admitted or not, what a failure means, whether
 * another instance may take it, what is recorded); a driver only runs the sends and the waits.
 *
 *   choose ──▶ Send(instance) ──(driver sends)──▶ ended(exit) ──▶ Done(exit)
 *     │   └──▶ Select(candidates): a strategy with only an Effect `select`; then picked(instance)
 *     └──▶ Refused(error)                                     └──▶ Retry: after the schedule's delay, choose again
 */

/** What a request ended as, for its stats and request line. */
export interface Outcome {
  readonly outcome: string
  readonly status: number
}

export const OK: Outcome = { outcome: "ok", status: 200 }
export const CANCELLED: Outcome = { outcome: "cancelled", status: 499 }

/** An attempt on `instance` failed; whether the next one may go elsewhere is the core's call (`mayRetry`). */
export class AttemptFailed extends Data.TaggedError("AttemptFailed")<{
  readonly instance: InstanceState
  readonly error: TransportError
}> {}

/** What one request asks of the core (an Operation's policy, without its send). */
export interface AttemptPolicy<A> {
  readonly method: string
  readonly subject?: string | undefined
  /** The instance it must go to: no selection, no failover. */
  readonly instance?: InstanceState | undefined
  readonly ineligible?: ((instance: InstanceState) => string | undefined) | undefined
  readonly retryable: (error: TransportError) => boolean
  readonly classify?: ((value: A) => Outcome | undefined) | undefined
}

/** The next step of a request, for its driver. */
export type Step =
  /** Send the attempt to `instance` (admitted, counted as tried). */
  | { readonly _tag: "Send"; readonly instance: InstanceState; readonly attempt: number }
  /** No attempt: the request fails so. */
  | { readonly _tag: "Refused"; readonly error: DispatchError }
  /** The template's strategy chooses only as an Effect: run `select`, then `picked`. */
  | { readonly _tag: "Select"; readonly candidates: NonEmptyReadonlyArray<InstanceState>; readonly context: SelectionContext }

/** What an attempt's end means: the request's answer, or another attempt (after the retry schedule's delay). */
export type Conclusion<A> =
  | { readonly _tag: "Done"; readonly exit: Exit.Exit<A, DispatchError> }
  | { readonly _tag: "Retry"; readonly failure: AttemptFailed }

/** Observes a request without changing how it runs (tracing, routing lines at debug): see dispatchObservers.ts. */
export interface AttemptObserver {
  /** A balanced choice among `candidates` (undefined: refused). */
  readonly chose: (candidates: ReadonlyArray<InstanceState>, instance: InstanceState | undefined, attempt: number) => void
}

/** What the core needs from the gateway, resolved once per Dispatcher. */
export interface CoreServices {
  readonly timer: TimerShape
  readonly stats: StatsShape
  /** The template's strategy, when it is built (undefined: the driver builds it, as an Effect). */
  readonly strategyOf: (template: TemplateState) => Strategy | undefined
  /** A uniform random number in [0, 1) from the gateway's Random (for the breaker's jitter). */
  readonly random: () => number
}

const NONE_TRIED: ReadonlySet<InstanceState> = new Set()

/**
 * The instances that may take a request now, not tried yet (the unhealthy ones as a last resort
 * with fail_open). An instance whose lists drifted from the pins (`offerDrifted`, under
 * `route_to_pinned`) is left out while any selectable instance matches, tried or not, so that a
 * retry does not land on it either; when none matches, the drifted ones serve (the pins' own
 * policy then decides what clients see of their changes: docs/security.md).
 */
export const candidatesOf = (template: TemplateState, now: number, tried: ReadonlySet<InstanceState> = NONE_TRIED) => {
  let candidates: Array<InstanceState> = []
  let drifted: Array<InstanceState> | undefined
  let matching = false
  for (const i of template.instances.values()) {
    if (i.offerDrifted) {
      if (!tried.has(i) && i.selectable(now)) (drifted ??= []).push(i)
    } else if (tried.has(i)) {
      if (!matching) matching = i.selectable(now)
    } else if (i.selectable(now)) {
      matching = true
      candidates.push(i)
    }
  }
  if (!matching && drifted !== undefined) candidates = drifted
  if (candidates.length === 0 && template.settings.fail_open) {
    // Nothing healthy: the template asked for its unhealthy instances rather than a refusal.
    for (const i of template.instances.values()) if (!tried.has(i) && i.lastResort) candidates.push(i)
  }
  return candidates
}

const noHealthyInstance = (template: TemplateState, now: number) => {
  let soonest: number | undefined
  for (const i of template.instances.values()) {
    const s = i.secondsUntilChange(now)
    if (s !== undefined && (soonest === undefined || s < soonest)) soonest = s
  }
  return new NoHealthyInstance({
    template: template.name,
    total: template.instances.size,
    retryAfterSeconds: Math.max(1, soonest ?? Math.ceil(Duration.toSeconds(template.settings.health_check_interval)))
  })
}

/** Whether the template has room for one more ejection (never all of it: see outlier_max_ejection_percent). */
const mayEject = (template: TemplateState, now: number) => {
  let ejected = 0
  for (const i of template.instances.values()) if (i.outlier.isEjected(now)) ejected++
  return ejected < Math.floor((template.instances.size * template.settings.outlier_max_ejection_percent) / 100)
}

export const timedOut = (template: TemplateState) =>
  new UpstreamTimeout({
    template: template.name,
    timeoutSeconds: Duration.toSeconds(template.settings.timeout),
    resetsOnProgress: template.settings.timeout_resets_on_progress
  })

/** A pinned instance that cannot take the request now. */
const unavailable = (template: TemplateState, pinned: InstanceState, now: number) =>
  new InstanceUnavailable({
    template: template.name,
    instanceId: pinned.id,
    reason: pinned.status === "failed"
      ? `its process failed (${redactUrlsIn(pinned.lastError ?? "restarted too often")})`
      : "its circuit breaker is open",
    retryAfterSeconds: Math.max(1, pinned.secondsUntilChange(now) ?? 1)
  })

/** A strategy that chose something that was not offered: the plugin's bug, the request's defect. */
export class NotACandidate extends Error {
  constructor(template: string, strategy: string) {
    super(`the strategy ${strategy} of template ${template} chose an instance that is not one of its candidates`)
  }
}

/**
 * One request's attempts. Created by a driver when the request starts; the driver asks `next`,
 * sends what it says, and hands the attempt's end to `ended`, until `Done`. Nothing here waits
 * or forks: the time comes from the Timer, and a failure's warnings are an Effect the driver runs.
 */
export class RequestAttempts<A> {
  readonly started: number
  readonly deadline: Deadline
  private readonly tried = new Set<InstanceState>()
  private readonly failures: Array<FailedAttempt> = []
  /** The instance of the last attempt (or the pinned one that was refused). */
  last: InstanceState | undefined = undefined
  /** Attempts sent. */
  count = 0
  private attemptStarted = 0
  /** The attempt in flight has ended (or was cancelled): nothing of it counts twice. */
  private inFlight = false

  constructor(
    readonly template: TemplateState,
    readonly policy: AttemptPolicy<A>,
    private readonly services: CoreServices,
    private readonly observer: AttemptObserver | undefined
  ) {
    const timer = services.timer
    const settings = template.settings
    this.started = timer.elapsedMs()
    this.deadline = new Deadline(
      timer,
      timer.now(),
      Duration.toMillis(settings.timeout),
      Duration.toMillis(settings.max_timeout),
      settings.timeout_resets_on_progress
    )
  }

  /** An attempt is in flight (sent, not ended, not cancelled). */
  get attempting(): boolean {
    return this.inFlight
  }

  get pinned(): boolean {
    return this.policy.instance !== undefined
  }

  /** Choose and admit the next attempt's instance. */
  next(): Step {
    const now = this.services.timer.now()
    const template = this.template
    const pinned = this.policy.instance
    if (pinned !== undefined) {
      this.last = pinned
      if (pinned.status === "failed" || !pinned.admit(now)) return { _tag: "Refused", error: unavailable(template, pinned, now) }
      return this.send(pinned)
    }
    let candidates = candidatesOf(template, now, this.tried)
    const ineligible = this.policy.ineligible
    if (ineligible !== undefined) {
      candidates = candidates.filter((i) => {
        const reason = ineligible(i)
        if (reason === undefined) return true
        // Left out for good: the attempts report says why, once.
        this.tried.add(i)
        this.failures.push({ instanceId: i.id, message: reason })
        return false
      })
    }
    const attempt = this.tried.size + 1
    if (candidates.length === 0) {
      this.observer?.chose(candidates, undefined, attempt)
      return {
        _tag: "Refused",
        error: this.tried.size === 0 ? noHealthyInstance(template, now) : new AllAttemptsFailed({ template: template.name, attempts: this.failures })
      }
    }
    if (candidates.length === 1) return this.picked(candidates, candidates[0]!)
    const selectNow = this.services.strategyOf(template)?.selectNow
    const context: SelectionContext = { template: template.name, method: this.policy.method, attempt }
    const all = candidates as unknown as NonEmptyReadonlyArray<InstanceState>
    if (selectNow === undefined) return { _tag: "Select", candidates: all, context }
    // (A plugin that throws fails its request as a defect: the driver answers it, not the gateway.)
    return this.picked(all, selectNow(all, context))
  }

  /** The strategy's pick among `candidates`: admitted (a half-open breaker gives this request its trial). */
  picked(candidates: ReadonlyArray<InstanceState>, chosen: InstanceView): Step {
    const instance = chosen as InstanceState
    if (!candidates.includes(instance)) throw new NotACandidate(this.template.name, this.template.settings.strategy)
    this.observer?.chose(candidates, instance, this.tried.size + 1)
    instance.admit(this.services.timer.now())
    return this.send(instance)
  }

  private send(instance: InstanceState): Step {
    if (this.last !== undefined && this.count > 0) this.services.stats.recordRetry(this.template.name, this.last.id)
    if (!this.pinned) this.tried.add(instance)
    this.last = instance
    this.count++
    if (!this.pinned && this.deadline.remainingMs() <= 0) return { _tag: "Refused", error: timedOut(this.template) }
    this.attemptStarted = this.services.timer.elapsedMs()
    this.inFlight = true
    instance.activeRequests++
    return { _tag: "Send", instance, attempt: this.count }
  }

  /**
   * The attempt in flight ended: its in-flight count, latency, success rate, outlier and breaker
   * state and the stats, recorded; then what it means. `logs`: the failure's warnings, for the
   * driver to write. Undefined when the attempt had already ended (or was cancelled).
   */
  ended(exit: Exit.Exit<A, TransportError | RequestTimeout>): { readonly conclusion: Conclusion<A>; readonly logs: Effect.Effect<void> | undefined } | undefined {
    if (!this.inFlight) return undefined
    this.inFlight = false
    const instance = this.last!
    const logs = this.record(instance, exit)
    return { conclusion: this.conclude(instance, exit), logs }
  }

  /** The request was cancelled (the client left, or said so): the attempt in flight counts for nothing. */
  cancelled(): void {
    if (!this.inFlight) return
    this.inFlight = false
    this.record(this.last!, Exit.interrupt(FiberId.none))
  }

  private record(instance: InstanceState, exit: Exit.Exit<unknown, TransportError | RequestTimeout>): Effect.Effect<void> | undefined {
    const { stats, timer } = this.services
    const template = this.template
    instance.activeRequests--
    const settings = template.settings
    const latencyMs = timer.elapsedMs() - this.attemptStarted
    if (Exit.isSuccess(exit)) {
      instance.succeeded(latencyMs, timer.now(), settings)
      stats.recordAttempt(template.name, instance.id, latencyMs)
      return undefined
    }
    const failure = exit.cause._tag === "Fail" ? exit.cause.error : undefined
    // Interrupted (the client left or cancelled), the client's message was refused, or the
    // server ended the client's session: nothing said about the instance.
    if (failure === undefined || (failure._tag === "TransportError" && (failure.clientFault || failure.sessionEnded))) {
      instance.neutral()
      return undefined
    }
    stats.recordAttempt(template.name, instance.id, latencyMs)
    const now = timer.now()
    const events = instance.failed(now, settings, this.services.random(), mayEject(template, now))
    const logs: Array<Effect.Effect<void>> = [Effect.logWarning(redactUrlsIn(failure.message))]
    if (events.ejectedForMs !== undefined) {
      stats.recordEjection(template.name, instance.id)
      logs.push(Effect.logWarning(
        `ejected from balancing for ${Math.round(events.ejectedForMs / 1000)}s after ` +
          `${settings.outlier_consecutive_failures} failures in a row (last: ${redactUrlsIn(failure.message)})`
      ))
    }
    if (events.breakerOpened) {
      stats.recordBreakerOpened(template.name, instance.id)
      logs.push(Effect.logWarning(
        `circuit breaker opened after ${instance.breaker.consecutiveFailures} failures in a row; ` +
          `next trial at ${isoTime(instance.breaker.nextTrialAt!)}`
      ))
    }
    return Effect.all(logs, { discard: true }).pipe(Effect.annotateLogs({ instance: `${instance.template}/${instance.id}` }))
  }

  private conclude(instance: InstanceState, exit: Exit.Exit<A, TransportError | RequestTimeout>): Conclusion<A> {
    // (A success carries no error: the same object, as the request's exit.)
    if (Exit.isSuccess(exit)) return { _tag: "Done", exit: exit as Exit.Exit<A, never> }
    const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
    // A defect (a transport that threw) or an interruption: the request ends with it.
    if (error === undefined) return { _tag: "Done", exit: exit as Exit.Exit<never, never> }
    if (error._tag === "RequestTimeout") return { _tag: "Done", exit: Exit.fail(timedOut(this.template)) }
    const failed = new AttemptFailed({ instance, error })
    if (this.pinned) {
      return {
        _tag: "Done",
        exit: Exit.fail(
          error.clientFault
            ? new RequestRejected({ template: this.template.name, instanceId: instance.id, message: redactUrlsIn(error.message) })
            : new AllAttemptsFailed({ template: this.template.name, attempts: [{ instanceId: instance.id, message: redactUrlsIn(error.message) }] })
        )
      }
    }
    this.failures.push({ instanceId: instance.id, message: redactUrlsIn(error.message) })
    return this.mayRetry(failed) ? { _tag: "Retry", failure: failed } : { _tag: "Done", exit: Exit.fail(this.failure(failed)) }
  }

  /** Worth a retry: another instance may take it (no waiting for a retry that cannot happen). */
  mayRetry(e: DispatchError | AttemptFailed): e is AttemptFailed {
    return e._tag === "AttemptFailed" && !this.pinned && !e.error.clientFault && this.policy.retryable(e.error) &&
      candidatesOf(this.template, this.services.timer.now(), this.tried).length > 0
  }

  /** What the client is told when no attempt succeeded (the last failure, or the refusal). */
  failure(e: DispatchError | AttemptFailed): DispatchError {
    if (e._tag !== "AttemptFailed") return e
    if (e.error.clientFault) {
      return new RequestRejected({ template: this.template.name, instanceId: e.instance.id, message: redactUrlsIn(e.error.message) })
    }
    return new AllAttemptsFailed({
      template: this.template.name,
      attempts: this.failures,
      notRetriedReason: this.policy.retryable(e.error)
        ? undefined
        : "a tools/call is not retried on another instance once it may have reached a backend"
    })
  }

  /** The request's outcome, from how it ended (the error table's kind and status, in one call). */
  outcomeOf(exit: Exit.Exit<A, DispatchError>): Outcome {
    if (Exit.isSuccess(exit)) return this.policy.classify?.(exit.value) ?? OK
    if (exit.cause._tag !== "Fail") return CANCELLED
    return { outcome: exit.cause.error.kind, status: exit.cause.error.httpStatus }
  }

  /** The request's end, in one place: its stats now, and the fields of its request line (which the driver writes). */
  end(outcome: Outcome): RequestLogFields {
    const template = this.template
    const latencyMs = this.services.timer.elapsedMs() - this.started
    // A refused pinned request made no attempt.
    const attempts = this.count
    this.services.stats.recordRequest({
      template: template.name,
      operation: this.policy.method,
      strategy: template.settings.strategy,
      instanceId: this.last?.id,
      latencyMs,
      outcome: outcome.outcome
    })
    return {
      template: template.name,
      operation: this.policy.method,
      subject: this.policy.subject,
      instance: this.last?.id ?? "",
      strategy: template.settings.strategy,
      attempts,
      outcome: outcome.outcome,
      status: outcome.status,
      duration_ms: Math.round(latencyMs * 100) / 100
    }
  }
}
