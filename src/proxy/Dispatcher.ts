import { Context, Data, Duration, Effect, Exit, type Fiber, FiberId, Layer, Random, Runtime } from "effect"
import {
  AllAttemptsFailed,
  BackendError,
  type DispatchError,
  type FailedAttempt,
  httpStatusOfMcpError,
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
import { RequestLog, type RequestLogFields } from "../observability/RequestLog.js"
import { requestRefs } from "../observability/requestRefs.js"
import { Strategies } from "../strategy/Strategies.js"
import type { Connection, RequestDone, RequestOptions } from "../transport/Connection.js"
import { Transport } from "../transport/Transport.js"
import type { RequestTimeout, TransportError } from "../transport/TransportError.js"
import { Deadline } from "./Deadline.js"
import { retryAfter, retrySchedule, retryWhile } from "./RetryPolicy.js"
import { Stats } from "./Stats.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { TaskRoutes } from "./TaskRoutes.js"
import { isoTime, Timer } from "./Timer.js"

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
  readonly relay?: Pick<RequestOptions, "onNotification" | "onServerRequest" | "passInputRequired" | "clientParamHeaders" | "client" | "onCacheHints"> | undefined
  /** Client headers the template forwards to its HTTP backends (`forward_headers`). */
  readonly headers?: Readonly<Record<string, string>> | undefined
  /** With auth on, who the request is for: it goes to that caller's own process of the instance (RequestOptions.caller). */
  readonly caller?: string | undefined
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
  /**
   * What an answer means for the client, for stats and the request log: `ok` and 200 unless the
   * instance answered with an error (a JSON-RPC error: `mcp_error`, with the REST status).
   */
  readonly classify?: ((value: A) => { readonly outcome: string; readonly status: number } | undefined) | undefined
  /** What the request is about, for the request log: a tool's or prompt's name, a resource's URI. */
  readonly subject?: string | undefined
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
  /**
   * `call` for the request path (the MCP endpoint's sessions, the REST face), without a fiber
   * where it can be: the same policy, the first attempt run in plain code (see "The request
   * path" in docs/architecture.md), anything else (a retry, tracing, a transport that cannot
   * send at once) handed to the same effects `call` runs. `done` is called once with what `call`
   * would give, unless the returned function cancelled the request first (a client that left
   * or sent notifications/cancelled): then it is counted and logged as an interrupted `call` is,
   * and `done` is never called. `requestId` goes on the request line.
   */
  readonly callNow: (
    template: string,
    method: string,
    params: Record<string, unknown> | undefined,
    options: DispatchOptions | undefined,
    requestId: string,
    done: (exit: Exit.Exit<DispatchResult, DispatchError>) => void
  ) => () => void
}

/**
 * May this failure be sent to another instance? Reads and lists: any transport failure.
 * `tools/call` may have side effects: only when it provably never reached the backend.
 */
export const isRetryable = (method: string, error: TransportError): boolean => error.retryable(method !== "tools/call")

const OK = { outcome: "ok", status: 200 } as const
const CANCELLED = { outcome: "cancelled", status: 499 } as const
/** The tool ran and reported failure (`isError: true`): the backend worked, so not an error of the gateway's or the instance's. */
const TOOL_ERROR = { outcome: "tool_error", status: 200 } as const

/** For the first choice of a request: nothing tried yet. */
const NONE_TRIED: ReadonlySet<InstanceState> = new Set()

