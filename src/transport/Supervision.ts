import { Context, Layer } from "effect"
import type { InstanceDefinition } from "../domain/Instance.js"
import type { SandboxSettings } from "../domain/Sandbox.js"
import { type Backoff, DEFAULT_LOAD_BALANCER } from "../domain/LoadBalancer.js"
import type { Duration } from "effect"

/**
 * The life of an instance's shared channel (its stdio process, its legacy SSE stream):
 * `idle` (not started yet) → `starting` → `running`; when it exits, `restarting` (a restart is
 * scheduled) → `starting` again, or `failed` once it restarted too often; `stopped` when the
 * instance was removed or the gateway shuts down.
 */
export type ChannelState = "idle" | "starting" | "running" | "restarting" | "failed" | "stopped"

export interface ChannelStatus {
  readonly state: ChannelState
  readonly pid: number | undefined
  /** Restarts within the current window. */
  readonly restarts: number
  /** Why the last channel ended (`process exited (code 1)`), until a new one runs. */
  readonly lastExit: string | undefined
  /** When the scheduled restart happens (epoch ms), while `restarting`. */
  readonly nextRestartAt: number | undefined
  /** The last lines the process wrote to stderr (the likeliest explanation of a crash). */
  readonly stderrTail: ReadonlyArray<string>
}

/** How a shared channel is restarted: with `backoff`, and not more than `maxRestarts` times within `window`. */
export interface SupervisionPolicy {
  readonly maxRestarts: number
  readonly window: Duration.Duration
  readonly backoff: Backoff
}

/** How many processes an instance runs beside its shared one, and how long an unused one lives. */
export interface ProcessPolicy {
  /** `max_sessions_per_instance`: with auth on, callers' own processes (see RequestOptions.caller) at most this many. */
  readonly max: number
  /** `session_process_idle_timeout`: a caller's process nobody used this long is stopped. */
  readonly idle: Duration.Duration
  /** `warm_processes`: stdio processes kept started, waiting for a new session's `initialize`. */
  readonly warm: number
}

export interface ConnectionPolicyShape {
  readonly supervision: (instance: InstanceDefinition) => SupervisionPolicy
  /**
   * What a stdio instance's process may see of the gateway's environment besides the default
   * list (transport/childEnvironment.ts): its own inherit_env, else its template's, else the
   * gateway's. Read each time a process starts.
   */
  readonly inheritEnv?: ((instance: InstanceDefinition) => ReadonlyArray<string>) | undefined
  /** The sandbox a stdio instance's process starts in (its own setting, else its template's, else the gateway's); undefined: none. */
  readonly sandbox?: ((instance: InstanceDefinition) => SandboxSettings | undefined) | undefined
  readonly processes: (instance: InstanceDefinition) => ProcessPolicy
  /** Hears every change of an instance's shared channel (the gateway shows it as the instance's health). */
  readonly report: (instance: InstanceDefinition, status: ChannelStatus) => void
}

/**
 * What the transports need from the rest of the gateway, without knowing it: the restart
 * policy of an instance and where to report its channel's state. The gateway's layer reads
 * the template's settings and writes the instance's state (lifecycle/InstanceSupervision.ts).
 */
export class ConnectionPolicy extends Context.Tag("mcp-gateway/ConnectionPolicy")<ConnectionPolicy, ConnectionPolicyShape>() {
  /** The default settings and nobody listening: for transports used on their own (tests, tools). */
  static readonly defaults: Layer.Layer<ConnectionPolicy> = Layer.succeed(ConnectionPolicy, {
    supervision: () => ({
      maxRestarts: DEFAULT_LOAD_BALANCER.max_restarts,
      window: DEFAULT_LOAD_BALANCER.restart_window,
      backoff: DEFAULT_LOAD_BALANCER.restart_backoff
    }),
    processes: () => ({
      max: DEFAULT_LOAD_BALANCER.max_sessions_per_instance,
      idle: DEFAULT_LOAD_BALANCER.session_process_idle_timeout,
      warm: 0
    }),
    report: () => {}
  })
}
