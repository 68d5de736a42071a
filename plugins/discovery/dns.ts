import { Effect, Schema } from "effect"
import { promises as dns } from "node:dns"
import { isIP } from "node:net"
import { DiscoveryError, DiscoveryPlugin } from "mcp-gateway/plugin"

/** Answers that mean "no instances now" (a headless service scaled to zero), not a failure. */
const EMPTY_ANSWERS = new Set(["ENODATA", "ENOTFOUND"])

const Port = Schema.Number.pipe(Schema.int(), Schema.between(1, 65535))

const HeaderValue = Schema.Union(Schema.String, Schema.Struct({ env: Schema.String }))

/** `ip`, `ip:port` or `[ipv6]:port`, as node:dns takes them. */
const ServerAddress = Schema.String.pipe(Schema.filter((s) => {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3}))(?::(\d{1,5}))?$|^([0-9a-fA-F:]+)$/.exec(s)
  const port = m?.[3] === undefined ? 53 : Number(m[3])
  return (m !== null && port >= 1 && port <= 65535 && isIP(m[1] ?? m[2] ?? m[4] ?? "") !== 0) ||
    `expected a DNS server's address (ip, ip:port or [ipv6]:port), got ${JSON.stringify(s)}`
}))

/**
 * A template whose instances are the addresses a DNS name resolves to, re-resolved every
 * interval: the A/AAAA records of a Kubernetes headless service, or SRV records (each target's
 * port and weight). Instances that leave the answer drain and stop; a resolver that fails or
 * times out changes nothing; a name with no records (NXDOMAIN, no data) means no instances.
 */
export default DiscoveryPlugin.make({
  name: "dns",
  description: "A template's instances from the A/AAAA or SRV records of a DNS name",
  defaultIntervalSeconds: 10,
  options: Schema.Struct({
    /** The template the instances belong to (created with `load_balancer` if the config has no such template). */
    template: Schema.String,
    /** The name to resolve, e.g. search.default.svc.cluster.local or _mcp._tcp.search.example. */
    name: Schema.String,
    record: Schema.optionalWith(Schema.Literal("A", "AAAA", "A+AAAA", "SRV"), { default: () => "A" as const }),
    /** The servers' port (for A/AAAA; SRV records carry their own). */
    port: Schema.optional(Port),
    path: Schema.optionalWith(Schema.String, { default: () => "/mcp" }),
    scheme: Schema.optionalWith(Schema.Literal("http", "https"), { default: () => "http" as const }),
    transport: Schema.optionalWith(Schema.Literal("http", "sse"), { default: () => "http" as const }),
    /** DNS servers to ask (`ip` or `ip:port`); default the system's. */
    servers: Schema.optional(Schema.Array(ServerAddress)),
    /** Sent to every instance (a value may be {"env": "NAME"}). */
    headers: Schema.optional(Schema.Record({ key: Schema.String, value: HeaderValue })),
    load_balancer: Schema.optional(Schema.Unknown)
  }).pipe(
    Schema.filter((o) => o.record === "SRV" || o.port !== undefined || "port: expected the servers' port (A and AAAA records carry none)")
  ),
  make: (options) =>
    Effect.gen(function*() {
      // The template name and load_balancer are checked now, so a typo stops start-up rather than every run.
      yield* DiscoveryPlugin.decodeDocument(
        { templates: { [options.template]: { instances: [], ...(options.load_balancer === undefined ? {} : { load_balancer: options.load_balancer }) } } },
        "options"
      )
      const resolver = new dns.Resolver({ timeout: 2_000, tries: 2 })
      if (options.servers !== undefined && options.servers.length > 0) {
        const servers = options.servers
        yield* Effect.try({
          try: () => resolver.setServers([...servers]),
          catch: (e) => new DiscoveryError({ message: `options.servers: ${(e as Error).message}` })
        })
      }
      const path = options.path.startsWith("/") ? options.path : `/${options.path}`

      const lookup = <A>(what: string, query: () => Promise<Array<A>>) =>
        Effect.tryPromise({ try: query, catch: (e) => e as NodeJS.ErrnoException }).pipe(
          Effect.catchAll((e) =>
            EMPTY_ANSWERS.has(e.code ?? "")
              ? Effect.succeed<Array<A>>([])
              : Effect.fail(new DiscoveryError({ message: `${what} ${options.name}: ${e.code ?? e.message}` }))
          )
        )

      const addresses = (name: string) =>
        Effect.gen(function*() {
          const v4 = options.record === "AAAA" ? [] : yield* lookup("A", () => resolver.resolve4(name))
          const v6 = options.record === "A" ? [] : yield* lookup("AAAA", () => resolver.resolve6(name))
          return [...v4, ...v6]
        })

      const endpoint = (address: string, port: number) =>
        `${options.scheme}://${address.includes(":") ? `[${address}]` : address}:${port}${path}`

      const instance = (address: string, port: number, weight?: number) => ({
        transport: options.transport,
        endpoint: endpoint(address, port),
        ...(weight === undefined ? {} : { weight }),
        ...(options.headers === undefined ? {} : { headers: options.headers })
      })

      const discover = Effect.gen(function*() {
        let instances: Array<ReturnType<typeof instance>>
        if (options.record === "SRV") {
          const records = yield* lookup("SRV", () => resolver.resolveSrv(options.name))
          const weightOf = (r: { readonly weight: number }) => Math.min(1000, Math.max(1, r.weight))
          if (options.scheme === "https") {
            // Over TLS the target's name is the endpoint's host: certificates name hosts, not pod addresses.
            instances = records.map((r) => instance(r.name, r.port, weightOf(r)))
          } else {
            // Each target's addresses, through the same resolver (the gateway's own lookups may not know it).
            const resolved = yield* Effect.forEach(records, (r) =>
              Effect.map(addresses(r.name).pipe(Effect.orElseSucceed(() => [r.name])), (list) =>
                (list.length === 0 ? [r.name] : list).map((a) => instance(a, r.port, weightOf(r)))
              ))
            instances = resolved.flat()
          }
        } else {
          const list = yield* addresses(options.name)
          instances = list.map((a) => instance(a, options.port!))
        }
        // Sorted, so the same answer in another order is no change.
        instances.sort((a, b) => a.endpoint.localeCompare(b.endpoint))
        const document = {
          templates: {
            [options.template]: {
              ...(options.load_balancer === undefined ? {} : { load_balancer: options.load_balancer }),
              instances
            }
          }
        }
        return yield* DiscoveryPlugin.decodeDocument(document, "options")
      })

      return { discover }
    })
})