/** The current span as W3C trace context (`traceparent`), when there is one. */
const traceContext = Effect.map(Effect.option(Effect.currentSpan), (span) =>
  span._tag === "None" ? undefined : `00-${span.value.traceId}-${span.value.spanId}-${span.value.sampled ? "01" : "00"}`)

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
  static readonly layer: Layer.Layer<Dispatcher, never, GatewayConfig | Registry | Strategies | Transport | Stats | Timer> = Layer.effect(
    Dispatcher,
    Effect.gen(function*() {
      const registry = yield* Registry
      const strategies = yield* Strategies
      const transport = yield* Transport
      const stats = yield* Stats
      const timer = yield* Timer
      const requestLog = yield* RequestLog
      const config = yield* GatewayConfig
      const tracing = config.tracing !== undefined
      // Routing decisions are logged only at debug or trace: building the line is work the hot
      // path should not do when nobody will read it.
      const logRouting = config.gateway.logLevel === "debug" || config.gateway.logLevel === "trace"

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
       * Spans only when tracing is configured: with it off, the request path creates none, and
       * not even their attributes (given as a function for that reason).
       */
      const identity = <X, E, R>(effect: Effect.Effect<X, E, R>) => effect
      const span = tracing
        ? (name: string, attributes: () => Record<string, unknown>, kind: "internal" | "client" = "internal") =>
          <X, E, R>(effect: Effect.Effect<X, E, R>) => Effect.withSpan(effect, name, { attributes: attributes(), kind, captureStackTrace: false })
        : (_name: string, _attributes: () => Record<string, unknown>, _kind?: "internal" | "client") => identity

      /** The routing decision, at debug (built only when the log level is debug or trace: see logRouting). */
      const logDecision = (
        template: TemplateState,
        method: string,
        attempt: number,
        candidates: ReadonlyArray<InstanceState>,
        instance: InstanceState
      ) =>
        Effect.logDebug("route").pipe(Effect.annotateLogs({
          template: template.name,
          operation: method,
          strategy: candidates.length === 1 ? "only-candidate" : template.settings.strategy,
          attempt,
          candidates: candidates.map((i) => i.id).join(","),
          instance: instance.id
        }))

      /**
       * An attempt on `instance` ended: its in-flight count, latency, success rate, outlier and
       * breaker state, and the stats, kept in one place for both ways an attempt runs (attemptOn,
       * and the request path's plain first attempt). A failure's warnings are the effect returned
       * (undefined when there is nothing to log).
       */
      const recordAttempt = (
        template: TemplateState,
        instance: InstanceState,
        started: number,
        exit: Exit.Exit<unknown, TransportError | RequestTimeout>
      ): Effect.Effect<void> | undefined => {
        instance.activeRequests--
        const settings = template.settings
        const latencyMs = timer.elapsedMs() - started
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
        return Effect.flatMap(Random.next, (random) => {
          const now = timer.now()
          const events = instance.failed(now, settings, random, mayEject(template, now))
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
        })
      }

      /**
       * Runs one attempt on one instance, keeping its live numbers and health evidence current
       * (recordAttempt), with, for an operation's only attempt, the request's end (`done`).
       */
      const attemptOn = <A>(
        template: TemplateState,
        operation: Operation<A>,
        instance: InstanceState,
        deadline: Deadline,
        attempt: number,
        done?: (exit: Exit.Exit<A, TransportError | RequestTimeout>) => Effect.Effect<void>
      ): Effect.Effect<A, TransportError | RequestTimeout> => {
        const started = timer.elapsedMs()
        instance.activeRequests++
        const call = operation.attempt(instance, deadline).pipe(
          span("gateway.backend", () => ({ "mcp.instance": instance.id, "mcp.transport": instance.definition.transport, "mcp.method": operation.method }), "client")
        )
        return Effect.onExit(
          span("gateway.attempt", () => ({ "mcp.instance": instance.id, "gateway.attempt": attempt }))(call),
          (exit): Effect.Effect<void> => {
            const logs = recordAttempt(template, instance, started, exit)
            const finished = done === undefined ? Effect.void : done(exit)
            return logs === undefined ? finished : Effect.zipRight(logs, finished)
          }
        )
      }

      /** A request's deadline, from now, by its template's settings. */
      const deadlineOf = (template: TemplateState) => {
        const settings = template.settings
        return new Deadline(
          timer,
          timer.now(),
          Duration.toMillis(settings.timeout),
          Duration.toMillis(settings.max_timeout),
          settings.timeout_resets_on_progress
        )
      }

      const timedOut = (template: TemplateState) =>
        new UpstreamTimeout({
          template: template.name,
          timeoutSeconds: Duration.toSeconds(template.settings.timeout),
          resetsOnProgress: template.settings.timeout_resets_on_progress
        })

      /**
       * The request's end, in one place: the stats (the metrics) now, and the fields of its
       * request line (written by `finish` in a fiber, `finishNow` outside one).
       */
      const endOf = (
        template: TemplateState,
        operation: Pick<Operation<unknown>, "method" | "subject">,
        started: number,
        instance: InstanceState | undefined,
        attempts: number,
        outcome: { readonly outcome: string; readonly status: number }
      ): RequestLogFields => {
        const latencyMs = timer.elapsedMs() - started
        stats.recordRequest({
          template: template.name,
          operation: operation.method,
          strategy: template.settings.strategy,
          instanceId: instance?.id,
          latencyMs,
          outcome: outcome.outcome
        })
        return {
          template: template.name,
          operation: operation.method,
          subject: operation.subject,
          instance: instance?.id ?? "",
          strategy: template.settings.strategy,
          attempts,
          outcome: outcome.outcome,
          status: outcome.status,
          duration_ms: Math.round(latencyMs * 100) / 100
        }
      }

      const outcomeOf = <A>(operation: Operation<A>, exit: Exit.Exit<A, DispatchError | TransportError | RequestTimeout>) => {
        if (Exit.isSuccess(exit)) return operation.classify?.(exit.value) ?? OK
        if (exit.cause._tag !== "Fail") return CANCELLED
        const e = exit.cause.error
        return { outcome: e.kind, status: e.httpStatus }
      }

      /** What the client is told when the one attempt on a pinned instance failed. */
      const pinnedFailure = (template: TemplateState, pinned: InstanceState, e: TransportError | RequestTimeout): DispatchError =>
        e._tag === "RequestTimeout"
          ? timedOut(template)
          : e.clientFault
          ? new RequestRejected({ template: template.name, instanceId: pinned.id, message: redactUrlsIn(e.message) })
          : new AllAttemptsFailed({ template: template.name, attempts: [{ instanceId: pinned.id, message: redactUrlsIn(e.message) }] })

      /** Where a balanced request stands: the instances tried, why each failed, the last one. */
      interface Attempts {
        readonly tried: Set<InstanceState>
        readonly failures: Array<FailedAttempt>
        last: InstanceState | undefined
        count: number
      }

      /** What the client is told when no attempt succeeded (the last error, as AttemptFailed, or the refusal). */
      const balancedFailure = <A>(template: TemplateState, operation: Operation<A>, state: Attempts, e: DispatchError | AttemptFailed): DispatchError => {
        if (e._tag !== "AttemptFailed") return e
        if (e.error.clientFault) {
          return new RequestRejected({ template: template.name, instanceId: e.instance.id, message: redactUrlsIn(e.error.message) })
        }
        return new AllAttemptsFailed({
          template: template.name,
          attempts: state.failures,
          notRetriedReason: operation.retryable(e.error)
            ? undefined
            : "a tools/call is not retried on another instance once it may have reached a backend"
        })
      }

      /** Worth a retry: another instance may take it (no waiting for a retry that cannot happen). */
      const shouldRetry = <A>(template: TemplateState, operation: Operation<A>, state: Attempts) => (e: DispatchError | AttemptFailed) =>
        e._tag === "AttemptFailed" && !e.error.clientFault && operation.retryable(e.error) &&
        candidatesOf(template, timer.now(), state.tried).length > 0

      /**
       * A balanced request's attempts: choose, attempt, and on a failure that another instance
       * may take, again after the retry schedule's delay. `first`: the request path already made
       * the first attempt, in plain code, and it failed so; the retries go on from there.
       */
      const attempts = <A>(
        template: TemplateState,
        operation: Operation<A>,
        deadline: Deadline,
        started: number,
        state: Attempts,
        first?: AttemptFailed
      ): Effect.Effect<{ readonly value: A; readonly instance: InstanceState }, DispatchError> => {
        const settings = template.settings

        /** The strategy's pick among the instances that may take the request and were not tried yet. */
        const choose = Effect.suspend((): Effect.Effect<InstanceState, DispatchError> => {
          const now = timer.now()
          let candidates = candidatesOf(template, now, state.tried)
          if (operation.ineligible !== undefined) {
            candidates = candidates.filter((i) => {
              const reason = operation.ineligible!(i)
              if (reason === undefined) return true
              // Left out for good: the attempts report says why, once.
              state.tried.add(i)
              state.failures.push({ instanceId: i.id, message: reason })
              return false
            })
          }
          if (candidates.length === 0) {
            return Effect.fail(
              state.tried.size === 0
                ? noHealthyInstance(template, now)
                : new AllAttemptsFailed({ template: template.name, attempts: state.failures })
            )
          }
          const pick = candidates.length === 1 ? Effect.succeed(candidates[0]!) : strategies.forTemplate(template.name, settings).pipe(
            // Strategies were built when the template was loaded or registered; failing now is a defect.
            Effect.orDie,
            Effect.flatMap(({ value: strategy }) =>
              strategy.select(candidates as [InstanceState, ...Array<InstanceState>], {
                template: template.name,
                method: operation.method,
                attempt: state.tried.size + 1
              }) as Effect.Effect<InstanceState>
            )
          )
          const chosen = Effect.map(pick, (instance) => {
            // (Selectable candidates pass their breaker; a half-open one gives this request its trial.)
            instance.admit(now)
            return instance
          })
          return (logRouting ? Effect.tap(chosen, (instance) => logDecision(template, operation.method, state.tried.size + 1, candidates, instance)) : chosen).pipe(
            span("gateway.select", () => ({ "mcp.template": template.name, "gateway.candidates": candidates.length }))
          )
        })

        const once = Effect.flatMap(choose, (instance): Effect.Effect<A, DispatchError | AttemptFailed> => {
          if (state.last !== undefined) stats.recordRetry(template.name, state.last.id)
          state.tried.add(instance)
          state.last = instance
          state.count++
          if (deadline.remainingMs() <= 0) return Effect.fail(timedOut(template))
          return Effect.mapError(attemptOn(template, operation, instance, deadline, state.count), (e) => {
            if (e._tag === "RequestTimeout") return timedOut(template)
            state.failures.push({ instanceId: instance.id, message: redactUrlsIn(e.message) })
            return new AttemptFailed({ instance, error: e })
          })
        })

        const schedule = () => retrySchedule(settings.retry, settings.max_retries, () => deadline.remainingMs())
        const retrying = shouldRetry(template, operation, state)
        return (first === undefined ? retryWhile(once, schedule, retrying) : retryAfter<A, DispatchError | AttemptFailed, never>(first, once, schedule, retrying)).pipe(
          Effect.mapBoth({
            onFailure: (e): DispatchError => balancedFailure(template, operation, state, e),
            onSuccess: (value) => ({ value, instance: state.last! })
          }),
          Effect.onExit((exit) =>
            requestLog.write(endOf(template, operation, started, state.last, state.count, outcomeOf(operation, Exit.map(exit, (r) => r.value))))
          )
        )
      }

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

      const execute = <A>(operation: Operation<A>) =>
        Effect.suspend((): Effect.Effect<{ readonly value: A; readonly instance: InstanceState }, DispatchError> => {
          const template = registry.template(operation.template)
          if (template === undefined) return Effect.fail(new TemplateNotFound({ template: operation.template }))
          const started = timer.elapsedMs()
          const deadline = deadlineOf(template)
          /** The request's end: its stats and its request line. */
          const finish = (instance: InstanceState | undefined, attempts: number, outcome: { readonly outcome: string; readonly status: number }) =>
            requestLog.write(endOf(template, operation, started, instance, attempts, outcome))

          const pinned = operation.instance
          if (pinned !== undefined) {
            // The one instance it must go to: one attempt, no choice, no retry (the hot path of sessions).
            const now = timer.now()
            if (pinned.status === "failed" || !pinned.admit(now)) {
              const error = unavailable(template, pinned, now)
              return Effect.zipRight(finish(pinned, 0, { outcome: error.kind, status: error.httpStatus }), Effect.fail(error))
            }
            return attemptOn(template, operation, pinned, deadline, 1, (exit) => finish(pinned, 1, outcomeOf(operation, exit))).pipe(
              Effect.mapBoth({
                onFailure: (e): DispatchError => pinnedFailure(template, pinned, e),
                onSuccess: (value) => ({ value, instance: pinned })
              })
            )
          }
          return attempts(template, operation, deadline, started, { tried: new Set(), failures: [], last: undefined, count: 0 })
        })

      let ownProgressTokens = 0
      const tasks = new TaskRoutes()

      /**
       * One MCP request as an Operation: what `call` and `callNow` both run. For a tools/call
       * whose caller did not ask for progress, the gateway asks (a progressToken of its own), so
       * that a long tool that reports progress extends its deadline (timeout_resets_on_progress);
       * those reports stay here.
       */
      const operationOf = (
        template: string,
        method: string,
        params: Record<string, unknown> | undefined,
        options: DispatchOptions | undefined,
        taskInstance: InstanceState | undefined
      ) => {
        const relay = options?.relay
        let ownToken: string | undefined
        const meta = params?._meta
        if (
          method === "tools/call" && (meta === undefined || (isObject(meta) && meta.progressToken === undefined)) &&
          registry.template(template)?.settings.timeout_resets_on_progress === true
        ) {
          ownToken = `gateway-progress-${++ownProgressTokens}`
          params = { ...params, _meta: { ...meta, progressToken: ownToken } }
        }
        const subject = params === undefined ? undefined : typeof params.name === "string" ? params.name : typeof params.uri === "string" ? params.uri : undefined
        /** What the transport is given for an attempt under `deadline`, with `traceparent` when tracing. */
        const requestFor = (deadline: Deadline, traceparent: string | undefined) => {
          // Progress from the backend extends the deadline (timeout_resets_on_progress).
          const onNotification = (notification: JsonRpcNotification) => {
            if (notification.method === "notifications/progress") {
              deadline.progress()
              if (ownToken !== undefined && isObject(notification.params) && notification.params.progressToken === ownToken) return
            }
            relay?.onNotification?.(notification)
          }
          // With tracing, the backend call's span goes on as W3C trace context: in a header
          // (HTTP backends) and in the request's _meta (any MCP server that reads it).
          const headers = traceparent === undefined ? options?.headers : { ...options?.headers, traceparent }
          const sent = traceparent === undefined
            ? params
            : { ...params, _meta: { ...(isObject(params?._meta) ? params._meta : {}), traceparent } }
          const requestOptions: RequestOptions = { deadline, onNotification, onServerRequest: relay?.onServerRequest, passInputRequired: relay?.passInputRequired, clientParamHeaders: relay?.clientParamHeaders, client: relay?.client, onCacheHints: relay?.onCacheHints, headers, caller: options?.caller }
          return { sent, requestOptions }
        }
        const operation: Operation<JsonRpcResponse> = {
          template,
          method,
          subject,
          instance: options?.instance ?? taskInstance,
          retryable: (error) => isRetryable(method, error),
          classify: (response) =>
            "error" in response
              ? { outcome: "mcp_error", status: httpStatusOfMcpError(response.error.code) }
              : method === "tools/call" && isObject(response.result) && response.result.isError === true
              ? TOOL_ERROR
              : undefined,
          attempt: (instance, deadline) => {
            const send = (traceparent: string | undefined) => {
              const { requestOptions, sent } = requestFor(deadline, traceparent)
              return options?.connection !== undefined
                ? options.connection.request(method, sent, requestOptions)
                : transport.request(instance.definition, method, sent, requestOptions)
            }
            // Without tracing, straight to the send: not even an Effect step for trace context.
            return tracing ? Effect.flatMap(traceContext, send) : send(undefined)
          }
        }
        return { operation, requestFor }
      }

      /** A response as `call` gives it: a JSON-RPC error is a BackendError; a created task is remembered. */
      const resultOf = (template: string, method: string, instance: InstanceState, response: JsonRpcResponse): Exit.Exit<DispatchResult, DispatchError> => {
        if ("error" in response) return Exit.fail(new BackendError({ template, instanceId: instance.id, error: response.error }))
        if (method === "tools/call") tasks.learn(template, instance, response.result, timer.now())
        return Exit.succeed({ result: response.result, instanceId: instance.id, instance })
      }

      /** A task lives where it was created: its requests go there (a session's are pinned anyway). */
      const taskInstanceOf = (template: string, method: string, params: Record<string, unknown> | undefined, options: DispatchOptions | undefined) =>
        options?.instance === undefined && method.startsWith("tasks/")
          ? tasks.instanceFor(template, method, params, timer.now())
          : undefined

      const call: DispatcherShape["call"] = (template, method, params, options) => {
        const { operation } = operationOf(template, method, params, options, taskInstanceOf(template, method, params, options))
        return execute(operation).pipe(Effect.flatMap(({ instance, value: response }) => resultOf(template, method, instance, response)))
      }

      // The request path (callNow). Its effects, when it needs any, run in this runtime (the
      // layer's: its Clock, Random and logger), with the request id on their log lines.
      const runtime = yield* Effect.runtime<never>()
      const forkFor = (requestId: string) => <X, E>(effect: Effect.Effect<X, E>) =>
        Runtime.runFork(runtime)(effect, { updateRefs: requestRefs(requestId) })

      /** Writes a request line outside a fiber (the writer's own way, or through Effect's logger in a fiber of its own). */
      const writeLineNow = (fields: RequestLogFields, requestId: string) => {
        if (requestLog.writeNow !== undefined) requestLog.writeNow(fields, requestId)
        else forkFor(requestId)(requestLog.write(fields))
      }

      /** `call` in a fiber, for what the plain path does not do; interrupting it is the cancellation. */
      const callInFiber: DispatcherShape["callNow"] = (template, method, params, options, requestId, done) => {
        const fiber = forkFor(requestId)(call(template, method, params, options))
        let cancelled = false
        fiber.addObserver((exit) => {
          if (!cancelled) done(exit)
        })
        return () => {
          cancelled = true
          fiber.unsafeInterruptAsFork(FiberId.none)
        }
      }

      const callNow: DispatcherShape["callNow"] = (templateName, method, params, options, requestId, done) => {
        const template = registry.template(templateName)
        const connection = options?.connection
        // Spans, routing lines at debug, task routes, an unknown template, a transport without a
        // plain path: `call`'s effects do those.
        if (
          template === undefined || tracing || logRouting || (connection !== undefined ? connection.requestNow === undefined : transport.requestNow === undefined) ||
          taskInstanceOf(templateName, method, params, options) !== undefined
        ) {
          return callInFiber(templateName, method, params, options, requestId, done)
        }
        const now = timer.now()
        const pinned = options?.instance
        let chosen: InstanceState
        if (pinned !== undefined) {
          // (A pinned instance that cannot take it is refused, logged and counted by `call`.)
          if (pinned.status === "failed" || !pinned.admit(now)) return callInFiber(templateName, method, params, options, requestId, done)
          chosen = pinned
        } else {
          const candidates = candidatesOf(template, now, NONE_TRIED)
          if (candidates.length === 0) return callInFiber(templateName, method, params, options, requestId, done)
          if (candidates.length === 1) chosen = candidates[0]!
          else {
            // Only a strategy that chooses without an Effect (selectNow) chooses here.
            const selectNow = strategies.current(template.name, template.settings)?.value.selectNow
            if (selectNow === undefined) return callInFiber(templateName, method, params, options, requestId, done)
            try {
              chosen = selectNow(candidates as [InstanceState, ...Array<InstanceState>], { template: template.name, method, attempt: 1 }) as InstanceState
            } catch {
              // A plugin that throws fails its request, as it does in `call` (a defect there): not the gateway.
              return callInFiber(templateName, method, params, options, requestId, done)
            }
            // (Not one of the candidates, undefined say: `call` deals with it, in its fiber.)
            if (!candidates.includes(chosen)) return callInFiber(templateName, method, params, options, requestId, done)
          }
          // (Selectable candidates pass their breaker; a half-open one gives this request its trial.)
          chosen.admit(now)
        }
        const { operation, requestFor } = operationOf(templateName, method, params, options, undefined)
        const started = timer.elapsedMs()
        const deadline = deadlineOf(template)
        const { requestOptions, sent } = requestFor(deadline, undefined)
        /** Set once the attempt ended or the request was cancelled: nothing of the attempt counts twice. */
        let ended = false
        let cancelled = false
        /** The retries of a balanced request, in a fiber (interrupting it is the cancellation then). */
        let retries: Fiber.RuntimeFiber<DispatchResult, DispatchError> | undefined

        /** The request's end: its stats and line now, then the answer (unless the client cancelled). */
        const end = (outcome: { readonly outcome: string; readonly status: number }, exit: Exit.Exit<DispatchResult, DispatchError>) => {
          writeLineNow(endOf(template, operation, started, chosen, 1, outcome), requestId)
          if (!cancelled) done(exit)
        }
        const attemptStarted = timer.elapsedMs()
        chosen.activeRequests++
        const onAttempt: RequestDone = (exit) => {
          if (ended) return
          ended = true
          const logs = recordAttempt(template, chosen, attemptStarted, exit)
          if (Exit.isSuccess(exit)) return end(operation.classify?.(exit.value) ?? OK, resultOf(templateName, method, chosen, exit.value))
          const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
          if (error === undefined) {
            // A defect (a transport that threw): the request ends with it, answered as `call`'s defects are.
            return end(outcomeOf(operation, exit), exit as Exit.Exit<never, never>)
          }
          if (pinned !== undefined || error._tag === "RequestTimeout" || error.clientFault || !operation.retryable(error)) {
            // No retry: the answer, after the failure's warnings (logged in a fiber, as `call` logs them).
            const failure = pinned !== undefined
              ? pinnedFailure(template, chosen, error)
              : error._tag === "RequestTimeout"
              ? timedOut(template)
              : balancedFailure(template, operation, { tried: new Set([chosen]), failures: [{ instanceId: chosen.id, message: redactUrlsIn(error.message) }], last: chosen, count: 1 }, new AttemptFailed({ instance: chosen, error }))
            const outcome = outcomeOf(operation, exit)
            if (logs === undefined) return end(outcome, Exit.fail(failure))
            forkFor(requestId)(logs).addObserver(() => end(outcome, Exit.fail(failure)))
            return
          }
          // A balanced request another instance may take: the retries, by the same effects as `call`'s.
          const state: Attempts = { tried: new Set([chosen]), failures: [{ instanceId: chosen.id, message: redactUrlsIn(error.message) }], last: chosen, count: 1 }
          const retried = attempts(template, operation, deadline, started, state, new AttemptFailed({ instance: chosen, error }))
          retries = forkFor(requestId)(
            Effect.flatMap(logs === undefined ? retried : Effect.zipRight(logs, retried), ({ instance, value }) => resultOf(templateName, method, instance, value))
          )
          retries.addObserver((exit) => {
            if (!cancelled) done(exit)
          })
        }
        let cancelSend: (() => void) | undefined
        try {
          cancelSend = connection !== undefined
            ? connection.requestNow!(method, sent, requestOptions, onAttempt)
            : transport.requestNow!(chosen.definition, method, sent, requestOptions, onAttempt)
        } catch (e) {
          onAttempt(Exit.die(e))
        }
        if (cancelSend === undefined && !ended) {
          // The connection cannot send at once (its session is still opening): the attempt as an effect.
          const attempt = forkFor(requestId)(operation.attempt(chosen, deadline))
          attempt.addObserver(onAttempt)
          cancelSend = () => attempt.unsafeInterruptAsFork(FiberId.none)
        }
        return () => {
          if (cancelled) return
          cancelled = true
          if (retries !== undefined) return void retries.unsafeInterruptAsFork(FiberId.none)
          if (ended) return
          ended = true
          cancelSend?.()
          // As an interrupted `call`: the attempt counts for nothing, the request as cancelled.
          recordAttempt(template, chosen, attemptStarted, Exit.interrupt(FiberId.none))
          writeLineNow(endOf(template, operation, started, chosen, 1, CANCELLED), requestId)
        }
      }

      return { call, callNow, execute }
    })
  )
}
