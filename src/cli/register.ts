import { Args, Command, Options } from "@effect/cli"
import { Console, Effect, Option, Schema } from "effect"
import * as path from "node:path"
import { DEFAULT_REGISTRATION, loadGatewayConfig } from "../config/GatewayConfig.js"
import { addressesOf, endpointHost, makeEndpointPolicy } from "../domain/EndpointPolicy.js"
import { formatParseError } from "../domain/formatParseError.js"
import { derivedInstanceId, InstanceSpec, TemplateName } from "../domain/Instance.js"
import { readRegistryFile, writeRegistryFile } from "../registry/RegistryFile.js"
import { CommandFailed } from "./CommandFailed.js"
import { choiceFlag, integerFlag } from "./flags.js"
import { callGateway, describeFailure, resolveGatewayUrl, type Target, targetOptions } from "./gatewayClient.js"
import { defaultPidFile, readPidFile } from "./pidFile.js"
import { registryHolder } from "./registryLock.js"

const offlineFlag = Options.boolean("offline").pipe(
  Options.withDescription("Edit the registry file of a stopped gateway (needs --config naming its registry_file) instead of the running gateway's API")
)

/** The API's names for what the flags set, as the flags (a 400 names `body.instance.endpoint`; the user typed `--endpoint`). */
const FLAG_NAMES: ReadonlyArray<readonly [RegExp, string]> = [
  [/body\.instance\.endpoint/g, "--endpoint"],
  [/body\.instance\.command/g, "--command"],
  [/body\.instance\.working_dir/g, "--working-dir"],
  [/body\.instance\.env/g, "--env"],
  [/body\.instance\.weight/g, "--weight"],
  [/body\.instance\.id/g, "--id"],
  [/body\.instance\.transport/g, "--transport"],
  [/body\.template_name/g, "TEMPLATE"]
]

/** A failed answer of the API as the exit code the CLI promises: 2 for a refused request (bad usage), 1 for the rest. */
const failed = (what: string, answer: { readonly status: number; readonly body: unknown }) =>
  new CommandFailed({
    message: `${what}: ${FLAG_NAMES.reduce((text, [api, flag]) => text.replace(api, flag), describeFailure(answer))}`,
    exitCode: answer.status === 400 || answer.status === 409 || answer.status === 422 ? 2 : 1
  })

/** `--env K=V`, repeated. */
const parseEnv = (pairs: ReadonlyArray<string>): Effect.Effect<Record<string, string>, CommandFailed> => {
  const env: Record<string, string> = {}
  for (const pair of pairs) {
    const at = pair.indexOf("=")
    if (at <= 0) return Effect.fail(new CommandFailed({ message: `--env: expected KEY=VALUE, got "${pair}"`, exitCode: 2 }))
    env[pair.slice(0, at)] = pair.slice(at + 1)
  }
  return Effect.succeed(env)
}

/**
 * The registry file of a gateway that is not running, from its config. Refused while the
 * gateway runs: it would overwrite the file with its own state and lose the edit.
 */
const offlineRegistry = (target: Target, verb: "register" | "deregister") =>
  Effect.gen(function*() {
    if (Option.isNone(target.config)) {
      return yield* new CommandFailed({ message: "--offline needs --config FILE (the gateway's config, which names its registry_file)", exitCode: 2 })
    }
    const config = yield* loadGatewayConfig({ configFile: target.config.value }).pipe(
      Effect.mapError((e) => new CommandFailed({ message: e.message, exitCode: 2 }))
    )
    const file = config.gateway.registryFile
    if (file === undefined) {
      return yield* new CommandFailed({ message: `${target.config.value} sets no gateway.registry_file: there is nothing to edit offline`, exitCode: 2 })
    }
    const holder = registryHolder(file)
    if (holder !== undefined) {
      return yield* new CommandFailed({
        message: `a gateway is running with ${file} (pid ${holder}): ${verb} without --offline so that it takes effect at once, or stop it first`,
        exitCode: 1
      })
    }
    const recorded = readPidFile(Option.getOrElse(target.pidFile, defaultPidFile))
    const url = yield* resolveGatewayUrl({ ...target, gateway: Option.none(), pidFile: Option.none() })
    const answering = yield* Effect.promise(() =>
      fetch(`${url}/gateway/health`, { signal: AbortSignal.timeout(1_000) }).then((r) => r.ok, () => false)
    )
    if (answering || recorded?.alive === true) {
      return yield* new CommandFailed({
        message: `a gateway is running (${recorded?.alive === true ? `pid ${recorded.pid}, ` : ""}${answering ? url : recorded!.url}): ` +
          `${verb} without --offline so that it takes effect at once, or stop it first`,
        exitCode: 1
      })
    }
    return { file, config }
  })

