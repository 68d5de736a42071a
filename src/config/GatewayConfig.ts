import { Config, Context, Effect, Either, Layer, Option, Schema } from "effect"
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
import { ConfigInvalid } from "./ConfigInvalid.js"

/** 4 MiB: far above any MCP request, small enough that a client cannot make the gateway buffer much. */
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

export const LogLevelName = Schema.Literal("trace", "debug", "info", "warn", "error", "fatal", "none")
export type LogLevelName = typeof LogLevelName.Type

const Port = Schema.Number.pipe(
  Schema.filter((n) => (Number.isInteger(n) && n >= 0 && n <= 65535) || `expected an integer from 0 to 65535, got ${n}`)
)

const TemplateInput = Schema.Struct({
  instances: Schema.optionalWith(Schema.Array(InstanceSpec), { default: () => [] }),
  load_balancer: Schema.optional(LoadBalancerInput)
})

/** The config file as users write it (the seed's format). Unknown keys are errors: a typo must not pass silently. */
export const ConfigFile = Schema.Struct({
  gateway: Schema.optional(Schema.Struct({
    host: Schema.optional(Schema.String),
    port: Schema.optional(Port),
    registry_file: Schema.optional(Schema.String),
    allow_stdio_registration: Schema.optional(Schema.Boolean),
    /** Browser origins allowed on the MCP endpoint besides the loopback ones (against DNS rebinding). */
    allowed_origins: Schema.optional(Schema.Array(Schema.String)),
    /** Request bodies larger than this many bytes are refused with 413. */
    max_body_bytes: Schema.optional(
      Schema.Number.pipe(Schema.filter((n) => (Number.isInteger(n) && n >= 1024) || `expected an integer of at least 1024, got ${n}`))
    ),
    log_level: Schema.optional(LogLevelName),
    /** Gateway-wide defaults for every template's load_balancer. */
    load_balancer: Schema.optional(LoadBalancerInput)
  })),
  templates: Schema.optional(Schema.Record({ key: TemplateName, value: TemplateInput }))
})
export type ConfigFile = typeof ConfigFile.Type

export interface TemplateConfig {
  readonly name: string
  /** What the user wrote (kept to persist templates created at run time as they were given). */
  readonly loadBalancerInput: LoadBalancerInput | undefined
  readonly loadBalancer: LoadBalancerSettings
  readonly instances: ReadonlyArray<InstanceDefinition>
}

export interface GatewaySettings {
  readonly host: string
  readonly port: number
  readonly registryFile: string | undefined
  readonly allowStdioRegistration: boolean
  readonly allowedOrigins: ReadonlyArray<string>
  readonly maxBodyBytes: number
  readonly logLevel: LogLevelName
  /** Defaults applied to templates that leave a load_balancer field unset (file, then environment). */
  readonly defaults: LoadBalancerSettings
  /** Relative paths in the config (working_dir, registry_file) are relative to this directory. */
  readonly baseDir: string
}

export interface GatewayConfigShape {
  readonly gateway: GatewaySettings
  readonly templates: ReadonlyArray<TemplateConfig>
}

/** Command-line flags: they override the environment and the file. */
export interface ConfigFlags {
  readonly configFile?: string | undefined
  readonly host?: string | undefined
  readonly port?: number | undefined
  readonly registryFile?: string | undefined
  readonly logLevel?: LogLevelName | undefined
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
  maxRetries: Config.option(Config.string("MCP_GATEWAY_MAX_RETRIES"))
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
        instances.push(defineInstance(name, id, resolvePaths(spec, baseDir), "config"))
      })
      templates.push({
        name,
        loadBalancerInput: template.load_balancer,
        loadBalancer: resolveLoadBalancer(defaults, template.load_balancer),
        instances
      })
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
        maxBodyBytes: file.gateway?.max_body_bytes ?? DEFAULT_MAX_BODY_BYTES,
        logLevel: flags.logLevel ?? file.gateway?.log_level ?? "info",
        defaults,
        baseDir
      },
      templates
    }
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
