import { Context, Data, Duration, Effect, Exit, Layer, Random } from "effect"
import {
  AllAttemptsFailed,
  BackendError,
  type DispatchError,
  type FailedAttempt,
  InstanceUnavailable,
  NoHealthyInstance,
  RequestRejected,
  TemplateNotFound,
  UpstreamTimeout
} from "../domain/GatewayError.js"
import { isObject, type JsonRpcNotification, type JsonRpcResponse } from "../domain/JsonRpc.js"
import { redactUrlsIn } from "../domain/redact.js"
import type { InstanceState } from "../registry/InstanceState.js"
import { Registry, type TemplateState } from "../registry/Registry.js"
import { Strategies } from "../strategy/Strategies.js"
import type { Connection, RequestOptions } from "../transport/Connection.js"
import { Transport } from "../transport/Transport.js"
import type { RequestTimeout, TransportError } from "../transport/TransportError.js"
import { Deadline } from "./Deadline.js"
import { retrySchedule, retryWhile } from "./RetryPolicy.js"
import { Stats } from "./Stats.js"
import { Timer } from "./Timer.js"

export interface DispatchResult {
  readonly result: unknown
  readonly instanceId: string
  readonly instance: InstanceState
}

export interface DispatchOptions {
  /**
   * The instance the request must go to, without selection or failover: a session's pinned
   * instance, or the one serving a list's first page.
   */
  readonly instance?: InstanceState | undefined
  /** How to reach `instance` when not through its shared connection (a client session's own backend session or process). */
  readonly connection?: Connection | undefined
  /** Where the server's notifications and requests about this request go (see RequestOptions). */
  readonly relay?: Pick<RequestOptions, "onNotification" | "onServerRequest"> | undefined
  /** Client headers the template forwards to its HTTP backends (`forward_headers`). */
  readonly headers?: Readonly<Record<string, string>> | undefined
}

/** One thing an instance does for the gateway, in the form `execute` runs it. */
export interface Operation<A> {
  readonly template: string
  /** For strategies and stats: the MCP method, or `initialize` for opening a session. */
  readonly method: string
  /** The instance it must go to: no selection, no failover. */
  readonly instance?: InstanceState | undefined
  /** Leaves instances out of the choice (a capacity limit), saying why. */
  readonly ineligible?: ((instance: InstanceState) => string | undefined) | undefined
  /** May a failed attempt be repeated on another instance? (Never for the client's own mistakes.) */
  readonly retryable: (error: TransportError) => boolean
  /** One attempt on one instance, under the request's deadline. */
  readonly attempt: (instance: InstanceState, deadline: Deadline) => Effect.Effect<A, TransportError | RequestTimeout>
  /** An answer that is an error for the client (a JSON-RPC error) while the instance did its job. */
  readonly isErrorAnswer?: ((value: A) => boolean) | undefined
}

export interface DispatcherShape {
  /**
   * One MCP request to a template: the strategy picks among the instances that may take it,
   * the breaker admits it, it runs under the template's deadline, and it fails over to other
   * instances (after the retry schedule's delay) up to `max_retries` times when that is safe.
   */
  readonly call: (
    template: string,
    method: string,
    params: Record<string, unknown> | undefined,
    options?: DispatchOptions
  ) => Effect.Effect<DispatchResult, DispatchError>
  /** The general form every instance-bound operation takes (calls, opening a client session). */
  readonly execute: <A>(operation: Operation<A>) => Effect.Effect<{ readonly value: A; readonly instance: InstanceState }, DispatchError>
}

/**
 * May this failure be sent to another instance? Reads and lists: any transport failure.
 * `tools/call` may have side effects: only when it provably never reached the backend.
 */
export const isRetryable = (method: string, error: TransportError): boolean =>
  method !== "tools/call" || !error.reachedBackend

/** An attempt on `instance` failed; whether the next one may go elsewhere is the retry policy's call. */
class AttemptFailed extends Data.TaggedError("AttemptFailed")<{
  readonly instance: InstanceState
  readonly error: TransportError
}> {}

/**
 * The one path of every request an instance serves. Each attempt: choose an instance (the
 * strategy, among those selectable; or the pinned one), admit it through its breaker, run it
 * under the request's deadline, and record the outcome in one place: in-flight count, latency,
 * success rate, outlier and breaker state (`InstanceState`), and `Stats`. Client mistakes and
 * clients that leave count for nothing.
 */
