import { Cause, Context, Effect, Exit, Layer, Option } from "effect"
import {
  AllAttemptsFailed,
  BackendError,
  type DispatchError,
  type FailedAttempt,
  InstanceNotFound,
  NoHealthyInstance,
  TemplateNotFound,
  UpstreamTimeout
} from "../domain/GatewayError.js"
import type { JsonRpcResponse } from "../domain/JsonRpc.js"
import type { InstanceState } from "../registry/InstanceState.js"
import { Registry, type TemplateState } from "../registry/Registry.js"
import { Strategies } from "../strategy/Strategies.js"
import type { Strategy } from "../strategy/StrategyPlugin.js"
import type { RequestOptions } from "../transport/Connection.js"
import { Transport } from "../transport/Transport.js"
import type { TransportError } from "../transport/TransportError.js"
import { Stats } from "./Stats.js"

export interface DispatchResult {
  readonly result: unknown
  readonly instanceId: string
}

export interface DispatchOptions {
  /** Send to this instance only, without failover (e.g. the later pages of a paginated list). */
  readonly instanceId?: string | undefined
  /** Where the server's notifications and requests about this request go (see RequestOptions). */
  readonly relay?: Pick<RequestOptions, "onNotification" | "onServerRequest"> | undefined
}

export interface DispatcherShape {
  /**
   * One MCP request to a template: healthy candidates → strategy → transport, under the
   * template's timeout, failing over to other instances up to `max_retries` times.
   */
  readonly call: (
    template: string,
    method: string,
    params: Record<string, unknown> | undefined,
    options?: DispatchOptions
  ) => Effect.Effect<DispatchResult, DispatchError>
  /**
   * Picks an instance of the template the way `call` would, without sending anything: for
   * sessions that are pinned to one instance. `exclude` leaves out instances already tried.
   */
  readonly selectInstance: (
    template: string,
    method: string,
    exclude?: ReadonlySet<string>
  ) => Effect.Effect<InstanceState, TemplateNotFound | NoHealthyInstance>
}

/**
 * May this failure be sent to another instance? Reads and lists: any transport failure.
 * `tools/call` may have side effects: only when it provably never reached the backend.
 */
export const isRetryable = (method: string, error: TransportError): boolean =>
  method !== "tools/call" || !error.reachedBackend

