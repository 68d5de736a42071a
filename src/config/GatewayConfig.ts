import { Config, Context, Duration, Effect, Either, Layer, Option, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { formatParseError } from "../domain/formatParseError.js"
import { DEFAULT_REGISTRATION_DENY, parseEntry } from "../domain/EndpointPolicy.js"
import { isGatewayHeader } from "../domain/gatewayHeaders.js"
import { defineInstance, derivedInstanceId, InheritEnv, type InstanceDefinition, InstanceSpec, TemplateName } from "../domain/Instance.js"
import {
  DEFAULT_LOAD_BALANCER,
  LoadBalancerInput,
  type LoadBalancerSettings,
  resolveLoadBalancer,
  seconds
} from "../domain/LoadBalancer.js"
import { type SandboxLimits, SandboxInput } from "../domain/Sandbox.js"
import { parseToolLock, type ToolLock } from "../domain/ToolLock.js"
import { DEFAULT_INTEGRITY_POLICY, type IntegrityPolicy, IntegrityPolicyInput, resolveIntegrityPolicy } from "../domain/IntegrityPolicy.js"
import { resolveSecret, SecretInput, secretProblems } from "../domain/Secret.js"
import { CacheInput, type ExposureInput, ExposureFields } from "../domain/Exposure.js"
import { AuthInput, type AuthSettings, resolveAuth } from "./AuthConfig.js"
import { ConfigInvalid } from "./ConfigInvalid.js"

/** 4 MiB: far above any MCP request, small enough that a client cannot make the gateway buffer much. */
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

/** The request limits, each written once. */
export const DEFAULT_LIMITS = {
  /** All request headers together (Node answers 431 beyond). */
  maxHeaderBytes: 16 * 1024,
  /** How deeply a client's JSON may nest (deeper is a 400 that touches no backend). */
  maxJsonDepth: 64,
  /** MCP endpoint sessions open at once, in all and per client (credential, or address without auth). */
  maxSessions: 10_000,
  maxSessionsPerClient: 100,
  /** Backend requests one REST list may make following `nextCursor` (more: 502, never a truncated list). */
  maxListPages: 100,
  /** Ended session ids each replica remembers until their seal expires (so that none is taken over again). */
  maxEndedSessions: 100_000,
  /** Seconds a session lives at most, however busy (its sealed id expires then, on every replica). */
  sessionMaxLifetimeSeconds: 86_400,
  /** Seconds after which an instance's own lists are read again for drift, at its next passed health probe (docs/security.md). */
  driftCheckIntervalSeconds: 60
} as const

/** How long an MCP session lives at most, under these settings. */
export const sessionLifetimeOf = (gateway: { readonly sessionMaxLifetime?: Duration.Duration | undefined }): number =>
  Duration.toMillis(gateway.sessionMaxLifetime ?? Duration.seconds(DEFAULT_LIMITS.sessionMaxLifetimeSeconds))

/** What registrations through the API may do, and how much of it (see RegistrationSettings). */
export const DEFAULT_REGISTRATION: RegistrationSettings = {
  allow: [],
  deny: DEFAULT_REGISTRATION_DENY,
  maxPerTemplate: 100,
  maxTotal: 1_000,
  maxMetadataBytes: 16 * 1024
}

/**
 * The sandbox of stdio servers (domain/Sandbox.ts, transport/sandbox.ts): none unless the config
 * asks (an instance's, a template's or `gateway.sandbox`, the most specific wins); the limits
 * the presets set, which the object form's `limits` replace one by one. Memory is private
 * writable memory (RLIMIT_DATA, which V8's reserved address space does not count, unlike
 * RLIMIT_AS); no CPU-time limit by default (a long-lived server accumulates CPU time).
 */
export const DEFAULT_SANDBOX: { readonly setting: SandboxInput; readonly presetLimits: SandboxLimits } = {
  setting: "off",
  presetLimits: { memoryMb: 2048, cpuSeconds: undefined, openFiles: 1024, processes: 512 }
}

/** Failed authentications per client address (credential floods): see http/auth/AuthFailures.ts. */
export interface AuthFailureSettings {
  /** Failures an address may have in one interval; past them it gets 429 until the interval ends. */
  readonly maxFailures: number
  readonly interval: Duration.Duration
  /** Addresses followed at once. */
  readonly maxAddresses: number
}

export const DEFAULT_AUTH_FAILURES: AuthFailureSettings = { maxFailures: 20, interval: Duration.seconds(60), maxAddresses: 10_000 }

/**
 * What slow and many clients may hold of the gateway, each default written once. The connection
 * caps left unset are derived from the process's file-descriptor limit (http/connectionLimits.ts).
 */
export const DEFAULT_CLIENT_LIMITS = {
  /** A connection that has sent no request for this long is closed (slowloris, spare connections). */
  firstRequestTimeoutMs: 10_000,
  /** A client that takes nothing of what the gateway writes for this long is disconnected, its request cancelled. */
  writeTimeoutMs: 30_000,
  /** Bytes of stream events one response may hold while its client lags; past it the connection is closed. */
  maxBufferedBytesPerResponse: 8 * 1024 * 1024,
  /** Bytes held for all lagging clients together (events and unsent parts of answers); past it the longest-stalled go first. */
  maxBufferedBytes: 32 * 1024 * 1024
} as const

/** The client limits as resolved from the config; the connection caps undefined: derived from the descriptor limit. */
export interface ClientLimits {
  readonly maxConnections: number | undefined
  readonly maxConnectionsPerAddress: number | undefined
  readonly firstRequestTimeoutMs: number
  readonly writeTimeoutMs: number
  readonly maxBufferedBytesPerResponse: number
  readonly maxBufferedBytes: number
}

/** Headers a template may never forward to its backends: the client's credentials, and what the gateway sets itself (gatewayHeaders.ts). */
const CLIENT_CREDENTIAL_HEADERS = new Set(["authorization", "x-api-key", "cookie"])
const unforwardable = (header: string) => CLIENT_CREDENTIAL_HEADERS.has(header) || isGatewayHeader(header)

export const LogLevelName = Schema.Literal("trace", "debug", "info", "warn", "error", "fatal", "none")
export type LogLevelName = typeof LogLevelName.Type

const Port = Schema.Number.pipe(
  Schema.filter((n) => (Number.isInteger(n) && n >= 0 && n <= 65535) || `expected an integer from 0 to 65535, got ${n}`)
)

const PositiveInt = (min: number) =>
  Schema.Number.pipe(Schema.filter((n) => (Number.isInteger(n) && n >= min) || `expected an integer of at least ${min}, got ${n}`))

/** A token bucket: `requests_per_second` sustained, `burst` at once (default: one second's worth). */
const RateLimitInput = Schema.Struct({
  requests_per_second: Schema.Number.pipe(Schema.filter((n) => (Number.isFinite(n) && n > 0) || `expected a positive number, got ${n}`)),
  burst: Schema.optional(PositiveInt(1))
})
type RateLimitInput = typeof RateLimitInput.Type

export interface RateLimit {
  readonly perSecond: number
  readonly burst: number
}

const rateLimitOf = (input: RateLimitInput | undefined): RateLimit | undefined =>
  input === undefined ? undefined : { perSecond: input.requests_per_second, burst: input.burst ?? Math.max(1, Math.ceil(input.requests_per_second)) }

const authFailuresOf = (
  input: { readonly max_failures?: number | undefined; readonly interval?: number | undefined; readonly max_addresses?: number | undefined } | undefined
): AuthFailureSettings => ({
  maxFailures: input?.max_failures ?? DEFAULT_AUTH_FAILURES.maxFailures,
  interval: input?.interval === undefined ? DEFAULT_AUTH_FAILURES.interval : seconds(input.interval),
  maxAddresses: input?.max_addresses ?? DEFAULT_AUTH_FAILURES.maxAddresses
})

const PositiveSeconds = Schema.Number.pipe(
  Schema.filter((n) => (Number.isFinite(n) && n > 0) || `expected a positive number of seconds, got ${n}`)
)

/** One discovery provider: a built-in (`file`, `dns`, `command`) or a plugin by path, with its options. */
const DiscoveryProviderInput = Schema.Struct({
  provider: Schema.String,
  /** How often it runs, in seconds (default: the plugin's own, else 30). */
  interval: Schema.optional(PositiveSeconds),
  /** How long one run may take, in seconds (default 10); a run that takes longer fails and changes nothing. */
  timeout: Schema.optional(PositiveSeconds),
  options: Schema.optional(Schema.Unknown)
})

const DiscoveryInput = Schema.Struct({
  /** Run the providers at start and on their intervals (default); false: only on `mcp-gateway sync`. */
  sync: Schema.optional(Schema.Boolean),
  providers: Schema.optional(Schema.Record({ key: TemplateName, value: DiscoveryProviderInput }))
})

const TemplateInput = Schema.Struct({
  instances: Schema.optionalWith(Schema.Array(InstanceSpec), { default: () => [] }),
  load_balancer: Schema.optional(LoadBalancerInput),
  /** Requests to this template, from all clients together (overrides gateway.rate_limits.per_template). */
  rate_limit: Schema.optional(RateLimitInput),
  /** Client request headers passed on to this template's HTTP backends (none by default). */
  forward_headers: Schema.optional(Schema.Array(Schema.String)),
  /** Variables of the gateway's environment its stdio servers may see (overrides gateway.inherit_env; an instance's own overrides this). */
  inherit_env: Schema.optional(InheritEnv),
  /** Where its stdio servers run (overrides gateway.sandbox; an instance's own overrides this). */
  sandbox: Schema.optional(SandboxInput),
  /** Pinned tool definitions: what is pinned, what a change does (overrides gateway.tool_integrity field by field; docs/security.md). */
  tool_integrity: Schema.optional(IntegrityPolicyInput),
  /** What the template shows: allow/deny lists, transforms (see domain/Exposure.ts). */
  ...ExposureFields,
  cache: Schema.optional(CacheInput),
  /** Where templates are served together (`/mcp`), its names are `{prefix}{separator}{name}` (default: the template's name; "" for none). */
  prefix: Schema.optional(Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9._-]*$/, { message: () => "expected letters, digits, '.', '_' or '-' (or \"\" for none)" })))
})