export class Dispatcher extends Context.Tag("mcp-gateway/Dispatcher")<Dispatcher, DispatcherShape>() {
  static readonly layer: Layer.Layer<Dispatcher, never, Registry | Strategies | Transport | Stats | Timer> = Layer.effect(
    Dispatcher,
    Effect.gen(function*() {
      const registry = yield* Registry
      const strategies = yield* Strategies
      const transport = yield* Transport
      const stats = yield* Stats
      const timer = yield* Timer

      const candidatesOf = (template: TemplateState, now: number, tried: ReadonlySet<InstanceState>) => {
        const candidates: Array<InstanceState> = []
        for (const i of template.instances.values()) if (!tried.has(i) && i.selectable(now)) candidates.push(i)
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

      /**
       * Runs one attempt on one instance, keeping its live numbers and health evidence current
       * (and, for an operation's only attempt, its stats: `done`), all in one exit handler.
       */
      const attemptOn = <A>(
        template: TemplateState,
        operation: Operation<A>,
        instance: InstanceState,
        deadline: Deadline,
        done?: (ok: boolean) => void
      ): Effect.Effect<A, TransportError | RequestTimeout> => {
        const started = performance.now()
        instance.activeRequests++
        return Effect.onExit(operation.attempt(instance, deadline), (exit): Effect.Effect<void> => {
          instance.activeRequests--
          const settings = template.settings
          if (Exit.isSuccess(exit)) {
            instance.succeeded(performance.now() - started, timer.now(), settings)
            done?.(!(operation.isErrorAnswer?.(exit.value) ?? false))
            return Effect.void
          }
          done?.(false)
          const failure = exit.cause._tag === "Fail" ? exit.cause.error : undefined
          // Interrupted (the client left or cancelled), or the client's message was refused.
          if (failure === undefined || (failure._tag === "TransportError" && failure.clientFault)) {
            instance.neutral()
            return Effect.void
          }
          return Effect.flatMap(Random.next, (random) => {
            const now = timer.now()
            const events = instance.failed(now, settings, random, mayEject(template, now))
            const logs: Array<Effect.Effect<void>> = [Effect.logWarning(redactUrlsIn(failure.message))]
            if (events.ejectedForMs !== undefined) {
              logs.push(Effect.logWarning(
                `ejected from balancing for ${Math.round(events.ejectedForMs / 1000)}s after ` +
                  `${settings.outlier_consecutive_failures} failures in a row (last: ${redactUrlsIn(failure.message)})`
              ))
            }
            if (events.breakerOpened) {
              logs.push(Effect.logWarning(
                `circuit breaker opened after ${instance.breaker.consecutiveFailures} failures in a row; ` +
                  `next trial at ${new Date(instance.breaker.nextTrialAt!).toISOString()}`
              ))
            }
            return Effect.all(logs, { discard: true }).pipe(Effect.annotateLogs({ instance: `${instance.template}/${instance.id}` }))
          })
        })
      }

      const execute = <A>(operation: Operation<A>) =>
        Effect.suspend((): Effect.Effect<{ readonly value: A; readonly instance: InstanceState }, DispatchError> => {
          const template = registry.template(operation.template)
          if (template === undefined) return Effect.fail(new TemplateNotFound({ template: operation.template }))
          const settings = template.settings
          const started = performance.now()
          const deadline = new Deadline(
            timer,
            timer.now(),
            Duration.toMillis(settings.timeout),
            Duration.toMillis(settings.max_timeout),
            settings.timeout_resets_on_progress
          )
          const record = (instance: InstanceState | undefined, ok: boolean) =>
            stats.recordRequest({
              template: template.name,
              strategy: settings.strategy,
              instanceId: instance?.id,
              latencyMs: performance.now() - started,
              ok
            })
          const timedOut = () =>
            new UpstreamTimeout({
              template: template.name,
              timeoutSeconds: Duration.toSeconds(settings.timeout),
              resetsOnProgress: settings.timeout_resets_on_progress
            })

          const pinned = operation.instance
          if (pinned !== undefined) {
            // The one instance it must go to: one attempt, no choice, no retry (the hot path of sessions).
            const now = timer.now()
            if (pinned.status === "failed" || !pinned.admit(now)) {
              record(pinned, false)
              return Effect.fail(new InstanceUnavailable({
                template: template.name,
                instanceId: pinned.id,
                reason: pinned.status === "failed"
                  ? `its process failed (${redactUrlsIn(pinned.lastError ?? "restarted too often")})`
                  : "its circuit breaker is open",
                retryAfterSeconds: Math.max(1, pinned.secondsUntilChange(now) ?? 1)
              }))
            }
            return attemptOn(template, operation, pinned, deadline, (ok) => record(pinned, ok)).pipe(
              Effect.mapBoth({
                onFailure: (e): DispatchError =>
                  e._tag === "RequestTimeout"
                    ? timedOut()
                    : e.clientFault
                    ? new RequestRejected({ template: template.name, instanceId: pinned.id, message: redactUrlsIn(e.message) })
                    : new AllAttemptsFailed({ template: template.name, attempts: [{ instanceId: pinned.id, message: redactUrlsIn(e.message) }] }),
                onSuccess: (value) => ({ value, instance: pinned })
              })
            )
          }

          const tried = new Set<InstanceState>()
          const failures: Array<FailedAttempt> = []
          let last: InstanceState | undefined

          /** The strategy's pick among the instances that may take the request and were not tried yet. */
          const choose = Effect.suspend((): Effect.Effect<InstanceState, DispatchError> => {
            const now = timer.now()
            let candidates = candidatesOf(template, now, tried)
            if (operation.ineligible !== undefined) {
              candidates = candidates.filter((i) => {
                const reason = operation.ineligible!(i)
                if (reason === undefined) return true
                // Left out for good: the attempts report says why, once.
                tried.add(i)
                failures.push({ instanceId: i.id, message: reason })
                return false
              })
            }
            if (candidates.length === 0) {
              return Effect.fail(
                tried.size === 0
                  ? noHealthyInstance(template, now)
                  : new AllAttemptsFailed({ template: template.name, attempts: failures })
              )
            }
            const pick = candidates.length === 1 ? Effect.succeed(candidates[0]!) : strategies.forTemplate(template.name, settings).pipe(
              // Strategies were built when the template was loaded or registered; failing now is a defect.
              Effect.orDie,
              Effect.flatMap(({ value: strategy }) =>
                strategy.select(candidates as [InstanceState, ...Array<InstanceState>], {
                  template: template.name,
                  method: operation.method,
                  attempt: tried.size + 1
                }) as Effect.Effect<InstanceState>
              )
            )
            return Effect.map(pick, (instance) => {
              // (Selectable candidates pass their breaker; a half-open one gives this request its trial.)
              instance.admit(now)
              return instance
            })
          })

          const once = Effect.flatMap(choose, (instance): Effect.Effect<A, DispatchError | AttemptFailed> => {
            tried.add(instance)
            last = instance
            if (deadline.remainingMs() <= 0) return Effect.fail(timedOut())
            return Effect.mapError(attemptOn(template, operation, instance, deadline), (e) => {
              if (e._tag === "RequestTimeout") return timedOut()
              failures.push({ instanceId: instance.id, message: redactUrlsIn(e.message) })
              return new AttemptFailed({ instance, error: e })
            })
          })

          // Worth a retry: another instance may take it (no waiting for a retry that cannot happen).
          const shouldRetry = (e: DispatchError | AttemptFailed) =>
            e._tag === "AttemptFailed" && !e.error.clientFault && operation.retryable(e.error) &&
            candidatesOf(template, timer.now(), tried).length > 0

          return retryWhile(
            once,
            () => retrySchedule(settings.retry, settings.max_retries, () => deadline.remainingMs()),
            shouldRetry
          ).pipe(
            Effect.mapBoth({
              onFailure: (e): DispatchError => {
                if (e._tag !== "AttemptFailed") return e
                if (e.error.clientFault) {
                  return new RequestRejected({ template: template.name, instanceId: e.instance.id, message: redactUrlsIn(e.error.message) })
                }
                return new AllAttemptsFailed({
                  template: template.name,
                  attempts: failures,
                  notRetriedReason: operation.retryable(e.error)
                    ? undefined
                    : "a tools/call is not retried on another instance once it may have reached a backend"
                })
              },
              onSuccess: (value) => ({ value, instance: last! })
            }),
            Effect.onExit((exit) =>
              Effect.sync(() => record(last, Exit.isSuccess(exit) && !(operation.isErrorAnswer?.(exit.value.value) ?? false)))
            )
          )
        })

      let ownProgressTokens = 0

      const call: DispatcherShape["call"] = (template, method, params, options) => {
        const relay = options?.relay
        // A backend reports progress only when asked (a progressToken). For a tools/call whose
        // caller did not ask, the gateway asks, so that a long tool that reports progress
        // extends its deadline (timeout_resets_on_progress); those reports stay here.
        let ownToken: string | undefined
        const meta = params?._meta
        if (
          method === "tools/call" && (meta === undefined || (isObject(meta) && meta.progressToken === undefined)) &&
          registry.template(template)?.settings.timeout_resets_on_progress === true
        ) {
          ownToken = `gateway-progress-${++ownProgressTokens}`
          params = { ...params, _meta: { ...meta, progressToken: ownToken } }
        }
        return execute<JsonRpcResponse>({
          template,
          method,
          instance: options?.instance,
          retryable: (error) => isRetryable(method, error),
          isErrorAnswer: (response) => "error" in response,
          attempt: (instance, deadline) => {
            // Progress from the backend extends the deadline (timeout_resets_on_progress).
            const onNotification = (notification: JsonRpcNotification) => {
              if (notification.method === "notifications/progress") {
                deadline.progress()
                if (ownToken !== undefined && isObject(notification.params) && notification.params.progressToken === ownToken) return
              }
              relay?.onNotification?.(notification)
            }
            const requestOptions: RequestOptions = {
              deadline,
              onNotification,
              onServerRequest: relay?.onServerRequest,
              headers: options?.headers
            }
            return options?.connection !== undefined
              ? options.connection.request(method, params, requestOptions)
              : transport.request(instance.definition, method, params, requestOptions)
          }
        }).pipe(
          Effect.flatMap(({ instance, value: response }) =>
            "error" in response
              ? Effect.fail(new BackendError({ template, instanceId: instance.id, error: response.error }))
              : Effect.succeed({ result: response.result, instanceId: instance.id, instance })
          )
        )
      }

      return { call, execute }
    })
  )
}
