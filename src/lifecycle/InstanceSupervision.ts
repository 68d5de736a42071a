import { Effect, Layer, Runtime } from "effect"
import * as path from "node:path"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { sandboxOf } from "../config/sandboxOf.js"
import type { InstanceDefinition } from "../domain/Instance.js"
import { DEFAULT_LOAD_BALANCER } from "../domain/LoadBalancer.js"
import { Registry } from "../registry/Registry.js"
import { ConnectionPolicy } from "../transport/Supervision.js"
import { Stats } from "../observability/Stats.js"
import { Timer } from "../clock/Timer.js"

/**
 * The gateway's ConnectionPolicy: an instance's channel restarts under its template's
 * `max_restarts`, `restart_window` and `restart_backoff`, and what the transport reports of the
 * channel becomes the instance's state, so `/gateway/registry`, `/mcp/{t}/health` and the
 * Dispatcher all see a process that is down or failed until it runs again.
 */
export const InstanceSupervision: Layer.Layer<ConnectionPolicy, never, Registry | Timer | Stats | GatewayConfig> = Layer.effect(
  ConnectionPolicy,
  Effect.gen(function*() {
    const config = yield* GatewayConfig
    const registry = yield* Registry
    const timer = yield* Timer
    const stats = yield* Stats
    const runtime = yield* Effect.runtime<never>()

    const stateOf = (instance: InstanceDefinition) => {
      const state = registry.template(instance.template)?.instances.get(instance.id)
      // A re-registration under the same id is another definition: reports of the old one are stale.
      return state?.definition === instance ? state : undefined
    }

    return {
      supervision: (instance) => {
        const settings = registry.template(instance.template)?.settings ?? DEFAULT_LOAD_BALANCER
        return { maxRestarts: settings.max_restarts, window: settings.restart_window, backoff: settings.restart_backoff }
      },
      // The most specific list given wins (as a template's load_balancer over the gateway's).
      inheritEnv: (instance) =>
        (instance.transport === "stdio" ? instance.inherit_env : undefined) ??
          registry.template(instance.template)?.inheritEnv ??
          config.gateway.inheritEnv ??
          [],
      // The most specific setting wins whole; the gateway's own files are hidden from it.
      sandbox: (instance) => {
        const sandbox = sandboxOf(instance, registry.template(instance.template)?.sandbox, config.gateway.sandbox)
        if (sandbox === undefined) return undefined
        const hide = [config.loadedFrom?.configFile, config.gateway.registryFile].filter((f): f is string => f !== undefined).map((f) => path.resolve(f))
        return { ...sandbox, hide }
      },
      processes: (instance) => {
        const settings = registry.template(instance.template)?.settings ?? DEFAULT_LOAD_BALANCER
        return { max: settings.max_sessions_per_instance, idle: settings.session_process_idle_timeout, warm: settings.warm_processes }
      },
      report: (instance, status) => {
        const state = stateOf(instance)
        if (state === undefined) return
        const before = state.status
        if (status.state === "restarting") stats.recordRestart(instance.template, instance.id)
        state.channelChanged(status, timer.now())
        const after = state.status
        // (A channel stopped on purpose, at removal or shutdown, says nothing of the instance.)
        if (before !== after && status.state !== "stopped") {
          // A stdio instance's channel is a process; a legacy SSE instance's, a stream.
          const channel = instance.transport === "stdio" ? "process" : "stream"
          const log = after === "healthy" ? Effect.logInfo(`instance is healthy (its ${channel} is ${channel === "process" ? "running" : "open"})`) : after === "failed"
            ? Effect.logError(`instance failed: ${status.lastExit ?? `its ${channel} kept ending`}`)
            : Effect.logWarning(`instance is ${after}: ${status.lastExit ?? status.state}`)
          Runtime.runFork(runtime)(log.pipe(Effect.annotateLogs({ instance: `${instance.template}/${instance.id}` })))
        }
      }
    }
  })
)
