import { Context, Data, Effect, Layer } from "effect"
import type { InstanceDefinition } from "../domain/Instance.js"
import { Transport } from "../transport/Transport.js"

export class ProbeError extends Data.TaggedError("ProbeError")<{ readonly message: string }> {}

export interface HealthProbeShape {
  /** One check of one instance; the HealthChecker bounds it with the template's health_check_timeout. */
  readonly probe: (instance: InstanceDefinition) => Effect.Effect<void, ProbeError>
}

export class HealthProbe extends Context.Tag("mcp-gateway/HealthProbe")<HealthProbe, HealthProbeShape>() {
  /**
   * MCP `ping` over the instance's own transport. The transport initializes a session (or
   * starts the process) first when it has none, so a probe also brings an instance up.
   */
  static readonly mcpPing: Layer.Layer<HealthProbe, never, Transport> = Layer.effect(
    HealthProbe,
    Effect.map(Transport, (transport) => ({
      probe: (instance) =>
        transport.request(instance, "ping", undefined).pipe(
          Effect.mapError((e) => new ProbeError({ message: e.message })),
          Effect.flatMap((response) =>
            "error" in response
              ? Effect.fail(new ProbeError({ message: `ping answered with an error: ${response.error.message}` }))
              : Effect.void
          )
        )
    }))
  )
}