export class Dispatcher extends Context.Tag("mcp-gateway/Dispatcher")<Dispatcher, DispatcherShape>() {
  static readonly layer: Layer.Layer<Dispatcher, never, Registry | Strategies | Transport | Stats> = Layer.effect(
    Dispatcher,
    Effect.gen(function*() {
      const registry = yield* Registry
      const strategies = yield* Strategies
      const transport = yield* Transport
      const stats = yield* Stats

      const routableCandidates = (template: TemplateState, exclude: ReadonlySet<string> | undefined) => {
        const candidates: Array<InstanceState> = []
        for (const i of template.instances.values()) if (i.routable && !exclude?.has(i.id)) candidates.push(i)
        return candidates
      }

      const selectInstance: DispatcherShape["selectInstance"] = (templateName, method, exclude) =>
        Effect.suspend((): Effect.Effect<InstanceState, TemplateNotFound | NoHealthyInstance> => {
          const template = registry.template(templateName)
          if (template === undefined) return Effect.fail(new TemplateNotFound({ template: templateName }))
          const candidates = routableCandidates(template, exclude)
          if (candidates.length === 0) {
            return Effect.fail(new NoHealthyInstance({ template: template.name, total: template.instances.size }))
          }
          if (candidates.length === 1) return Effect.succeed(candidates[0]!)
          return strategies.forTemplate(template.name, template.settings).pipe(
            Effect.orDie,
            Effect.flatMap(({ strategy }) =>
              strategy.select(candidates as [InstanceState, ...Array<InstanceState>], {
                template: template.name,
                method,
                attempt: (exclude?.size ?? 0) + 1
              }) as Effect.Effect<InstanceState>
            )
          )
        })

      /** One request to one instance, keeping its live numbers (in-flight count, latency, health) current. */
      const attemptOn = (
        instance: InstanceState,
        method: string,
        params: Record<string, unknown> | undefined,
        timeoutMs: number,
        relay: DispatchOptions["relay"]
      ) => {
        const started = performance.now()
        instance.activeRequests++
        return Effect.onExit(
          transport.request(instance.definition, method, params, relay === undefined ? { timeoutMs } : { ...relay, timeoutMs }),
          (exit) =>
            Effect.sync(() => {
              instance.activeRequests--
              if (Exit.isSuccess(exit)) return instance.recordSuccess(performance.now() - started)
              const failure = Cause.failureOption(exit.cause)
              if (Option.isSome(failure) && failure.value._tag === "TransportError") {
                instance.recordFailure()
                // Out of rotation until a health probe brings it back.
                instance.markUnhealthy(failure.value.message)
              }
            })
        )
      }

      const dispatch = (
        template: TemplateState,
        method: string,
        params: Record<string, unknown> | undefined,
        options: DispatchOptions | undefined
      ): Effect.Effect<DispatchResult, DispatchError> =>
        Effect.suspend(() => {
          const settings = template.settings
          const started = performance.now()
          // One deadline for the request, failovers included.
          const deadline = Date.now() + settings.timeout * 1000
          const tried = new Set<string>()
          const failures: Array<FailedAttempt> = []
          let last: InstanceState | undefined

          const candidatesLeft = (): Array<InstanceState> | InstanceNotFound => {
            if (options?.instanceId !== undefined) {
              const pinned = template.instances.get(options.instanceId)
              if (pinned === undefined) return new InstanceNotFound({ template: template.name, instanceId: options.instanceId })
              return tried.has(pinned.id) ? [] : [pinned]
            }
            return routableCandidates(template, tried)
          }

          /**
           * Picks an instance among those not tried yet and sends the request; on a failure that
           * is safe to repeat, fails over to another instance at once, up to `max_retries` times.
           * (An immediate failover to a different instance, not a timed retry: no Schedule.)
           */
          const attempt = (strategy: Strategy): Effect.Effect<JsonRpcResponse, DispatchError> => {
            const candidates = candidatesLeft()
            if (!Array.isArray(candidates)) return Effect.fail(candidates)
            if (candidates.length === 0) {
              return Effect.fail(
                tried.size === 0
                  ? new NoHealthyInstance({ template: template.name, total: template.instances.size })
                  : new AllAttemptsFailed({ template: template.name, attempts: failures })
              )
            }
            const timeoutMs = deadline - Date.now()
            if (timeoutMs <= 0) return Effect.fail(new UpstreamTimeout({ template: template.name, timeoutSeconds: settings.timeout }))
            const select = candidates.length === 1
              ? Effect.succeed(candidates[0]!)
              : strategy.select(candidates as [InstanceState, ...Array<InstanceState>], {
                template: template.name,
                method,
                attempt: tried.size + 1
              }) as Effect.Effect<InstanceState>
            return Effect.flatMap(select, (instance) => {
              tried.add(instance.id)
              last = instance
              return attemptOn(instance, method, params, timeoutMs, options?.relay).pipe(
                Effect.catchAll((e): Effect.Effect<JsonRpcResponse, DispatchError> => {
                  if (e._tag === "RequestTimeout") {
                    return Effect.fail(new UpstreamTimeout({ template: template.name, timeoutSeconds: settings.timeout }))
                  }
                  failures.push({ instanceId: instance.id, message: e.message })
                  const warn = Effect.logWarning(`${instance.template}/${instance.id}: ${e.message}`)
                  if (!isRetryable(method, e)) {
                    return Effect.zipRight(
                      warn,
                      Effect.fail(
                        new AllAttemptsFailed({
                          template: template.name,
                          attempts: failures,
                          notRetriedReason: "a tools/call is not retried on another instance once it may have reached a backend"
                        })
                      )
                    )
                  }
                  if (tried.size > settings.max_retries) {
                    return Effect.zipRight(warn, Effect.fail(new AllAttemptsFailed({ template: template.name, attempts: failures })))
                  }
                  return Effect.zipRight(warn, Effect.suspend(() => attempt(strategy)))
                })
              )
            })
          }

          return strategies.forTemplate(template.name, settings).pipe(
            // Strategies were built when the template was loaded or registered; failing now is a defect.
            Effect.orDie,
            Effect.flatMap(({ strategy }) => attempt(strategy)),
            Effect.flatMap((response): Effect.Effect<DispatchResult, BackendError> =>
              "error" in response
                ? Effect.fail(new BackendError({ template: template.name, instanceId: last!.id, error: response.error }))
                : Effect.succeed({ result: response.result, instanceId: last!.id })
            ),
            Effect.onExit((exit) =>
              Effect.sync(() =>
                stats.recordRequest({
                  template: template.name,
                  strategy: settings.strategy,
                  instanceId: last?.id,
                  latencyMs: performance.now() - started,
                  ok: Exit.isSuccess(exit)
                })
              )
            )
          )
        })

      const call: DispatcherShape["call"] = (templateName, method, params, options) =>
        Effect.suspend(() => {
          const template = registry.template(templateName)
          return template === undefined
            ? Effect.fail(new TemplateNotFound({ template: templateName }))
            : dispatch(template, method, params, options)
        })

      return { call, selectInstance }
    })
  )
}
