import { Data, type Effect, type Schema, type Scope } from "effect"
import type { InstanceDefinition } from "../domain/Instance.js"
import { pluginContract } from "../loader/pluginContract.js"
import type { TemplatePluginKind } from "../loader/PluginKind.js"

/** A probe that failed: its message is shown as the instance's last error. */
export class ProbeError extends Data.TaggedError("ProbeError")<{ readonly message: string }> {}

/** The instance a probe checks, and the one way into it a probe needs besides plain HTTP. */
export interface ProbeTarget {
  readonly instance: InstanceDefinition
  /** The instance's own headers (http, sse), with secrets from the environment read: for probes of its own. */
  readonly headers: Readonly<Record<string, string>>
  /**
   * An MCP request over the instance's own transport (which starts its process or opens its
   * session first when it has none, so a probe also brings an instance up). Resolves with the
   * result; a JSON-RPC error or a transport failure is a ProbeError.
   */
  readonly request: (method: string, params?: Record<string, unknown>) => Effect.Effect<unknown, ProbeError>
}

/** One template's health probe. The HealthChecker bounds each probe with `health_check_timeout`. */
export interface HealthProbe {
  readonly probe: (target: ProbeTarget) => Effect.Effect<void, ProbeError>
}

export const HealthProbePluginTypeId: unique symbol = Symbol.for("mcp-gateway/HealthProbePlugin") as any
export type HealthProbePluginTypeId = typeof HealthProbePluginTypeId

export interface HealthProbePlugin<Options = any> {
  readonly [HealthProbePluginTypeId]: HealthProbePluginTypeId
  /** Shown in logs and in `/gateway/registry`. */
  readonly name: string
  readonly description?: string | undefined
  /** Validates the template's `load_balancer.health_probe_options`. */
  readonly options: Schema.Schema<Options, any>
  /** Builds the probe for one template (called once per template; may keep state, may acquire resources in the scope). */
  readonly make: (options: Options) => Effect.Effect<HealthProbe, never, Scope.Scope>
}

const contract = pluginContract<HealthProbePlugin, HealthProbePluginTypeId, Omit<TemplatePluginKind<HealthProbe>, "is" | "exportHint">>(
  HealthProbePluginTypeId,
  "HealthProbePlugin",
  {
    folder: "health",
    noun: "health probe",
    setting: "health_probe",
    optionsSetting: "health_probe_options",
    chosen: (settings) => ({ spec: settings.health_probe, options: settings.health_probe_options })
  }
)
const kind: TemplatePluginKind<HealthProbe, HealthProbePlugin> = contract.kind

export const HealthProbePlugin = {
  make: <Options>(definition: {
    readonly name: string
    readonly description?: string | undefined
    readonly options: Schema.Schema<Options, any>
    readonly make: (options: Options) => Effect.Effect<HealthProbe, never, Scope.Scope>
  }): HealthProbePlugin<Options> => contract.brand(definition),

  is: contract.is,

  /** How the loader finds and checks health probe plugins. */
  kind: kind
}
