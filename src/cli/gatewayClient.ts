import { Options } from "@effect/cli"
import { Effect, Option } from "effect"
import { loadGatewayConfig } from "../config/GatewayConfig.js"
import { CommandFailed } from "./CommandFailed.js"
import { defaultPidFile, readPidFile } from "./pidFile.js"

/** The flags of every command that talks to a running gateway. */
export const targetOptions = {
  gateway: Options.text("gateway").pipe(
    Options.withPseudoName("URL"),
    Options.withDescription(
      "The running gateway (default: $MCP_GATEWAY_URL, else the one recorded in --pid-file, else --config's host and port, else the one `start --background` recorded in the default pid file, else http://127.0.0.1:8080)"
    ),
    Options.optional
  ),
  config: Options.file("config", { exists: "yes" }).pipe(
    Options.withDescription("The gateway's config file (for its host and port)"),
    Options.optional
  ),
  pidFile: Options.text("pid-file").pipe(
    Options.withDescription(`The pid file of a gateway started with --background (default ${defaultPidFile()})`),
    Options.optional
  )
}

export interface Target {
  readonly gateway: Option.Option<string>
  readonly config: Option.Option<string>
  readonly pidFile: Option.Option<string>
}

/** Where the running gateway is, by the rule in `--gateway`'s description. */
export const resolveGatewayUrl = (target: Target): Effect.Effect<string, CommandFailed> =>
  Effect.gen(function*() {
    if (Option.isSome(target.gateway)) return yield* validUrl(target.gateway.value, "--gateway")
    const env = process.env.MCP_GATEWAY_URL
    if (env !== undefined && env !== "") return yield* validUrl(env, "MCP_GATEWAY_URL")
    if (Option.isSome(target.pidFile)) {
      const named = readPidFile(target.pidFile.value)
      if (named !== undefined && named.alive) return named.url
      // Named on purpose: falling back to another address could reach someone else's gateway.
      return yield* new CommandFailed({
        message: named === undefined
          ? `no gateway recorded in ${target.pidFile.value}`
          : `the gateway recorded in ${target.pidFile.value} (pid ${named.pid}) is not running`,
        exitCode: 1
      })
    }
    if (Option.isSome(target.config)) {
      // (Its host and port only: a broken tools lock file must not stop `tools lock` from writing it again.)
      const config = yield* loadGatewayConfig({ configFile: target.config.value, skipToolsLock: true }).pipe(
        Effect.mapError((e) => new CommandFailed({ message: e.message, exitCode: 2 }))
      )
      const host = config.gateway.host === "0.0.0.0" ? "127.0.0.1" : config.gateway.host === "::" ? "[::1]" : config.gateway.host
      return `http://${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${config.gateway.port}`
    }
    const recorded = readPidFile(defaultPidFile())
    if (recorded !== undefined && recorded.alive) return recorded.url
    return "http://127.0.0.1:8080"
  })

const validUrl = (value: string, where: string): Effect.Effect<string, CommandFailed> => {
  try {
    const url = new URL(value)
    if (url.protocol === "http:" || url.protocol === "https:") return Effect.succeed(value.replace(/\/+$/, ""))
  } catch {
    // not a URL
  }
  return Effect.fail(new CommandFailed({ message: `${where}: expected the gateway's http(s) URL, e.g. http://127.0.0.1:8080, got "${value}"`, exitCode: 2 }))
}

export interface GatewayAnswer {
  readonly status: number
  readonly body: any
}

/**
 * One request to the running gateway's API, with the credential in `MCP_GATEWAY_API_KEY` if
 * set. A gateway that cannot be reached is exit 1 with what to do next; an answer of any
 * status is the caller's to read.
 */
export const callGateway = (
  url: string,
  method: "GET" | "POST" | "DELETE",
  path: string,
  body?: unknown
): Effect.Effect<GatewayAnswer, CommandFailed> =>
  Effect.tryPromise({
    try: async (signal) => {
      const headers: Record<string, string> = { accept: "application/json" }
      const key = process.env.MCP_GATEWAY_API_KEY
      if (key !== undefined && key !== "") headers.authorization = `Bearer ${key}`
      if (body !== undefined) headers["content-type"] = "application/json"
      const response = await fetch(`${url}${path}`, {
        method,
        headers,
        signal: AbortSignal.any([signal, AbortSignal.timeout(30_000)]),
        ...(body === undefined ? {} : { body: JSON.stringify(body) })
      })
      const text = await response.text()
      let parsed: unknown = text
      try {
        parsed = text === "" ? undefined : JSON.parse(text)
      } catch {
        // not JSON: kept as text
      }
      return { status: response.status, body: parsed }
    },
    catch: (e) => {
      const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).name
      return new CommandFailed({
        message: `cannot reach the gateway at ${url} (${cause}). Is it running? Start it with ` +
          "`mcp-gateway start --background`, or point at it with --gateway URL or MCP_GATEWAY_URL",
        exitCode: 1
      })
    }
  })

/** An error answer as one line: the gateway's own message, and what to do about a 401/403. */
export const describeFailure = (answer: GatewayAnswer): string => {
  const error = typeof answer.body === "object" && answer.body !== null ? answer.body.error : undefined
  const message = typeof error === "object" && error !== null && typeof error.message === "string"
    ? error.message
    : typeof answer.body === "string" && answer.body !== ""
    ? answer.body.slice(0, 300)
    : `HTTP ${answer.status}`
  if (answer.status === 401) return `${message} (set MCP_GATEWAY_API_KEY to an API key of the gateway)`
  if (answer.status === 403 && typeof error === "object" && error !== null && typeof error.scope === "string") {
    return `${message} (the credential in MCP_GATEWAY_API_KEY lacks it)`
  }
  return message
}
