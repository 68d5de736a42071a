import { Duration, Effect, Layer, Queue } from "effect"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { GATEWAY_VERSION } from "../domain/Protocol.js"
import { redactUrl } from "../domain/redact.js"
import { GatewayMetrics } from "./GatewayMetrics.js"

/** How often a collector that keeps failing is logged about. */
const WARN_EVERY_MS = 60_000

/** The collector answered with an error status (told apart from a failure to reach it by its class, not its text). */
class CollectorRefused extends Error {}

interface Batch {
  readonly body: Uint8Array
  readonly contentType: string
  readonly spans: number
}

/**
 * OpenTelemetry traces over OTLP/HTTP (JSON), when `tracing` is configured: Effect's own
 * exporter (no OpenTelemetry SDK), batching spans every `export_interval_ms`, flushing at
 * shutdown. Without `tracing`, nothing: the gateway then makes no span at all on the request
 * path (see makeRequestTelemetry and the Dispatcher), and the exporter's modules are not loaded.
 *
 * Effect's exporter sends each batch in a request of its own, with no timeout, a new one
 * whenever a batch fills while the last still waits: a collector that accepts connections and
 * never answers collected a connection per batch (97 in a minute). So its HTTP client here is
 * a bounded queue: a batch is taken at once (the exporter sees success, so it never retries,
 * never stops exporting for a minute and never holds spans itself), and one sender posts the
 * batches one at a time, each within `export_timeout_ms`, over fetch's keep-alive connection
 * (one, reused). When more spans wait than `max_queued_spans`, or a post fails, spans are
 * dropped and counted (`mcp_gateway_tracing_spans_dropped_total`), and a warning is logged at
 * most once a minute.
 */
export const TracingLive: Layer.Layer<never, never, GatewayConfig | GatewayMetrics> = Layer.unwrapScoped(
  Effect.gen(function*() {
    const config = yield* GatewayConfig
    const tracing = config.tracing
    if (tracing === undefined) return Layer.empty
    const metrics = yield* GatewayMetrics
    const [OtlpTracer, HttpBody, HttpClient, HttpClientResponse] = yield* Effect.promise(() =>
      Promise.all([
        import("@effect/opentelemetry/OtlpTracer"),
        import("@effect/platform/HttpBody"),
        import("@effect/platform/HttpClient"),
        import("@effect/platform/HttpClientResponse")
      ])
    )
    const { OtlpSerialization } = yield* Effect.promise(() => import("@effect/opentelemetry/OtlpSerialization"))
    const dropped = metrics.tracingSpansDropped({})
    const where = redactUrl(tracing.endpoint)
    const timeoutMs = Duration.toMillis(tracing.exportTimeout)

    // (The Clock of the fiber building the layer: the warning's once-a-minute is on the gateway's one clock.)
    const clock = yield* Effect.clock
    let lastWarning = -Infinity
    let droppedSinceWarning = 0
    const drop = (spans: number, why: string) =>
      Effect.suspend(() => {
        dropped.update(spans)
        droppedSinceWarning += spans
        const now = clock.unsafeCurrentTimeMillis()
        if (now - lastWarning < WARN_EVERY_MS) return Effect.void
        lastWarning = now
        const count = droppedSinceWarning
        droppedSinceWarning = 0
        return Effect.logWarning(`tracing: ${why}; ${count} spans dropped (mcp_gateway_tracing_spans_dropped_total counts them; this is logged at most once a minute)`)
      })

    // The spans in each body, told by the serialization to the client (a body is sent once).
    const spansIn = new WeakMap<object, number>()
    const serialization = {
      traces: (data: { readonly resourceSpans: ReadonlyArray<{ readonly scopeSpans: ReadonlyArray<{ readonly spans: ReadonlyArray<unknown> }> }> }) => {
        const body = HttpBody.unsafeJson(data)
        let spans = 0
        for (const r of data.resourceSpans) for (const s of r.scopeSpans) spans += s.spans.length
        spansIn.set(body, spans)
        return body
      },
      metrics: (data: unknown) => HttpBody.unsafeJson(data),
      logs: (data: unknown) => HttpBody.unsafeJson(data)
    }

    let queuedSpans = 0
    const queue = yield* Queue.unbounded<Batch>()
    const post = (batch: Batch) =>
      Effect.tryPromise({
        try: () =>
          fetch(tracing.endpoint, {
            method: "POST",
            headers: { "content-type": batch.contentType, "user-agent": `mcp-gateway/${GATEWAY_VERSION}` },
            body: batch.body,
            signal: AbortSignal.timeout(timeoutMs)
          }).then(async (response) => {
            // (Read to the end: the connection then goes back to the pool, for the next batch.)
            await response.arrayBuffer()
            if (!response.ok) throw new CollectorRefused(`the collector at ${where} answered ${response.status}`)
          }),
        catch: (e) =>
          e instanceof Error && (e.name === "TimeoutError" || e.name === "AbortError")
            ? `the collector at ${where} did not answer within ${timeoutMs} ms`
            : e instanceof CollectorRefused
            ? e.message
            : `cannot reach the collector at ${where} (${e instanceof Error ? (e.cause as Error | undefined)?.message ?? e.message : String(e)})`
      }).pipe(Effect.catchAll((why) => drop(batch.spans, why)))
    const sendNext = Queue.take(queue).pipe(
      Effect.flatMap((batch) => Effect.ensuring(post(batch), Effect.sync(() => void (queuedSpans -= batch.spans))))
    )
    yield* Effect.forkScoped(Effect.forever(sendNext))
    // At shutdown (after the exporter's last flush, which this finalizer precedes in the scope): what is queued, within the timeout.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const rest = yield* Queue.takeAll(queue)
        for (const batch of rest) yield* post(batch)
      }).pipe(Effect.timeout(Duration.millis(timeoutMs)), Effect.ignore)
    )

    const client = HttpClient.make((request) =>
      Effect.gen(function*() {
        const body = request.body
        const spans = spansIn.get(body) ?? 0
        if (body._tag === "Uint8Array") {
          if (queuedSpans + spans > tracing.maxQueuedSpans) {
            yield* drop(spans, `more than ${tracing.maxQueuedSpans} spans wait for the collector at ${where} (tracing.max_queued_spans)`)
          } else {
            queuedSpans += spans
            yield* Queue.offer(queue, { body: body.body, contentType: body.contentType, spans })
          }
        }
        return HttpClientResponse.fromWeb(request, new Response(null, { status: 202 }))
      })
    )

    const tracer = yield* OtlpTracer.make({
      url: tracing.endpoint,
      resource: { serviceName: tracing.serviceName, serviceVersion: GATEWAY_VERSION },
      exportInterval: tracing.exportInterval,
      shutdownTimeout: Duration.millis(timeoutMs)
    }).pipe(
      Effect.provideService(HttpClient.HttpClient, client),
      Effect.provideService(OtlpSerialization, serialization as never)
    )
    return Layer.setTracer(tracer)
  })
)
