import { ParseResult, Schema } from "effect"
import { SandboxInput } from "./Sandbox.js"
import { canonicalJson } from "./canonicalJson.js"
import { gatewayHeaderNames, isGatewayHeader } from "./gatewayHeaders.js"
import { SecretInput } from "./Secret.js"
import { splitCommand } from "./splitCommand.js"

/**
 * The longest template or instance id (or virtual server, discovery provider) name, wherever
 * names enter: the config, the registry file, registrations, discovery. The HTTP routes that
 * carry a name in their path (`/mcp/{t}/health`, `/gateway/deregister/{t}/{id}`) accept the
 * same length (HttpServer.ts), so a name that can be registered can be probed and removed.
 */
export const MAX_NAME_LENGTH = 128

const NAME_PATTERN = new RegExp(`^[A-Za-z0-9][A-Za-z0-9._-]{0,${MAX_NAME_LENGTH - 1}}$`)

/** Template names appear in URLs (`/mcp/{template}/...`), so they are kept URL-safe. */
export const TemplateName = Schema.String.pipe(
  Schema.filter((s) =>
    NAME_PATTERN.test(s) ||
    `expected a name of letters, digits, '.', '_' or '-' (at most ${MAX_NAME_LENGTH}, not starting with a symbol), got ${
      JSON.stringify(s.length > MAX_NAME_LENGTH + 20 ? `${s.slice(0, MAX_NAME_LENGTH)}…` : s)
    }`
  )
)

export const InstanceId = TemplateName

/**
 * The id an instance gets when none is given: `{template}-{n}`, the template's name shortened
 * when need be so that the id is a name too (a template of 128 characters has instances).
 */
export const derivedInstanceId = (template: string, n: number): string => {
  const suffix = `-${n}`
  return template.slice(0, MAX_NAME_LENGTH - suffix.length) + suffix
}

const HttpUrl = Schema.String.pipe(
  Schema.filter((s) => {
    try {
      const url = new URL(s)
      if (url.protocol === "http:" || url.protocol === "https:") return true
    } catch {
      // fall through to the message
    }
    return `expected an http(s) URL, got ${JSON.stringify(s)}`
  })
)

const Weight = Schema.Number.pipe(
  Schema.filter((n) => (Number.isInteger(n) && n >= 1 && n <= 1000) || `expected an integer from 1 to 1000, got ${n}`)
)

/** `command` is an argv array, or one string split like a shell would (no shell runs it). */
const CommandLine = Schema.transformOrFail(Schema.String, Schema.Array(Schema.String), {
  strict: true,
  decode: (line, _, ast) => {
    const argv = splitCommand(line)
    if (typeof argv === "string") return ParseResult.fail(new ParseResult.Type(ast, line, argv))
    if (argv.length === 0) return ParseResult.fail(new ParseResult.Type(ast, line, "expected a non-empty command"))
    return ParseResult.succeed(argv)
  },
  encode: (argv) => ParseResult.succeed(argv.join(" "))
})

const Argv = Schema.Array(Schema.String).pipe(
  Schema.filter((argv) => argv.length > 0 || "expected a non-empty command")
)

export const Command = Schema.Union(Argv, CommandLine)

const StringMap = Schema.Record({ key: Schema.String, value: Schema.String })
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** What no header value may hold (RFC 9110 field-value: tab, visible ASCII, Latin-1), as the HTTP client checks before sending. */
const NOT_HEADER_TEXT = /[^\t\x20-\x7e\x80-\xff]/

/**
 * Headers sent to the instance; a value may come from the environment (`{"env": "FS_TOKEN"}`).
 * Never one the gateway writes itself (framing, hop-by-hop, MCP's own: gatewayHeaders.ts).
 */
