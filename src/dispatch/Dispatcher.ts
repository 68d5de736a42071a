import { Context, Effect, Exit, type Fiber, FiberId, Layer, Option, Random, Runtime, type Tracer } from "effect"
import { BackendError, type DispatchError, httpStatusOfMcpError, TemplateNotFound } from "../domain/GatewayError.js"
import { isObject, type JsonRpcNotification, type JsonRpcResponse } from "../domain/JsonRpc.js"
import type { InstanceState } from "../instance/InstanceState.js"
import { Registry } from "../registry/Registry.js"
import { RequestLog, type RequestLogFields } from "../observability/RequestLog.js"
import { requestRefs } from "../observability/requestRefs.js"
import { Strategies } from "../strategy/Strategies.js"
import type { Connection, RequestDone, RequestOptions } from "../transport/Connection.js"
import { Transport } from "../transport/Transport.js"
import type { RequestTimeout, TransportError } from "../transport/TransportError.js"
import type { Deadline } from "./Deadline.js"
import { makeObservers, type RequestObserver } from "./dispatchObservers.js"
import { AttemptFailed, type CoreServices, RequestAttempts, type Step } from "./RequestAttempts.js"
import { retryAfter, retrySchedule, retryWhile } from "./RetryPolicy.js"
import { Stats } from "../observability/Stats.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { TaskRoutes } from "./TaskRoutes.js"
import { Timer } from "../clock/Timer.js"

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
  /**
   * The request's span (`gateway.request`), parent of the dispatch's spans, for `callNow` (which
   * has no fiber to find it in). Only with tracing on.
   */
  readonly span?: Tracer.AnySpan | undefined
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
  /**
   * One attempt on one instance, under the request's deadline. `traceparent`: with tracing on,
   * the attempt's backend span as W3C trace context, for a backend that takes it.
   */
  readonly attempt: (instance: InstanceState, deadline: Deadline, traceparent?: string) => Effect.Effect<A, TransportError | RequestTimeout>
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
   * `call` for the request path (the MCP endpoint's sessions, the REST face), by the callback
   * driver: the same dispatch core (RequestAttempts) without a fiber; only what must wait (the
   * retry schedule's delay, a strategy that chooses as an Effect, a connection that cannot send
   * at once) goes on in one, by the Effect driver's code (see "One request" in
   * docs/architecture.md). Tracing and routing lines observe it; they never change its path.
   * `done` is called once with what `call` would give, unless the returned function cancelled
   * the request first (a client that left or sent notifications/cancelled): then it is counted
   * and logged as an interrupted `call` is, and `done` is never called. `requestId` goes on the
   * request line.
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

/** The tool ran and reported failure (`isError: true`): the backend worked, so not an error of the gateway's or the instance's. */
const TOOL_ERROR = { outcome: "tool_error", status: 200 } as const

const noCancel = () => {}

