import { Effect, Layer } from "effect"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { GATEWAY_VERSION } from "../domain/Protocol.js"

/**
 * OpenTelemetry traces over OTLP/HTTP (JSON), when `tracing` is configured: Effect's own
 * exporter (no OpenTelemetry SDK), batching spans every `export_interval_ms`, flushing at
 * shutdown. Without `tracing`, nothing: the gateway then makes no span at all on the request
 * path (see makeRequestTelemetry and the Dispatcher), and the exporter's modules are not loaded.
 */
export const TracingLive: Layer.Layer<never, never, GatewayConfig> = Layer.unwrapEffect(
  Effect.flatMap(GatewayConfig, (config) => {
    const tracing = config.tracing
    if (tracing === undefined) return Effect.succeed(Layer.empty)
    return Effect.promise(() =>
      Promise.all([
        import("@effect/opentelemetry/OtlpTracer"),
        import("@effect/opentelemetry/OtlpSerialization"),
        import("@effect/platform/FetchHttpClient")
      ])
    ).pipe(Effect.map(([OtlpTracer, OtlpSerialization, FetchHttpClient]) =>
      OtlpTracer.layer({
        url: tracing.endpoint,
        resource: { serviceName: tracing.serviceName, serviceVersion: GATEWAY_VERSION },
        exportInterval: tracing.exportInterval
      }).pipe(Layer.provide(FetchHttpClient.layer), Layer.provide(OtlpSerialization.layerJson))
    ))
  })
)
