import { Effect, Schema } from "effect"
import { HealthProbePlugin, ProbeError } from "mcp-gateway/plugin"

/**
 * An HTTP GET of a path on the instance's host (for servers with a health endpoint of their
 * own, such as `/health`), expecting `expected_status`. The path is resolved against the
 * instance's endpoint (`/health` → the endpoint's origin + `/health`). For http and sse
 * instances; a stdio instance has no URL, and its probe says so.
 */
export default HealthProbePlugin.make({
  name: "http_get",
  description: "GETs a path on the instance's host and expects a status.",
  options: Schema.Struct({
    path: Schema.optionalWith(Schema.String, { default: () => "/health" }),
    expected_status: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.between(100, 599)), { default: () => 200 })
  }),
  make: (options) =>
    Effect.succeed({
      probe: ({ headers, instance }) => {
        if (instance.transport === "stdio") {
          return Effect.fail(new ProbeError({ message: "the http_get probe needs an http or sse instance (this one is stdio)" }))
        }
        const url = new URL(options.path, instance.endpoint)
        return Effect.tryPromise({
          try: (signal) => fetch(url, { signal, headers }),
          catch: (e) => new ProbeError({ message: `GET ${url}: ${(e as Error).cause ?? (e as Error).message}` })
        }).pipe(
          Effect.flatMap((response) => {
            // The body is not needed; let the connection go back to the pool.
            void response.body?.cancel()
            return response.status === options.expected_status
              ? Effect.void
              : Effect.fail(new ProbeError({ message: `GET ${url} answered ${response.status}, expected ${options.expected_status}` }))
          })
        )
      }
    })
})