export const registerCommand = Command.make(
  "register",
  {
    ...targetOptions,
    template: Args.text({ name: "TEMPLATE" }).pipe(Args.withDescription("The template to add the instance to (created if new)")),
    endpoint: Options.text("endpoint").pipe(Options.withPseudoName("URL"), Options.withDescription("An HTTP or legacy SSE server's URL"), Options.optional),
    transport: choiceFlag("transport", ["http", "sse"]).pipe(
      Options.withDescription("With --endpoint: Streamable HTTP (default) or legacy HTTP+SSE"),
      Options.withDefault("http" as const)
    ),
    command: Options.text("command").pipe(
      Options.withDescription("A stdio server's command line, e.g. \"python server.py\" (the gateway must allow stdio registration)"),
      Options.optional
    ),
    workingDir: Options.text("working-dir").pipe(Options.withDescription("With --command: the directory it runs in"), Options.optional),
    env: Options.text("env").pipe(Options.withPseudoName("KEY=VALUE"), Options.withDescription("With --command: an environment variable (repeat it)"), Options.repeated),
    id: Options.text("id").pipe(Options.withDescription("The instance's id (default {template}-{n})"), Options.optional),
    weight: integerFlag("weight", 1, 1000).pipe(Options.withDescription("Its weight for the weighted strategy (default 1)"), Options.optional),
    offline: offlineFlag
  },
  (flags) =>
    Effect.gen(function*() {
      if (Option.isSome(flags.endpoint) === Option.isSome(flags.command)) {
        return yield* new CommandFailed({ message: "register: give exactly one of --endpoint URL or --command \"...\"", exitCode: 2 })
      }
      if (Option.isSome(flags.command) && flags.command.value.trim() === "") {
        return yield* new CommandFailed({ message: "register: --command is empty; give the server's command line, e.g. --command \"python server.py\"", exitCode: 2 })
      }
      if (Option.isSome(flags.endpoint) && (Option.isSome(flags.workingDir) || flags.env.length > 0)) {
        return yield* new CommandFailed({ message: "register: --working-dir and --env are for --command (a stdio server); an --endpoint server runs elsewhere", exitCode: 2 })
      }
      if (Option.isSome(flags.command) && flags.transport !== "http") {
        return yield* new CommandFailed({ message: "register: --transport is for --endpoint; a --command server is always stdio", exitCode: 2 })
      }
      const env = yield* parseEnv(flags.env)
      const instance: Record<string, unknown> = Option.isSome(flags.endpoint)
        ? { transport: flags.transport, endpoint: flags.endpoint.value }
        : {
          transport: "stdio",
          command: flags.command.pipe(Option.getOrThrow),
          ...(Option.isSome(flags.workingDir) ? { working_dir: path.resolve(flags.workingDir.value) } : {}),
          ...(flags.env.length > 0 ? { env } : {})
        }
      if (Option.isSome(flags.id)) instance.id = flags.id.value
      if (Option.isSome(flags.weight)) instance.weight = flags.weight.value

      if (flags.offline) return yield* registerOffline(flags, flags.template, instance)

      const url = yield* resolveGatewayUrl(flags)
      const answer = yield* callGateway(url, "POST", "/gateway/register", { template_name: flags.template, instance })
      if (answer.status !== 201) return yield* failed(`register ${flags.template}`, answer)
      yield* Console.log(
        `registered ${answer.body.template_name}/${answer.body.instance_id} on ${url}` +
          (answer.body.persisted === false ? " (not persisted: the gateway has no registry_file, so it is gone at its next start)" : "")
      )
    })
).pipe(Command.withDescription(
  "Add an instance to a template of the running gateway (at once, and persisted to its registry file): " +
    "--endpoint URL [--transport http|sse] or --command \"...\" [--working-dir DIR] [--env K=V ...]; --offline edits a stopped gateway's registry file"
))

