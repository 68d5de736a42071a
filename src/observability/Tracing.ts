import * as OtlpSerialization from "@effect/opentelemetry/OtlpSerialization"
import * as OtlpTracer from "@effect/opentelemetry/OtlpTracer"
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import { Effect, Layer } from "effect"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { GATEWAY_VERSION } from "../domain/Protocol.js"

/**
 * OpenTelemetry traces over OTLP/HTTP (JSON), when `tracing` is configured: Effect's own
 * exporter (no OpenTelemetry SDK), batching spans every `export_interval_ms`, flushing at
 * shutdown. Without `tracing`, nothing: the gateway then makes no span at all on the request
 * path (see makeRequestTelemetry and the Dispatcher).
 */
export const TracingLive: Layer.Layer<never, never, GatewayConfig> = Layer.unwrapEffect(
  Effect.map(GatewayConfig, (config) =>
    config.tracing === undefined
      ? Layer.empty
      : OtlpTracer.layer({
        url: config.tracing.endpoint,
        resource: { serviceName: config.tracing.serviceName, serviceVersion: GATEWAY_VERSION },
        exportInterval: config.tracing.exportInterval
      }).pipe(Layer.provide(FetchHttpClient.layer), Layer.provide(OtlpSerialization.layerJson)))
)