const Headers = Schema.Record({ key: Schema.String, value: SecretInput }).pipe(
  Schema.filter((headers) => {
    const problems: Array<string> = []
    for (const [name, value] of Object.entries(headers)) {
      // (A literal that cannot be sent would be accepted, then fail every request of the instance.)
      if (typeof value === "string" && NOT_HEADER_TEXT.test(value)) {
        problems.push(`the value of ${JSON.stringify(name)} has a character no header value may have (a control character such as CR or LF, or one beyond Latin-1)`)
      }
      if (!HEADER_NAME.test(name)) problems.push(`${JSON.stringify(name)} is not a header name`)
      else if (isGatewayHeader(name)) {
        problems.push(
          `${JSON.stringify(name)} cannot be an instance header: the gateway sets it itself ` +
            `(framing, hop-by-hop and MCP protocol headers: ${gatewayHeaderNames().join(", ")})`
        )
      }
    }
    return problems.length === 0 || problems.join("; ")
  })
)
const Metadata = Schema.Record({ key: Schema.String, value: Schema.Unknown })

/**
 * Names of the gateway's environment a stdio server may see besides the default list
 * (transport/childEnvironment.ts): a name, or a prefix ending in `*` (`LC_*`, `AWS_*`).
 */
export const InheritEnv = Schema.Array(
  Schema.String.pipe(Schema.pattern(/^[A-Za-z_][A-Za-z0-9_]*\*?$/, { message: () => "expected an environment variable name, or a prefix ending in *" }))
)

export const StdioInstanceSpec = Schema.Struct({
  id: Schema.optional(InstanceId),
  transport: Schema.Literal("stdio"),
  command: Command,
  working_dir: Schema.optional(Schema.String),
  env: Schema.optional(StringMap),
  /** Variables of the gateway's environment it may see (default: its template's inherit_env, else the gateway's). */
  inherit_env: Schema.optional(InheritEnv),
  /** Where its process runs (domain/Sandbox.ts; default: its template's sandbox, else the gateway's). */
  sandbox: Schema.optional(SandboxInput),
  weight: Schema.optional(Weight),
  metadata: Schema.optional(Metadata)
})

export const HttpInstanceSpec = Schema.Struct({
  id: Schema.optional(InstanceId),
  transport: Schema.Literal("http"),
  endpoint: HttpUrl,
  headers: Schema.optional(Headers),
  weight: Schema.optional(Weight),
  metadata: Schema.optional(Metadata)
})

/** A server that only speaks the legacy HTTP+SSE transport (2024-11-05); `endpoint` is its SSE URL. */
export const SseInstanceSpec = Schema.Struct({
  id: Schema.optional(InstanceId),
  transport: Schema.Literal("sse"),
  endpoint: HttpUrl,
  headers: Schema.optional(Headers),
  weight: Schema.optional(Weight),
  metadata: Schema.optional(Metadata)
})

/** An instance as a user writes it in the config file or a registration request. */
export const InstanceSpec = Schema.Union(StdioInstanceSpec, HttpInstanceSpec, SseInstanceSpec)
export type InstanceSpec = typeof InstanceSpec.Type

/** An instance once it has an id and belongs to a template: what transports and strategies see. */
export type InstanceDefinition =
  & InstanceSpec
  & { readonly id: string; readonly template: string; readonly weight: number; readonly source: InstanceSource }

/**
 * Where an instance came from: the config file, a registration at run time (persisted), or a
 * discovery provider (`discovery:{provider}`: found again at every sync, never persisted).
 */
export type InstanceSource = "config" | "api" | `discovery:${string}`

/** The source of instances a discovery provider finds. */
export const discoverySource = (provider: string): InstanceSource => `discovery:${provider}`

export const defineInstance = (
  template: string,
  id: string,
  spec: InstanceSpec,
  source: InstanceSource
): InstanceDefinition => ({ ...spec, id, template, weight: spec.weight ?? 1, source })

/**
 * Whether two definitions describe the same instance (so a reload or a sync that finds it again
 * leaves it running): the same spec, compared by value, keys in any order.
 */
export const sameDefinition = (a: InstanceDefinition, b: InstanceDefinition): boolean =>
  a.source === b.source && canonicalJson(specOf(a)) === canonicalJson(specOf(b))

/** The spec to persist: what the user gave, with the id it got. */
export const specOf = (instance: InstanceDefinition): InstanceSpec => {
  const { template: _t, source: _s, ...spec } = instance
  return spec
}
