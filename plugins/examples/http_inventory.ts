/**
 * An example discovery provider: the instances an inventory service lists, fetched over HTTP
 * (a CMDB, a service registry with a JSON API, a static file on a web server). The URL must
 * answer with the discovery document `{"templates": {"name": {"instances": [...]}}}`.
 *
 * Use it from a config file by path (relative to the config file):
 *
 *   "discovery": { "providers": { "inventory": {
 *     "provider": "./plugins/http_inventory.js", "interval": 30,
 *     "options": { "url": "http://cmdb.internal/mcp-instances.json", "token_env": "CMDB_TOKEN" } } } }
 *
 * A discovery plugin is an ES module whose default export is `DiscoveryPlugin.make({...})`:
 * - `options`: an Effect Schema for the provider's `options` (checked at start-up);
 * - `make(options, context)`: runs once, at start; may fail with a DiscoveryError (start-up then
 *   stops, naming the provider); returns `{ discover, changes? }`;
 * - `discover`: everything the provider sees now, as a document; the gateway runs it at start,
 *   every `interval` and on `mcp-gateway sync`, bounded by the provider's `timeout`. What it
 *   returns replaces what it returned before; a failure changes nothing;
 * - `changes` (optional): a Stream that signals "run discover now" (a watch, a long poll).
 */
import { Effect, Schema } from "effect"
import { DiscoveryError, DiscoveryPlugin } from "mcp-gateway/plugin"

export default DiscoveryPlugin.make({
  name: "http_inventory",
  description: "Instances listed by an inventory service at a URL",
  defaultIntervalSeconds: 30,
  options: Schema.Struct({
    url: Schema.String.pipe(Schema.pattern(/^https?:\/\//, { message: () => "expected an http(s) URL" })),
    /** An environment variable holding a bearer token for the inventory (never the token itself in the config). */
    token_env: Schema.optional(Schema.String)
  }),
  make: (options) =>
    Effect.gen(function*() {
      const token = options.token_env === undefined ? undefined : process.env[options.token_env]
      if (options.token_env !== undefined && (token === undefined || token === "")) {
        return yield* new DiscoveryError({ message: `environment variable ${options.token_env} is not set` })
      }
      const headers: Record<string, string> = { accept: "application/json" }
      if (token !== undefined) headers.authorization = `Bearer ${token}`

      const discover = Effect.gen(function*() {
        // The gateway's timeout interrupts the effect; the signal aborts the request with it.
        const response = yield* Effect.tryPromise({
          try: (signal) => fetch(options.url, { headers, signal }),
          catch: (e) => new DiscoveryError({ message: `GET ${options.url}: ${(e as Error).cause ?? (e as Error).message}` })
        })
        if (!response.ok) {
          void response.body?.cancel()
          return yield* new DiscoveryError({ message: `GET ${options.url} answered ${response.status}` })
        }
        const json = yield* Effect.tryPromise({
          try: () => response.json() as Promise<unknown>,
          catch: () => new DiscoveryError({ message: `GET ${options.url}: the answer is not JSON` })
        })
        return yield* DiscoveryPlugin.decodeDocument(json, options.url)
      })

      return { discover }
    })
})
