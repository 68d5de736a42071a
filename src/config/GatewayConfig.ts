import { Config, Context, Duration, Effect, Either, Layer, Option, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { formatParseError } from "../domain/formatParseError.js"
import { defineInstance, type InstanceDefinition, InstanceSpec, TemplateName } from "../domain/Instance.js"
import {
  DEFAULT_LOAD_BALANCER,
  LoadBalancerInput,
  type LoadBalancerSettings,
  resolveLoadBalancer,
  seconds
} from "../domain/LoadBalancer.js"
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
  sessionMaxLifetimeSeconds: 86_400
} as const

/** How long an MCP session lives at most, under these settings. */
export const sessionLifetimeOf = (gateway: { readonly sessionMaxLifetime?: Duration.Duration | undefined }): number =>
  Duration.toMillis(gateway.sessionMaxLifetime ?? Duration.seconds(DEFAULT_LIMITS.sessionMaxLifetimeSeconds))

/** Headers a template may never forward to its backends: the client's credentials, and what the gateway sets itself. */
const UNFORWARDABLE_HEADERS = new Set([
  "authorization", "x-api-key", "cookie", "host", "content-length", "content-type", "transfer-encoding", "connection",
  "accept", "mcp-session-id", "mcp-protocol-version", "last-event-id", "proxy-authorization", "upgrade", "te", "keep-alive",
  // The 2026-07-28 routing headers: the gateway derives them from the body it sends.
  "mcp-method", "mcp-name"
])
const unforwardable = (header: string) => UNFORWARDABLE_HEADERS.has(header) || header.startsWith("mcp-param-")

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
  prefix: Schema.optional(Schema.String)
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
    allow_stdio_registration: Schema.optional(Schema.Boolean),
    /** Browser origins allowed besides the loopback ones (CORS on the MCP endpoint; every other origin gets 403). */
    allowed_origins: Schema.optional(Schema.Array(Schema.String)),
    /** Host names the gateway answers to besides IP addresses and localhost (against DNS rebinding). */
    allowed_hosts: Schema.optional(Schema.Array(Schema.String)),
    /** Environment variables that registrations through the API may name in headers (`{"env": ...}`); none by default. */
    registration_env: Schema.optional(Schema.Array(Schema.String)),
    max_header_bytes: Schema.optional(PositiveInt(1024)),
    max_json_depth: Schema.optional(PositiveInt(2)),
    max_sessions: Schema.optional(PositiveInt(1)),
    max_sessions_per_client: Schema.optional(PositiveInt(1)),
    max_list_pages: Schema.optional(PositiveInt(1)),
    max_ended_sessions: Schema.optional(PositiveInt(100)),
    /** Seconds an MCP session lives at most, however busy (then 404: the client initializes again). */
    session_max_lifetime: Schema.optional(PositiveInt(60)),
    rate_limits: Schema.optional(Schema.Struct({
      /** Per credential (per client address without auth), over every route but /gateway/health. */
      per_client: Schema.optional(RateLimitInput),
      /** Per template, over the MCP operations of all its clients (a template's own `rate_limit` overrides it). */
      per_template: Schema.optional(RateLimitInput)
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
    export_interval_ms: Schema.optional(PositiveInt(10))
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
  /** Filters, transforms, cache and prefix, as given (undefined: none of them). */
  readonly exposure: ExposureInput | undefined
}

export interface GatewaySettings {
  readonly host: string
  readonly port: number
  readonly registryFile: string | undefined
  readonly allowStdioRegistration: boolean
  readonly allowedOrigins: ReadonlyArray<string>
  readonly allowedHosts: ReadonlyArray<string>
  readonly registrationEnv: ReadonlyArray<string>
  readonly maxBodyBytes: number
  readonly maxHeaderBytes: number
  readonly maxJsonDepth: number
  readonly maxSessions: number
  readonly maxSessionsPerClient: number
  readonly maxListPages: number
  /** (Absent in hand-made configs: DEFAULT_LIMITS.maxEndedSessions.) */
  readonly maxEndedSessions?: number | undefined
  /** How long an MCP session lives at most (its sealed id carries the expiry); absent: DEFAULT_LIMITS' (sessionLifetimeOf). */
  readonly sessionMaxLifetime?: Duration.Duration | undefined
  readonly rateLimits: { readonly perClient: RateLimit | undefined; readonly perTemplate: RateLimit | undefined }
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
  readonly registryStore?: { readonly kind: "redis"; readonly url: string; readonly prefix: string } | undefined
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

    const templates: Array<TemplateConfig> = []
    for (const [name, template] of Object.entries(file.templates ?? {})) {
      const seen = new Set<string>()
      const instances: Array<InstanceDefinition> = []
      template.instances.forEach((spec, index) => {
        const id = spec.id ?? `${name}-${index + 1}`
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
        exposure: exposureOf(template)
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
      else if (!/^rediss?:\/\//.test(url)) problems.push(`registry.url: expected a redis:// or rediss:// URL`)
      else registryStore = { kind: "redis", url, prefix: file.registry.prefix ?? "mcpgw:" }
    } else if (file.registry?.url !== undefined) {
      problems.push(`registry.url: only with "store": "redis"`)
    }
    const auth = file.auth === undefined ? undefined : yield* resolveAuth(file.auth, baseDir, problems)
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
        maxBodyBytes: file.gateway?.max_body_bytes ?? DEFAULT_MAX_BODY_BYTES,
        maxHeaderBytes: file.gateway?.max_header_bytes ?? DEFAULT_LIMITS.maxHeaderBytes,
        maxJsonDepth: file.gateway?.max_json_depth ?? DEFAULT_LIMITS.maxJsonDepth,
        maxSessions: file.gateway?.max_sessions ?? DEFAULT_LIMITS.maxSessions,
        maxSessionsPerClient: file.gateway?.max_sessions_per_client ?? DEFAULT_LIMITS.maxSessionsPerClient,
        maxListPages: file.gateway?.max_list_pages ?? DEFAULT_LIMITS.maxListPages,
        maxEndedSessions: file.gateway?.max_ended_sessions ?? DEFAULT_LIMITS.maxEndedSessions,
        sessionMaxLifetime: Duration.seconds(file.gateway?.session_max_lifetime ?? DEFAULT_LIMITS.sessionMaxLifetimeSeconds),
        rateLimits: {
          perClient: rateLimitOf(file.gateway?.rate_limits?.per_client),
          perTemplate: rateLimitOf(file.gateway?.rate_limits?.per_template)
        },
        auth,
        logLevel: flags.logLevel ?? file.gateway?.log_level ?? "info",
        defaults,
        baseDir,
        watchConfig: flags.configFile !== undefined && (file.gateway?.watch_config ?? true),
        sessionKeys,
        registryStore
      },
      templates,
      tracing: file.tracing === undefined ? undefined : {
        endpoint: file.tracing.otlp_endpoint,
        serviceName: file.tracing.service_name ?? "mcp-gateway",
        exportInterval: Duration.millis(file.tracing.export_interval_ms ?? 5000)
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
