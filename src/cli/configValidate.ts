import { Args, Command } from "@effect/cli"
import { Console, Effect, Layer } from "effect"
import { DEFAULT_AGGREGATION, GatewayConfig, loadGatewayConfig } from "../config/GatewayConfig.js"
import { sandboxOf } from "../config/sandboxOf.js"
import { Discovery } from "../discovery/Discovery.js"
import { childEnvironment } from "../transport/childEnvironment.js"
import { probeSandbox, type SandboxVerdict } from "../transport/sandboxProbe.js"
import { runsAsRoot } from "../transport/stdio.js"
import { HealthProbes } from "../health/HealthProbes.js"
import { FleetRedis } from "../fleet/FleetRedis.js"
import { GatewayMetrics } from "../observability/GatewayMetrics.js"
import { Exposure } from "../exposure/Exposure.js"
import { ToolPinsLive } from "../integrity/ToolPinsLive.js"
import { InstanceOffers } from "../integrity/InstanceOffers.js"
import { PluginLoader } from "../loader/PluginLoader.js"
import { Registry } from "../registry/Registry.js"
import { loggerLayer } from "../observability/logging.js"
import { Strategies } from "../strategy/Strategies.js"
import { Timer } from "../clock/Timer.js"
import { CommandFailed } from "./CommandFailed.js"

/**
 * `mcp-gateway config validate FILE`: what `start` would say of the config, without starting
 * anything: the file's shape (one line per problem) and every template's strategy and health
 * probe plugin and every discovery provider, loaded and given their options. Exit 0 and a summary on stdout, or exit 2.
 */
const validate = Command.make(
  "validate",
  { file: Args.file({ name: "FILE", exists: "yes" }).pipe(Args.withDescription("The config file to check")) },
  ({ file }) =>
    Effect.gen(function*() {
      const config = yield* loadGatewayConfig({ configFile: file }).pipe(
        Effect.mapError((e) => new CommandFailed({ message: e.message, exitCode: 2 }))
      )
      // The plugins, as start builds them (no process is started, no port bound); discovery
      // providers are made but not run.
      const checked = { ...config, discovery: config.discovery === undefined ? undefined : { ...config.discovery, sync: false } }
      const plugins = Discovery.layer.pipe(
        Layer.provideMerge(Layer.mergeAll(Strategies.layer, HealthProbes.layer, Exposure.layer)),
        Layer.provideMerge(InstanceOffers.layerNoop),
        Layer.provideMerge(ToolPinsLive),
        Layer.provideMerge(Layer.mergeAll(Registry.layer, PluginLoader.layer, GatewayMetrics.layer)),
        // (Validating a config never connects to its Redis: the registry file's view of it is enough.)
        Layer.provide(FleetRedis.off),
        Layer.provide(Timer.layer),
        Layer.provide(GatewayConfig.layer(checked))
      )
      // The transforms of /mcp and the virtual servers, as start builds them.
      const aggregates = Effect.flatMap(Exposure, (exposure) => {
        const aggregation = config.aggregation ?? DEFAULT_AGGREGATION
        return Effect.forEach(
          [["aggregation", aggregation.all] as const, ...aggregation.virtualServers.map((v) => [`virtual_servers.${v.name}`, v] as const)],
          ([location, v]) => exposure.validate(location, v.exposure),
          { discard: true }
        )
      })
      yield* Effect.scoped(Effect.flatMap(Layer.build(plugins), (context) => Effect.provide(aggregates, context))).pipe(
        // Warnings (a registry file's refused entries) to stderr; stdout is the verdict's.
        Effect.provide(loggerLayer("warn", "text")),
        Effect.catchTag("PluginError", (e) => new CommandFailed({ message: e.message, exitCode: 2 })),
        Effect.catchTag("RegistryStorageError", (e) => new CommandFailed({ message: e.message, exitCode: 2 }))
      )
      // A sandbox that cannot be set up here stops its instance from starting: said now, as start would.
      // (Probed once per PATH, as the gateway does.)
      const verdicts = new Map<string, SandboxVerdict>()
      const verdictFor = (pathVar: string | undefined) =>
        Effect.suspend(() => {
          const known = verdicts.get(pathVar ?? "")
          return known !== undefined
            ? Effect.succeed(known)
            : Effect.tap(probeSandbox(pathVar, { asRoot: runsAsRoot() }), (v) => Effect.sync(() => verdicts.set(pathVar ?? "", v)))
        })
      const sandboxed = config.templates.flatMap((t) =>
        t.instances.flatMap((i) =>
          i.transport === "stdio" && sandboxOf(i, t.sandbox, config.gateway.sandbox) !== undefined ? [{ template: t.name, instance: i }] : []
        )
      )
      const unsandboxable = yield* Effect.forEach(sandboxed, ({ template, instance }) =>
        Effect.map(verdictFor(childEnvironment(instance.env, []).PATH), (verdict) =>
          verdict.unavailable === undefined ? [] : [`templates.${template}.instances.${instance.id}: ${verdict.unavailable}`])
      ).pipe(Effect.map((lines) => lines.flat()))
      if (unsandboxable.length > 0) return yield* new CommandFailed({ message: unsandboxable.join("\n"), exitCode: 2 })
      const instances = config.templates.reduce((n, t) => n + t.instances.length, 0)
      const providers = config.discovery?.providers.length ?? 0
      const lock = config.gateway.toolsLock?.lock
      const locked = lock === undefined ? 0 : Array.from(lock.templates.values()).reduce((n, d) => n + d.length, 0)
      yield* Console.log(
        `${file}: valid (${config.templates.length} templates, ${instances} instances` +
          `${providers === 0 ? "" : `, ${providers} discovery provider${providers === 1 ? "" : "s"}`}` +
          `${lock === undefined ? "" : `, ${locked} pinned definition${locked === 1 ? "" : "s"} in the tools lock file`})`
      )
    })
).pipe(Command.withDescription("Check a config file as start would (shape, plugins and their options) without starting anything; exit 2 with one line per problem"))

export const configCommand = Command.make("config").pipe(
  Command.withDescription("Work with config files"),
  Command.withSubcommands([validate])
)