const registerOffline = (target: Target, template: string, instance: Record<string, unknown>) =>
  Effect.gen(function*() {
    const { config, file } = yield* offlineRegistry(target, "register")
    // The rules the API applies to names and counts: the gateway must be able to load (and serve) what is written here.
    yield* Schema.decodeUnknown(TemplateName)(template).pipe(
      Effect.mapError((e) => new CommandFailed({ message: `register: TEMPLATE: ${formatParseError(e)}`, exitCode: 2 }))
    )
    const spec = yield* Schema.decodeUnknown(InstanceSpec, { errors: "all" })(instance).pipe(
      Effect.mapError((e) => new CommandFailed({ message: `register: ${formatParseError(e)}`, exitCode: 2 }))
    )
    const registry = yield* readRegistryFile(file).pipe(Effect.mapError((e) => new CommandFailed({ message: e.message, exitCode: 2 })))
    const fromConfig = config.templates.find((t) => t.name === template)
    const taken = new Set([...(fromConfig?.instances.map((i) => i.id) ?? []), ...(registry.templates[template]?.instances.map((i) => i.id ?? "") ?? [])])
    let id = spec.id
    if (id === undefined) {
      let n = 1
      while (taken.has(derivedInstanceId(template, n))) n++
      id = derivedInstanceId(template, n)
    } else if (taken.has(id)) {
      return yield* new CommandFailed({ message: `register: template ${template} already has an instance ${id}`, exitCode: 2 })
    }
    const existing = registry.templates[template]
    const limits = config.gateway.registration ?? DEFAULT_REGISTRATION
    if ((existing?.instances.length ?? 0) >= limits.maxPerTemplate) {
      return yield* new CommandFailed({
        message: `register: template ${template} has ${limits.maxPerTemplate} registered instances in ${file}, its limit (gateway.max_registrations_per_template)`,
        exitCode: 2
      })
    }
    if (Object.values(registry.templates).reduce((n, t) => n + t.instances.length, 0) >= limits.maxTotal) {
      return yield* new CommandFailed({
        message: `register: ${file} has ${limits.maxTotal} registered instances, the limit (gateway.max_registrations)`,
        exitCode: 2
      })
    }
    if (spec.transport !== "stdio") {
      // (As the API: the gateway would send requests there once it loads the file.)
      const host = endpointHost(new URL(spec.endpoint))
      const verdict = makeEndpointPolicy(limits).check(host, yield* addressesOf(host))
      if (!verdict.allowed) return yield* new CommandFailed({ message: `register: ${verdict.message}`, exitCode: 2 })
    }
    const next = {
      ...registry,
      templates: { ...registry.templates, [template]: { ...existing, instances: [...(existing?.instances ?? []), { ...spec, id }] } }
    }
    yield* writeRegistryFile(file, next).pipe(Effect.mapError((e) => new CommandFailed({ message: e.message, exitCode: 1 })))
    yield* Console.log(`registered ${template}/${id} in ${file} (the gateway loads it when it starts)`)
  })

export const deregisterCommand = Command.make(
  "deregister",
  {
    ...targetOptions,
    template: Args.text({ name: "TEMPLATE" }),
    id: Args.text({ name: "ID" }).pipe(Args.withDescription("The instance's id (see `mcp-gateway status`)")),
    offline: offlineFlag
  },
  (flags) =>
    Effect.gen(function*() {
      if (flags.offline) {
        const { config, file } = yield* offlineRegistry(flags, "deregister")
        const registry = yield* readRegistryFile(file).pipe(Effect.mapError((e) => new CommandFailed({ message: e.message, exitCode: 2 })))
        const existing = registry.templates[flags.template]
        if (existing === undefined || !existing.instances.some((i) => i.id === flags.id)) {
          return yield* new CommandFailed({
            message: `deregister: ${file} has no instance ${flags.template}/${flags.id} (instances of the config file are removed by editing it)`,
            exitCode: 1
          })
        }
        const instances = existing.instances.filter((i) => i.id !== flags.id)
        const templates = { ...registry.templates }
        // A template the registry created goes with its last instance, as the API does it.
        if (instances.length === 0 && !config.templates.some((t) => t.name === flags.template)) delete templates[flags.template]
        else templates[flags.template] = { ...existing, instances }
        yield* writeRegistryFile(file, { ...registry, templates }).pipe(Effect.mapError((e) => new CommandFailed({ message: e.message, exitCode: 1 })))
        return yield* Console.log(`deregistered ${flags.template}/${flags.id} from ${file}`)
      }
      const url = yield* resolveGatewayUrl(flags)
      const answer = yield* callGateway(url, "DELETE", `/gateway/deregister/${encodeURIComponent(flags.template)}/${encodeURIComponent(flags.id)}`)
      if (answer.status !== 200) return yield* failed(`deregister ${flags.template}/${flags.id}`, answer)
      yield* Console.log(`deregistered ${flags.template}/${flags.id} on ${url} (it drains: requests in flight finish first)`)
    })
).pipe(Command.withDescription("Remove an instance from the running gateway (it drains first) and from its registry file; --offline edits a stopped gateway's registry file"))