const RegistryInput = Schema.Struct({
  /** Where run-time registrations live: the registry file (default) or a Redis every replica shares. */
  store: Schema.optional(Schema.Literal("file", "redis")),
  /** The Redis URL (redis://host:6379/0; rediss:// for TLS); `{"env": "NAME"}` to read it from the environment. */
  url: Schema.optional(SecretInput),
  /** Prepended to every key and channel (several fleets on one Redis). */
  prefix: Schema.optional(Schema.String),
  /** How long anything waits for Redis, in milliseconds, before going on without it (default 250). */
  timeout_ms: Schema.optional(PositiveInt(10)),
  /** How often each replica checks Redis (answering? the shared registry intact?), in milliseconds (default 2000). */
  check_interval_ms: Schema.optional(PositiveInt(100))
})

/** Names of REST operations' first segments: a virtual server of such a name would be ambiguous under /mcp/v/. */
const RESERVED_VIRTUAL_NAMES = new Set(["tools", "resources", "prompts", "health"])

const AggregationInput = Schema.Struct({
  /** Serve every template together at /mcp (default true). */
  enabled: Schema.optional(Schema.Boolean),
  /** Between a template's prefix and a tool's or prompt's own name (default "__"). */
  separator: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.pattern(/^[A-Za-z0-9._-]+$/, { message: () => "expected letters, digits, '.', '_' or '-'" }))),
  /** Items per page of a merged list (default 100). */
  page_size: Schema.optional(PositiveInt(1)),
  /** How long one template may take to give its list, in seconds, before the merged list goes on without it (default 10). */
  list_timeout: Schema.optional(PositiveSeconds),
  ...ExposureFields
})

const VirtualServerInput = Schema.Struct({
  /** The templates it serves (default: every template). */
  templates: Schema.optional(Schema.Array(TemplateName).pipe(Schema.minItems(1, { message: () => "expected at least one template (leave templates out for every template)" }))),
  description: Schema.optional(Schema.String),
  ...ExposureFields
})