/**
 * The one path of every request an instance serves: the dispatch core (RequestAttempts.ts:
 * choose an instance, admit it through its breaker, send under the request's deadline, record
 * the outcome in one place, conclude: answer or retry elsewhere), run by one of two drivers
 * written here. The Effect driver (`execute`, `call`) runs the core's steps as effects and its
 * retries under the retry Schedule; the callback driver (`callNow`, the request path) runs the
 * same core without a fiber and hands the Effect driver only what must wait. Observers (spans,
 * routing lines: dispatchObservers.ts) wrap the core the same way under both.
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
      // The drivers' effects, when they need any, run in this runtime (the layer's: its Clock,
      // Random, tracer and logger), with the request id on their log lines.
      const runtime = yield* Effect.runtime<never>()
      const forkFor = (requestId: string) => <X, E>(effect: Effect.Effect<X, E>) =>
        Runtime.runFork(runtime)(effect, { updateRefs: requestRefs(requestId) })

      const services: CoreServices = {
        timer,
        stats,
        strategyOf: (template) => strategies.current(template.name, template.settings)?.value,
        // (Read on a failure only: the breaker's jitter.)
        random: () => Runtime.runSync(runtime)(Random.next)
      }
      const observe = makeObservers({
        tracing: config.tracing === undefined ? undefined : { tracer: yield* Effect.tracer, clock: yield* Effect.clock },
        // Routing lines only at debug or trace: building them is work nobody reads otherwise.
        logRouting: config.gateway.logLevel === "debug" || config.gateway.logLevel === "trace"
      })

      /** Writes a request line outside a fiber (the writer's own way, or through Effect's logger in a fiber of its own). */
      const writeLineNow = (fields: RequestLogFields, requestId: string) => {
        if (requestLog.writeNow !== undefined) requestLog.writeNow(fields, requestId)
        else forkFor(requestId)(requestLog.write(fields))
      }

      /**
       * The Effect driver: the core's steps as effects, retries after the retry Schedule's delay.
       * `from`: where the callback driver handed the request over (a failed attempt another
       * instance may take, or a strategy that chooses as an Effect); from the start otherwise.
       */
      const drive = <A>(
        core: RequestAttempts<A>,
        operation: Operation<A>,
        observer: RequestObserver | undefined,
        from?: Step | AttemptFailed
      ): Effect.Effect<A, DispatchError> => {
        const template = core.template
        const send = (instance: InstanceState, attempt: number): Effect.Effect<A, DispatchError | AttemptFailed> => {
          const trace = observer?.attempt(instance, attempt, operation.method)
          return operation.attempt(instance, core.deadline, trace?.traceparent).pipe(
            Effect.exit,
            Effect.onInterrupt(() =>
              Effect.sync(() => {
                if (!core.attempting) return
                trace?.end(Exit.interrupt(FiberId.none))
                core.cancelled()
              })
            ),
            Effect.flatMap((exit): Effect.Effect<A, DispatchError | AttemptFailed> => {
              trace?.end(exit)
              const ended = core.ended(exit)!
              const result: Effect.Effect<A, DispatchError | AttemptFailed> = ended.conclusion._tag === "Done"
                ? ended.conclusion.exit
                : Exit.fail(ended.conclusion.failure)
              return ended.logs === undefined ? result : Effect.zipRight(ended.logs, result)
            })
          )
        }
        const step = (next: Step): Effect.Effect<A, DispatchError | AttemptFailed> => {
          switch (next._tag) {
            case "Refused":
              return Effect.fail(next.error)
            case "Send":
              return send(next.instance, next.attempt)
            case "Select":
              return strategies.forTemplate(template.name, template.settings).pipe(
                // Strategies were built when the template was loaded or registered; failing now is a defect.
                Effect.orDie,
                Effect.flatMap(({ value: strategy }) => strategy.select(next.candidates, next.context)),
                Effect.flatMap((chosen) => Effect.suspend(() => step(core.picked(next.candidates, chosen))))
              )
          }
        }
        // (A strategy plugin that throws: a defect of its request, through Effect.suspend.)
        const once = Effect.suspend(() => step(core.next()))
        const schedule = () => retrySchedule(template.settings.retry, template.settings.max_retries, () => core.deadline.remainingMs())
        // The core decided it (RequestAttempts.mayRetry): a failure left as AttemptFailed may go elsewhere.
        const retrying = (e: DispatchError | AttemptFailed) => e._tag === "AttemptFailed"
        const attempts = from === undefined
          ? retryWhile(once, schedule, retrying)
          : from._tag === "AttemptFailed"
          ? retryAfter(from, once, schedule, retrying)
          : Effect.catchAll(Effect.suspend(() => step(from)), (e) => retryAfter(e, once, schedule, retrying))
        return Effect.mapError(attempts, (e) => core.failure(e))
      }

      const execute = <A>(operation: Operation<A>) =>
        Effect.suspend((): Effect.Effect<{ readonly value: A; readonly instance: InstanceState }, DispatchError> => {
          const template = registry.template(operation.template)
          if (template === undefined) return Effect.fail(new TemplateNotFound({ template: operation.template }))
          const run = (parent: Tracer.AnySpan | undefined) =>
            Effect.withFiberRuntime<{ readonly value: A; readonly instance: InstanceState }, DispatchError>((fiber) => {
              const observer = observe(template, operation.method, "effect", parent, (line) => {
                Runtime.runFork(runtime)(line, { updateRefs: () => fiber.getFiberRefs() })
              })
              const core = new RequestAttempts(template, operation, services, observer)
              return drive(core, operation, observer).pipe(
                Effect.map((value) => ({ value, instance: core.last! })),
                Effect.onExit((exit) => requestLog.write(core.end(core.outcomeOf(Exit.map(exit, (r) => r.value)))))
              )
            })
          return config.tracing === undefined ? run(undefined) : Effect.flatMap(Effect.option(Effect.currentParentSpan), (span) => run(Option.getOrUndefined(span)))
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
          attempt: (instance, deadline, traceparent) => {
            const { requestOptions, sent } = requestFor(deadline, traceparent)
            return options?.connection !== undefined
              ? options.connection.request(method, sent, requestOptions)
              : transport.request(instance.definition, method, sent, requestOptions)
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

      /**
       * The callback driver: the core without a fiber. Sends through the connection's
       * `requestNow`; a fiber only for what waits (the Effect driver from where it stands).
       */
      const callNow: DispatcherShape["callNow"] = (templateName, method, params, options, requestId, done) => {
        const template = registry.template(templateName)
        if (template === undefined) {
          done(Exit.fail(new TemplateNotFound({ template: templateName })))
          return noCancel
        }
        const { operation, requestFor } = operationOf(templateName, method, params, options, taskInstanceOf(templateName, method, params, options))
        const observer = observe(template, method, "callback", options?.span, forkFor(requestId))
        const core = new RequestAttempts(template, operation, services, observer)
        const connection = options?.connection
        let cancelled = false
        let finished = false
        /** What goes on in a fiber (retries, a strategy that chooses as an Effect): interrupting it is the cancellation. */
        let rest: Fiber.RuntimeFiber<JsonRpcResponse, DispatchError> | undefined
        let cancelSend: (() => void) | undefined
        let trace: ReturnType<RequestObserver["attempt"]>

        /** The request's end: its stats and line now, then the answer (unless the client cancelled). */
        const finish = (exit: Exit.Exit<JsonRpcResponse, DispatchError>) => {
          if (finished) return
          finished = true
          writeLineNow(core.end(core.outcomeOf(exit)), requestId)
          if (!cancelled) done(Exit.flatMap(exit, (response) => resultOf(templateName, method, core.last!, response)))
        }
        const inFiber = (effect: Effect.Effect<JsonRpcResponse, DispatchError>) => {
          rest = forkFor(requestId)(effect)
          rest.addObserver(finish)
        }
        const onAttempt: RequestDone = (exit) => {
          if (!core.attempting) return
          trace?.end(exit)
          const { conclusion, logs } = core.ended(exit)!
          const next = conclusion._tag === "Done"
            ? () => finish(conclusion.exit)
            : () => {
              if (!cancelled) inFiber(drive(core, operation, observer, conclusion.failure))
            }
          // (A failure's warnings first, logged in a fiber as the Effect driver logs them.)
          if (logs === undefined) return next()
          forkFor(requestId)(logs).addObserver(next)
        }
        const run = (step: Step) => {
          switch (step._tag) {
            case "Refused":
              return finish(Exit.fail(step.error))
            case "Select":
              return inFiber(drive(core, operation, observer, step))
            case "Send": {
              const instance = step.instance
              trace = observer?.attempt(instance, step.attempt, method)
              const { requestOptions, sent } = requestFor(core.deadline, trace?.traceparent)
              try {
                cancelSend = connection !== undefined
                  ? connection.requestNow?.(method, sent, requestOptions, onAttempt)
                  : transport.requestNow?.(instance.definition, method, sent, requestOptions, onAttempt)
              } catch (e) {
                onAttempt(Exit.die(e))
              }
              if (cancelSend === undefined && core.attempting) {
                // The connection cannot send at once (its session is still opening): the attempt as an effect.
                const attempt = forkFor(requestId)(operation.attempt(instance, core.deadline, trace?.traceparent))
                attempt.addObserver(onAttempt)
                cancelSend = () => attempt.unsafeInterruptAsFork(FiberId.none)
              }
            }
          }
        }
        let first: Step
        try {
          first = core.next()
        } catch (e) {
          // A strategy plugin that throws fails its request as a defect (the endpoint answers 500), not the gateway.
          finish(Exit.die(e))
          return noCancel
        }
        run(first)
        return () => {
          if (cancelled || finished) return
          cancelled = true
          if (rest !== undefined) return void rest.unsafeInterruptAsFork(FiberId.none)
          if (core.attempting) {
            cancelSend?.()
            trace?.end(Exit.interrupt(FiberId.none))
            // As an interrupted `call`: the attempt counts for nothing, the request as cancelled.
            core.cancelled()
          }
          finish(Exit.interrupt(FiberId.none))
        }
      }

      return { call, callNow, execute }
    })
  )
}