/** The config file as users write it (the seed's format). Unknown keys are errors: a typo must not pass silently. */
export const ConfigFile = Schema.Struct({
  gateway: Schema.optional(Schema.Struct({
    host: Schema.optional(Schema.String),
    port: Schema.optional(Port),
    registry_file: Schema.optional(Schema.String),
    /** The tools lock file (tool integrity): pinned at start; `start --locked` serves only what it holds. */
    tools_lock_file: Schema.optional(Schema.String),
    allow_stdio_registration: Schema.optional(Schema.Boolean),
    /** Browser origins allowed besides the loopback ones (CORS on the MCP endpoint; every other origin gets 403). */
    allowed_origins: Schema.optional(Schema.Array(Schema.String)),
    /** Host names the gateway answers to besides IP addresses and localhost (against DNS rebinding). */
    allowed_hosts: Schema.optional(Schema.Array(Schema.String)),
    /** Environment variables that registrations through the API may name in headers (`{"env": ...}`); none by default. */
    registration_env: Schema.optional(Schema.Array(Schema.String)),
    /** Endpoints registrations may point at, even if registration_deny lists them; when not empty, only these (IPs, CIDR blocks, host names). */
    registration_allow: Schema.optional(Schema.Array(Schema.String)),
    /** Endpoints registrations may not point at (default: link-local and cloud metadata addresses; giving the list replaces it). */
    registration_deny: Schema.optional(Schema.Array(Schema.String)),
    /** Instances registered through the API, per template and in all (config and discovered ones are not counted). */
    max_registrations_per_template: Schema.optional(PositiveInt(1)),
    max_registrations: Schema.optional(PositiveInt(1)),
    /** The largest `metadata` of a registered instance, in bytes of JSON. */
    max_metadata_bytes: Schema.optional(PositiveInt(2)),
    /** Variables of the gateway's environment every stdio server may see besides the default list (none by default). */
    inherit_env: Schema.optional(InheritEnv),
    /** Where every stdio server runs unless its template or itself says otherwise: "strict", "network", "off" (default) or an object (docs/configuration.md). */
    sandbox: Schema.optional(SandboxInput),
    /** Every template's tool integrity unless its own `tool_integrity` says otherwise (default: trust_on_first_use, block, route_to_pinned). */
    tool_integrity: Schema.optional(IntegrityPolicyInput),
    max_header_bytes: Schema.optional(PositiveInt(1024)),
    max_json_depth: Schema.optional(PositiveInt(2)),
    max_sessions: Schema.optional(PositiveInt(1)),
    max_sessions_per_client: Schema.optional(PositiveInt(1)),
    max_list_pages: Schema.optional(PositiveInt(1)),
    /** Open client connections in all, and from one address (default: from the file-descriptor limit). */
    max_connections: Schema.optional(PositiveInt(1)),
    max_connections_per_address: Schema.optional(PositiveInt(1)),
    /** Seconds a new connection may take to send its first request (default 10). */
    first_request_timeout: Schema.optional(PositiveSeconds),
    /** Seconds a client may take nothing of what the gateway writes before it is disconnected (default 30). */
    write_timeout: Schema.optional(PositiveSeconds),
    /** Bytes of events one response may hold for a lagging client (default 8 MiB). */
    max_buffered_bytes_per_response: Schema.optional(PositiveInt(64 * 1024)),
    /** Bytes held for all lagging clients together (default 32 MiB). */
    max_buffered_bytes: Schema.optional(PositiveInt(64 * 1024)),
    max_ended_sessions: Schema.optional(PositiveInt(100)),
    /** Seconds an MCP session lives at most, however busy (then 404: the client initializes again). */
    session_max_lifetime: Schema.optional(PositiveInt(60)),
    /** Seconds after which each instance's own lists are read again for drift between instances (at its next passed probe; default 60). */
    drift_check_interval: Schema.optional(PositiveSeconds),
    rate_limits: Schema.optional(Schema.Struct({
      /** Per credential (per client address without auth), over every route but /gateway/health. */
      per_client: Schema.optional(RateLimitInput),
      /** Per template, over the MCP operations of all its clients (a template's own `rate_limit` overrides it). */
      per_template: Schema.optional(RateLimitInput),
      /** Failed authentications per client address: past `max_failures` in `interval` seconds, 429 until it ends. */
      auth_failures: Schema.optional(Schema.Struct({
        max_failures: Schema.optional(PositiveInt(1)),
        interval: Schema.optional(PositiveSeconds),
        max_addresses: Schema.optional(PositiveInt(1))
      }))
    })),
    /** Request bodies larger than this many bytes are refused with 413. */
    max_body_bytes: Schema.optional(
      Schema.Number.pipe(Schema.filter((n) => (Number.isInteger(n) && n >= 1024) || `expected an integer of at least 1024, got ${n}`))
    ),
    log_level: Schema.optional(LogLevelName),
    /** Apply edits of the config file's templates while running (default true). */
    watch_config: Schema.optional(Schema.Boolean),
    /**
     * Keys that seal MCP session ids (AES-256-GCM), shared by every replica so that any of them
     * serves any session; the first seals, all open (rotation). Values may be {"env": "NAME"}.
     */
    session_keys: Schema.optional(Schema.Array(SecretInput)),
    /** Gateway-wide defaults for every template's load_balancer. */
    load_balancer: Schema.optional(LoadBalancerInput)
  })),
  templates: Schema.optional(Schema.Record({ key: TemplateName, value: TemplateInput })),
  /** Where instances come from besides the config and the API: DNS, files, a command, a plugin. */
  discovery: Schema.optional(DiscoveryInput),
  /** /mcp: every template behind one endpoint, names prefixed by template. */
  aggregation: Schema.optional(AggregationInput),
  /** Where registrations live: the registry file, or Redis for several replicas. */
  registry: Schema.optional(RegistryInput),
  /** /mcp/v/{name}: chosen templates, filtered, behind one endpoint each. */
  virtual_servers: Schema.optional(Schema.Record({ key: TemplateName, value: VirtualServerInput })),
  auth: Schema.optional(AuthInput),
  /** OpenTelemetry traces over OTLP/HTTP (JSON); off when absent. */
  tracing: Schema.optional(Schema.Struct({
    /** The collector's traces URL, e.g. http://localhost:4318/v1/traces */
    otlp_endpoint: Schema.String.pipe(Schema.pattern(/^https?:\/\//, { message: () => "expected an http(s) URL" })),
    service_name: Schema.optional(Schema.String),
    /** How often spans are sent, in milliseconds (default 5000). */
    export_interval_ms: Schema.optional(PositiveInt(10)),
    /** How long one export may take before its spans are dropped, in milliseconds (default 5000). */
    export_timeout_ms: Schema.optional(PositiveInt(10)),
    /** Spans that may wait for the collector; past this, new ones are dropped and counted (default 2048). */
    max_queued_spans: Schema.optional(PositiveInt(1))
  }))
})
export type ConfigFile = typeof ConfigFile.Type

export interface TemplateConfig {
  readonly name: string
  /** What the user wrote (kept to persist templates created at run time as they were given). */
  readonly loadBalancerInput: LoadBalancerInput | undefined
  readonly loadBalancer: LoadBalancerSettings
  readonly instances: ReadonlyArray<InstanceDefinition>
  /** Client headers (lower-case) passed on to the template's HTTP backends. */
  readonly forwardHeaders: ReadonlyArray<string>
  readonly rateLimit: RateLimit | undefined
  /** What its stdio servers may see of the gateway's environment (undefined: the gateway's inherit_env). */
  readonly inheritEnv?: ReadonlyArray<string> | undefined
  /** Where its stdio servers run (undefined: the gateway's sandbox). */
  readonly sandbox?: SandboxInput | undefined
  /** Filters, transforms, cache and prefix, as given (undefined: none of them). */
  readonly exposure: ExposureInput | undefined
  /** Its tool integrity, resolved over the gateway's (undefined: the gateway's). */
  readonly toolIntegrity?: IntegrityPolicy | undefined
}

/** What registrations through the API may do (gateway.registration_*, max_registrations*, max_metadata_bytes). */
export interface RegistrationSettings {
  /** Endpoint entries accepted whatever `deny` says; when not empty, the only ones accepted (domain/EndpointPolicy.ts). */
  readonly allow: ReadonlyArray<string>
  readonly deny: ReadonlyArray<string>
  /** Instances registered through the API in one template, and in all. */
  readonly maxPerTemplate: number
  readonly maxTotal: number
  readonly maxMetadataBytes: number
}

export interface GatewaySettings {
  readonly host: string
  readonly port: number
  readonly registryFile: string | undefined
  readonly allowStdioRegistration: boolean
  readonly allowedOrigins: ReadonlyArray<string>
  readonly allowedHosts: ReadonlyArray<string>
  readonly registrationEnv: ReadonlyArray<string>
  /** Variables of the gateway's environment every stdio server sees besides the default list (transport/childEnvironment.ts). */
  readonly inheritEnv?: ReadonlyArray<string> | undefined
  /** Where every stdio server runs unless its template or itself says otherwise (undefined: DEFAULT_SANDBOX). */
  readonly sandbox?: SandboxInput | undefined
  /** Every template's tool integrity unless its own says otherwise (undefined: DEFAULT_INTEGRITY_POLICY). */
  readonly toolIntegrity?: IntegrityPolicy | undefined
  /** Bounds of registrations through the API (undefined: DEFAULT_REGISTRATION). */
  readonly registration?: RegistrationSettings | undefined
  readonly maxBodyBytes: number
  readonly maxHeaderBytes: number
  readonly maxJsonDepth: number
  readonly maxSessions: number
  readonly maxSessionsPerClient: number
  readonly maxListPages: number
  /** Connection caps, timeouts and buffer bounds for clients (absent: DEFAULT_CLIENT_LIMITS, caps derived). */
  readonly clientLimits?: ClientLimits | undefined
  /** (Absent in hand-made configs: DEFAULT_LIMITS.maxEndedSessions.) */
  readonly maxEndedSessions?: number | undefined
  /** How long an MCP session lives at most (its sealed id carries the expiry); absent: DEFAULT_LIMITS' (sessionLifetimeOf). */
  readonly sessionMaxLifetime?: Duration.Duration | undefined
  /** How old an instance's offer may get before its next passed probe reads it again (absent: DEFAULT_LIMITS.driftCheckIntervalSeconds). */
  readonly driftCheckInterval?: Duration.Duration | undefined
  readonly rateLimits: { readonly perClient: RateLimit | undefined; readonly perTemplate: RateLimit | undefined }
  /** Failed authentications per client address (undefined: DEFAULT_AUTH_FAILURES). */
  readonly authFailures?: AuthFailureSettings | undefined
  /** Authentication, when configured (API keys and/or JWTs); undefined: every caller is anonymous. */
  readonly auth: AuthSettings | undefined
  readonly logLevel: LogLevelName
  /** Defaults applied to templates that leave a load_balancer field unset (file, then environment). */
  readonly defaults: LoadBalancerSettings
  /** Relative paths in the config (working_dir, registry_file) are relative to this directory. */
  readonly baseDir: string
  /** Whether edits of the config file apply while the gateway runs (only with a config file). */
  readonly watchConfig?: boolean | undefined
  /** The secrets session ids are sealed with (none: a key of this process's own). */
  readonly sessionKeys?: ReadonlyArray<string> | undefined
  /** Registrations in Redis, shared by replicas (undefined: the registry file, if any). */
  readonly registryStore?: RedisStoreSettings | undefined
  /** The tools lock file (`gateway.tools_lock_file`) and what it holds, read at start; undefined: none (or not written yet). */
  readonly toolsLock?: ToolsLockSettings | undefined
}

/** The tools lock file: where it is, what it pins (source "lock file"), and whether only that is served. */
export interface ToolsLockSettings {
  readonly file: string
  /** undefined: the file does not exist yet (`mcp-gateway tools lock` writes it); refused with `locked`. */
  readonly lock: ToolLock | undefined
  /** `start --locked`: every template's pin policy is `locked` (anything not in the lock is refused, as `block` does). */
  readonly locked: boolean
}

/** `registry.store: "redis"`: the Redis replicas share, and how long the gateway waits for it. */
export interface RedisStoreSettings {
  readonly kind: "redis"
  readonly url: string
  readonly prefix: string
  /** The most any command may take (rate limits, registrations, checks) before the gateway goes on without Redis. */
  readonly timeout: Duration.Duration
  /** How often each replica checks that Redis answers and that the shared registry is intact. */
  readonly checkInterval: Duration.Duration
}

export const DEFAULT_REDIS_TIMEOUT_MS = 250
export const DEFAULT_REDIS_CHECK_INTERVAL_MS = 2000

/**
 * A problem with a Redis URL (`redis://[user:password@]host[:port][/db]`), or undefined. The URL
 * is never repeated (it may hold a password): a password with `#`, `?`, `/` or `@` must be
 * percent-encoded, or the URL means another host.
 */
export const redisUrlProblem = (url: string): string | undefined => {
  const expected = "expected redis://[user:password@]host[:port][/db] or rediss://...; " +
    "percent-encode '#', '?', '/', '@' and '%' in the user or password (%23, %3F, %2F, %40, %25)"
  if (!/^rediss?:\/\//i.test(url)) return `expected a redis:// or rediss:// URL`
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return `not a valid URL: ${expected}`
  }
  if (parsed.hostname === "" || parsed.hash !== "" || !/^(\/\d*)?$/.test(parsed.pathname)) return `not a valid Redis URL: ${expected}`
  try {
    decodeURIComponent(parsed.username)
    decodeURIComponent(parsed.password)
  } catch {
    return `not a valid Redis URL (a bad %-escape in the user or password): ${expected}`
  }
  return undefined
}

export interface DiscoveryProviderSettings {
  /** Its name in the config: instances it finds have the source `discovery:{name}`. */
  readonly name: string
  /** A built-in name or a module path. */
  readonly provider: string
  readonly interval: Duration.Duration | undefined
  readonly timeout: Duration.Duration
  readonly options: unknown
}

export interface DiscoverySettings {
  /** Providers run at start and on their intervals; false: only when asked (`mcp-gateway sync`). */
  readonly sync: boolean
  readonly providers: ReadonlyArray<DiscoveryProviderSettings>
}

export const NO_DISCOVERY: DiscoverySettings = { sync: true, providers: [] }

export interface VirtualServerSettings {
  /** `*` for /mcp, else the virtual server's name (/mcp/v/{name}). */
  readonly name: string
  /** The templates it serves; undefined: every template (present and future). */
  readonly templates: ReadonlyArray<string> | undefined
  readonly description: string | undefined
  /** Filters and transforms over its merged, prefixed names. */
  readonly exposure: ExposureInput | undefined
}

export interface AggregationSettings {
  /** Whether /mcp serves every template. */
  readonly enabled: boolean
  readonly separator: string
  readonly pageSize: number
  readonly listTimeout: Duration.Duration
  /** /mcp itself, as a virtual server of every template. */
  readonly all: VirtualServerSettings
  readonly virtualServers: ReadonlyArray<VirtualServerSettings>
}

export const DEFAULT_AGGREGATION: AggregationSettings = {
  enabled: true,
  separator: "__",
  pageSize: 100,
  listTimeout: Duration.seconds(10),
  all: { name: "*", templates: undefined, description: undefined, exposure: undefined },
  virtualServers: []
}

export interface TracingSettings {
  readonly endpoint: string
  readonly serviceName: string
  readonly exportInterval: Duration.Duration
  /** The most one export may take (its spans are dropped after it). */
  readonly exportTimeout: Duration.Duration
  /** Spans waiting for the collector, at most. */
  readonly maxQueuedSpans: number
}

export interface GatewayConfigShape {
  readonly gateway: GatewaySettings
  readonly templates: ReadonlyArray<TemplateConfig>
  /** OpenTelemetry export, when configured. */
  readonly tracing?: TracingSettings | undefined
  readonly discovery?: DiscoverySettings | undefined
  /** /mcp and the virtual servers (default: DEFAULT_AGGREGATION). */
  readonly aggregation?: AggregationSettings | undefined
  /** How it was loaded (file and flags), so a reload reads it the same way. */
  readonly loadedFrom?: ConfigFlags | undefined
}

/** Command-line flags: they override the environment and the file. */
export interface ConfigFlags {
  readonly configFile?: string | undefined
  readonly host?: string | undefined
  readonly port?: number | undefined
  readonly registryFile?: string | undefined
  readonly logLevel?: LogLevelName | undefined
  /** `--sync` / `--no-sync`: overrides `discovery.sync`. */
  readonly sync?: boolean | undefined
  /** `--locked`: every template serves only what the tools lock file holds. */
  readonly locked?: boolean | undefined
  /** Resolve `gateway.tools_lock_file`'s path without reading it (the CLI's client commands: `tools lock` rewrites a broken one). */
  readonly skipToolsLock?: boolean | undefined
}

const decodeFile = Schema.decodeUnknownEither(ConfigFile, { onExcessProperty: "error", errors: "all" })

/** Environment variables of the seed; each overrides the file and is overridden by flags. */
const environment = Config.all({
  host: Config.option(Config.string("MCP_GATEWAY_HOST")),
  port: Config.option(Config.string("MCP_GATEWAY_PORT")),
  registryFile: Config.option(Config.string("MCP_GATEWAY_REGISTRY_FILE")),
  healthInterval: Config.option(Config.string("MCP_GATEWAY_HEALTH_INTERVAL")),
  healthTimeout: Config.option(Config.string("MCP_GATEWAY_HEALTH_TIMEOUT")),
  strategy: Config.option(Config.string("MCP_GATEWAY_DEFAULT_STRATEGY")),
  maxRetries: Config.option(Config.string("MCP_GATEWAY_MAX_RETRIES")),
  sessionKeys: Config.option(Config.string("MCP_GATEWAY_SESSION_KEYS")),
  redisUrl: Config.option(Config.string("MCP_GATEWAY_REDIS_URL"))
})

const parseNumber = (
  problems: Array<string>,
  name: string,
  raw: Option.Option<string>,
  check: (n: number) => boolean,
  expected: string
): number | undefined => {
  if (Option.isNone(raw) || raw.value.trim() === "") return undefined
  const n = Number(raw.value)
  if (Number.isFinite(n) && check(n)) return n
  problems.push(`${name}: expected ${expected}, got ${JSON.stringify(raw.value)}`)
  return undefined
}

const readConfigFile = (file: string): Effect.Effect<unknown, ConfigInvalid> =>
  Effect.tryPromise({
    try: () => fs.readFile(file, "utf8"),
    catch: (e) => new ConfigInvalid({ problems: [`cannot read config file ${file}: ${(e as Error).message}`] })
  }).pipe(
    Effect.flatMap((text) =>
      Effect.try({
        try: () => JSON.parse(text) as unknown,
        catch: (e) => new ConfigInvalid({ problems: [`${file}: invalid JSON: ${(e as Error).message}`] })
      })
    )
  )

/**
 * Builds the gateway's configuration from the file (optional), the environment and the flags,
 * and reports every problem at once, each naming its path.
 */
export const loadGatewayConfig = (flags: ConfigFlags): Effect.Effect<GatewayConfigShape, ConfigInvalid> =>
  Effect.gen(function*() {
    const raw = flags.configFile === undefined ? {} : yield* readConfigFile(flags.configFile)
    const decoded = decodeFile(raw)
    if (Either.isLeft(decoded)) {
      return yield* new ConfigInvalid({ problems: formatParseError(decoded.left) })
    }
    const file = decoded.right
    const env = yield* environment.pipe(
      Effect.catchAll((e) => new ConfigInvalid({ problems: [`environment: ${e.message}`] }))
    )
    const problems: Array<string> = []
    const envPort = parseNumber(
      problems,
      "MCP_GATEWAY_PORT",
      env.port,
      (n) => Number.isInteger(n) && n >= 0 && n <= 65535,
      "an integer from 0 to 65535"
    )
    const envInterval = parseNumber(problems, "MCP_GATEWAY_HEALTH_INTERVAL", env.healthInterval, (n) => n > 0, "a positive number of seconds")
    const envTimeout = parseNumber(problems, "MCP_GATEWAY_HEALTH_TIMEOUT", env.healthTimeout, (n) => n > 0, "a positive number of seconds")
    const envRetries = parseNumber(
      problems,
      "MCP_GATEWAY_MAX_RETRIES",
      env.maxRetries,
      (n) => Number.isInteger(n) && n >= 0 && n <= 100,
      "an integer from 0 to 100"
    )

    const baseDir = flags.configFile === undefined ? process.cwd() : path.dirname(path.resolve(flags.configFile))
    const fileDefaults = resolveLoadBalancer(DEFAULT_LOAD_BALANCER, file.gateway?.load_balancer)
    const defaults: LoadBalancerSettings = {
      ...fileDefaults,
      strategy: Option.getOrUndefined(env.strategy) || fileDefaults.strategy,
      health_check_interval: envInterval === undefined ? fileDefaults.health_check_interval : seconds(envInterval),
      health_check_timeout: envTimeout === undefined ? fileDefaults.health_check_timeout : seconds(envTimeout),
      max_retries: envRetries ?? fileDefaults.max_retries
    }

    const gatewayIntegrity = resolveIntegrityPolicy(DEFAULT_INTEGRITY_POLICY, file.gateway?.tool_integrity)
    const templates: Array<TemplateConfig> = []
    for (const [name, template] of Object.entries(file.templates ?? {})) {
      const seen = new Set<string>()
      const instances: Array<InstanceDefinition> = []
      template.instances.forEach((spec, index) => {
        const id = spec.id ?? derivedInstanceId(name, index + 1)
        if (seen.has(id)) {
          problems.push(`templates.${name}.instances[${index}].id: duplicate instance id ${JSON.stringify(id)}`)
          return
        }
        seen.add(id)
        if (spec.transport !== "stdio") problems.push(...secretProblems(spec.headers, `templates.${name}.instances[${index}]`))
        instances.push(defineInstance(name, id, resolvePaths(spec, baseDir), "config"))
      })
      const forwardHeaders = (template.forward_headers ?? []).map((h) => h.toLowerCase())
      forwardHeaders.forEach((h, i) => {
        if (unforwardable(h)) {
          problems.push(
            `templates.${name}.forward_headers[${i}]: ${JSON.stringify(h)} is never forwarded (the client's credentials ` +
              `and the headers the gateway sets itself); give backend credentials in the instance's headers`
          )
        }
      })
      templates.push({
        name,
        loadBalancerInput: template.load_balancer,
        loadBalancer: resolveLoadBalancer(defaults, template.load_balancer),
        instances,
        forwardHeaders,
        rateLimit: rateLimitOf(template.rate_limit),
        inheritEnv: template.inherit_env,
        sandbox: template.sandbox,
        exposure: exposureOf(template),
        toolIntegrity: template.tool_integrity === undefined ? undefined : resolveIntegrityPolicy(gatewayIntegrity, template.tool_integrity)
      })
    }
    for (const name of Object.keys(file.virtual_servers ?? {})) {
      if (RESERVED_VIRTUAL_NAMES.has(name)) {
        problems.push(`virtual_servers.${name}: "${name}" cannot name a virtual server (/mcp/v/${name} would read as a template's operation); choose another name`)
      }
    }
    const sessionKeys: Array<string> = []
    const keysFromEnv = Option.getOrUndefined(env.sessionKeys)
    const keyInputs: ReadonlyArray<SecretInput> = keysFromEnv !== undefined && keysFromEnv.trim() !== ""
      ? keysFromEnv.split(",").map((k) => k.trim()).filter((k) => k !== "")
      : file.gateway?.session_keys ?? []
    keyInputs.forEach((input, i) => {
      const where = keysFromEnv !== undefined && keysFromEnv.trim() !== "" ? `MCP_GATEWAY_SESSION_KEYS[${i}]` : `gateway.session_keys[${i}]`
      const value = resolveSecret(input)
      if (typeof value !== "string") problems.push(`${where}: ${value.missing}`)
      else if (value.length < 32) problems.push(`${where}: expected a key of at least 32 characters (openssl rand -base64 32), got ${value.length}`)
      else sessionKeys.push(value)
    })
    let registryStore: GatewaySettings["registryStore"]
    if (file.registry?.store === "redis") {
      const url = file.registry.url === undefined ? Option.getOrUndefined(env.redisUrl) : resolveSecret(file.registry.url)
      if (url === undefined) problems.push(`registry.url: expected the Redis URL (redis://host:6379) with "store": "redis" (or MCP_GATEWAY_REDIS_URL)`)
      else if (typeof url !== "string") problems.push(`registry.url: ${url.missing}`)
      else if (redisUrlProblem(url) !== undefined) problems.push(`registry.url: ${redisUrlProblem(url)}`)
      else {
        registryStore = {
          kind: "redis",
          url,
          prefix: file.registry.prefix ?? "mcpgw:",
          timeout: Duration.millis(file.registry.timeout_ms ?? DEFAULT_REDIS_TIMEOUT_MS),
          checkInterval: Duration.millis(file.registry.check_interval_ms ?? DEFAULT_REDIS_CHECK_INTERVAL_MS)
        }
      }
    } else if (file.registry?.url !== undefined) {
      problems.push(`registry.url: only with "store": "redis"`)
    }
    for (const list of ["registration_allow", "registration_deny"] as const) {
      file.gateway?.[list]?.forEach((entry, i) => {
        const parsed = parseEntry(entry)
        if (typeof parsed === "string") problems.push(`gateway.${list}[${i}]: ${parsed}`)
      })
    }
    const auth = file.auth === undefined ? undefined : yield* resolveAuth(file.auth, baseDir, problems)
    const toolsLock = yield* readToolsLock(file.gateway?.tools_lock_file, flags, baseDir, problems)
    // A `locked` template serves only what the lock file holds: without one it would serve nothing.
    const lockUnset = toolsLock === undefined && (file.gateway?.tools_lock_file ?? "") === ""
    if (flags.skipToolsLock !== true && (lockUnset || (toolsLock !== undefined && toolsLock.lock === undefined))) {
      const lockFileNeeded = "\"locked\" serves only what the tools lock file holds: " +
        (lockUnset ? "set gateway.tools_lock_file" : `${toolsLock!.file} does not exist`) + " (write it with `mcp-gateway tools lock`)"
      if (gatewayIntegrity.pin === "locked") problems.push(`gateway.tool_integrity.pin: ${lockFileNeeded}`)
      for (const t of templates) {
        if (file.templates?.[t.name]?.tool_integrity?.pin === "locked") problems.push(`templates.${t.name}.tool_integrity.pin: ${lockFileNeeded}`)
      }
    }
    if (problems.length > 0) return yield* new ConfigInvalid({ problems })

    const registryFile = flags.registryFile ?? Option.getOrUndefined(env.registryFile) ?? file.gateway?.registry_file
    return {
      gateway: {
        host: flags.host ?? Option.getOrUndefined(env.host) ?? file.gateway?.host ?? "127.0.0.1",
        port: flags.port ?? envPort ?? file.gateway?.port ?? 8080,
        registryFile: registryFile === undefined || registryFile === "" ? undefined : path.resolve(baseDir, registryFile),
        allowStdioRegistration: file.gateway?.allow_stdio_registration ?? false,
        allowedOrigins: file.gateway?.allowed_origins ?? [],
        allowedHosts: file.gateway?.allowed_hosts ?? [],
        registrationEnv: file.gateway?.registration_env ?? [],
        inheritEnv: file.gateway?.inherit_env ?? [],
        sandbox: file.gateway?.sandbox ?? DEFAULT_SANDBOX.setting,
        toolIntegrity: gatewayIntegrity,
        registration: {
          allow: file.gateway?.registration_allow ?? DEFAULT_REGISTRATION.allow,
          deny: file.gateway?.registration_deny ?? DEFAULT_REGISTRATION.deny,
          maxPerTemplate: file.gateway?.max_registrations_per_template ?? DEFAULT_REGISTRATION.maxPerTemplate,
          maxTotal: file.gateway?.max_registrations ?? DEFAULT_REGISTRATION.maxTotal,
          maxMetadataBytes: file.gateway?.max_metadata_bytes ?? DEFAULT_REGISTRATION.maxMetadataBytes
        },
        maxBodyBytes: file.gateway?.max_body_bytes ?? DEFAULT_MAX_BODY_BYTES,
        maxHeaderBytes: file.gateway?.max_header_bytes ?? DEFAULT_LIMITS.maxHeaderBytes,
        maxJsonDepth: file.gateway?.max_json_depth ?? DEFAULT_LIMITS.maxJsonDepth,
        maxSessions: file.gateway?.max_sessions ?? DEFAULT_LIMITS.maxSessions,
        maxSessionsPerClient: file.gateway?.max_sessions_per_client ?? DEFAULT_LIMITS.maxSessionsPerClient,
        maxListPages: file.gateway?.max_list_pages ?? DEFAULT_LIMITS.maxListPages,
        clientLimits: {
          maxConnections: file.gateway?.max_connections,
          maxConnectionsPerAddress: file.gateway?.max_connections_per_address,
          firstRequestTimeoutMs: file.gateway?.first_request_timeout === undefined
            ? DEFAULT_CLIENT_LIMITS.firstRequestTimeoutMs
            : file.gateway.first_request_timeout * 1000,
          writeTimeoutMs: file.gateway?.write_timeout === undefined ? DEFAULT_CLIENT_LIMITS.writeTimeoutMs : file.gateway.write_timeout * 1000,
          maxBufferedBytesPerResponse: file.gateway?.max_buffered_bytes_per_response ?? DEFAULT_CLIENT_LIMITS.maxBufferedBytesPerResponse,
          maxBufferedBytes: file.gateway?.max_buffered_bytes ?? DEFAULT_CLIENT_LIMITS.maxBufferedBytes
        },
        maxEndedSessions: file.gateway?.max_ended_sessions ?? DEFAULT_LIMITS.maxEndedSessions,
        sessionMaxLifetime: Duration.seconds(file.gateway?.session_max_lifetime ?? DEFAULT_LIMITS.sessionMaxLifetimeSeconds),
        driftCheckInterval: Duration.seconds(file.gateway?.drift_check_interval ?? DEFAULT_LIMITS.driftCheckIntervalSeconds),
        rateLimits: {
          perClient: rateLimitOf(file.gateway?.rate_limits?.per_client),
          perTemplate: rateLimitOf(file.gateway?.rate_limits?.per_template)
        },
        authFailures: authFailuresOf(file.gateway?.rate_limits?.auth_failures),
        auth,
        logLevel: flags.logLevel ?? file.gateway?.log_level ?? "info",
        defaults,
        baseDir,
        watchConfig: flags.configFile !== undefined && (file.gateway?.watch_config ?? true),
        sessionKeys,
        registryStore,
        toolsLock
      },
      templates,
      tracing: file.tracing === undefined ? undefined : {
        endpoint: file.tracing.otlp_endpoint,
        serviceName: file.tracing.service_name ?? "mcp-gateway",
        exportInterval: Duration.millis(file.tracing.export_interval_ms ?? 5000),
        exportTimeout: Duration.millis(file.tracing.export_timeout_ms ?? 5000),
        maxQueuedSpans: file.tracing.max_queued_spans ?? 2048
      },
      discovery: {
        sync: flags.sync ?? file.discovery?.sync ?? true,
        providers: Object.entries(file.discovery?.providers ?? {}).map(([name, p]) => ({
          name,
          provider: p.provider,
          interval: p.interval === undefined ? undefined : seconds(p.interval),
          timeout: seconds(p.timeout ?? 10),
          options: p.options ?? {}
        }))
      },
      aggregation: {
        enabled: file.aggregation?.enabled ?? DEFAULT_AGGREGATION.enabled,
        separator: file.aggregation?.separator ?? DEFAULT_AGGREGATION.separator,
        pageSize: file.aggregation?.page_size ?? DEFAULT_AGGREGATION.pageSize,
        listTimeout: file.aggregation?.list_timeout === undefined ? DEFAULT_AGGREGATION.listTimeout : seconds(file.aggregation.list_timeout),
        all: { name: "*", templates: undefined, description: undefined, exposure: exposureOf(file.aggregation ?? {}) },
        virtualServers: Object.entries(file.virtual_servers ?? {}).map(([name, v]) => ({
          name,
          templates: v.templates,
          description: v.description,
          exposure: exposureOf(v)
        }))
      },
      loadedFrom: flags
    }
  })

/** The exposure fields of a template (or an aggregate), or undefined when it sets none. */
const exposureOf = (t: Partial<typeof TemplateInput.Type>): ExposureInput | undefined => {
  const exposure: ExposureInput = {
    ...(t.tools === undefined ? {} : { tools: t.tools }),
    ...(t.prompts === undefined ? {} : { prompts: t.prompts }),
    ...(t.resources === undefined ? {} : { resources: t.resources }),
    ...(t.transforms === undefined ? {} : { transforms: t.transforms }),
    ...(t.cache === undefined ? {} : { cache: t.cache }),
    ...(t.prefix === undefined ? {} : { prefix: t.prefix })
  }
  return Object.keys(exposure).length === 0 ? undefined : exposure
}

/**
 * The tools lock file, read and checked whole: a file that is there but half-written or malformed
 * stops start-up (and `config validate`) with its problems, never pins less than it says. A file
 * not written yet is no problem unless `--locked` asks to serve from it.
 */
const readToolsLock = (name: string | undefined, flags: ConfigFlags, baseDir: string, problems: Array<string>) =>
  Effect.gen(function*() {
    const locked = flags.locked === true
    if (name === undefined || name === "") {
      if (locked) problems.push("--locked: needs gateway.tools_lock_file, the lock file to serve from (write it with `mcp-gateway tools lock`)")
      return undefined
    }
    const file = path.resolve(baseDir, name)
    if (flags.skipToolsLock === true) return { file, lock: undefined, locked } satisfies ToolsLockSettings
    const read = yield* Effect.promise(() => fs.readFile(file, "utf8").then((text) => ({ text }), (error: NodeJS.ErrnoException) => ({ error })))
    if ("error" in read) {
      if (read.error.code === "ENOENT" && !locked) return { file, lock: undefined, locked } satisfies ToolsLockSettings
      problems.push(
        read.error.code === "ENOENT"
          ? `gateway.tools_lock_file: ${file} does not exist, and --locked serves only what it holds (write it with \`mcp-gateway tools lock\`)`
          : `gateway.tools_lock_file: cannot read ${file}: ${read.error.message}`
      )
      return undefined
    }
    const text = read.text
    const parsed = parseToolLock(text, file)
    if (Either.isLeft(parsed)) {
      problems.push(...parsed.left.map((p) => `gateway.tools_lock_file: ${p}`))
      return undefined
    }
    return { file, lock: parsed.right, locked } satisfies ToolsLockSettings
  })

/** A stdio instance runs in its working_dir, relative to the config's directory, or in that directory. */
export const resolvePaths = <S extends InstanceSpec>(spec: S, baseDir: string): S =>
  spec.transport === "stdio"
    ? { ...spec, working_dir: path.resolve(baseDir, spec.working_dir ?? ".") }
    : spec

export class GatewayConfig extends Context.Tag("mcp-gateway/GatewayConfig")<GatewayConfig, GatewayConfigShape>() {
  /** A config value given directly (tests, embedding). */
  static readonly layer = (config: GatewayConfigShape): Layer.Layer<GatewayConfig> =>
    Layer.succeed(GatewayConfig, config)

  /** File + environment + flags, validated. */
  static readonly load = (flags: ConfigFlags): Layer.Layer<GatewayConfig, ConfigInvalid> =>
    Layer.effect(GatewayConfig, loadGatewayConfig(flags))
}
