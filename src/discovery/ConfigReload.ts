import { Context, Duration, Effect, Layer, Schedule, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { DEFAULT_AGGREGATION, GatewayConfig, loadGatewayConfig, NO_DISCOVERY } from "../config/GatewayConfig.js"
import { LiveAuth } from "../config/LiveAuth.js"
import { PluginError } from "../loader/PluginError.js"
import { PluginLoader } from "../loader/PluginLoader.js"
import { validateProviders } from "./Discovery.js"
import { loadBalancerJson } from "../domain/LoadBalancer.js"
import { HealthProbes } from "../health/HealthProbes.js"
import { Exposure } from "../exposure/Exposure.js"
import { Registry } from "../registry/Registry.js"
import { describeDiff, diffChangedSomething, emptyDiff, type RegistryDiff } from "../registry/RegistryDiff.js"
import { Strategies } from "../strategy/Strategies.js"

/** How often the file is read again in case no watch event came (a ConfigMap's symlink swap, a network file system). */
const POLL = Duration.seconds(5)
/** Editors write in bursts (truncate, write, rename): one reload for the burst. */
const SETTLE = Duration.millis(200)

/**
 * The sections a reload does not apply (they shape the server or its providers). `auth` applies
 * (keys and tokens are checked against the config as it stands, at every request), except
 * turning it on or off, which decides where the gateway may listen.
 */
const RESTART_SECTIONS = ["tracing", "discovery", "aggregation", "virtual_servers"] as const

export interface ReloadResult {
  readonly ok: boolean
  /** One line per problem when the new config was refused (the running one stays). */
  readonly problems?: ReadonlyArray<string> | undefined
  readonly diff: RegistryDiff
  /** Changed settings that take effect only at the next start. */
  readonly needsRestart: ReadonlyArray<string>
}

export interface ConfigReloadShape {
  /**
   * Reads the config file again and applies its templates; refused as a whole if anything in it
   * is invalid. Logged like a change the watch found, with `why` (`sync`).
   */
  readonly reload: (why: string) => Effect.Effect<ReloadResult>
  /** The config file, if the gateway was started with one. */
  readonly file: string | undefined
}

const parse = (text: string): Record<string, any> | undefined => {
  try {
    const value = JSON.parse(text)
    return typeof value === "object" && value !== null ? value : undefined
  } catch {
    return undefined
  }
}

/** What changed outside the templates, by setting name: those need a restart. */
const restartOnly = (before: Record<string, any> | undefined, after: Record<string, any>): Array<string> => {
  const changed: Array<string> = []
  const same = (a: unknown, b: unknown) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null)
  const { load_balancer: _a, watch_config: _b, ...gatewayBefore } = before?.gateway ?? {}
  const { load_balancer: _c, watch_config: _d, ...gatewayAfter } = after.gateway ?? {}
  for (const key of new Set([...Object.keys(gatewayBefore), ...Object.keys(gatewayAfter)])) {
    if (!same(gatewayBefore[key], gatewayAfter[key])) changed.push(`gateway.${key}`)
  }
  for (const section of RESTART_SECTIONS) if (!same(before?.[section], after[section])) changed.push(section)
  return changed
}

/**
 * Live configuration: the config file's templates (their instances, load_balancer, rate_limit,
 * forward_headers) apply while the gateway runs, on every change of the file (watched, and read
 * again every few seconds), on SIGHUP, and on `mcp-gateway sync`. A file that does not validate
 * as a whole, plugins included, is refused with its problems in the log and changes nothing.
 */
export class ConfigReload extends Context.Tag("mcp-gateway/ConfigReload")<ConfigReload, ConfigReloadShape>() {
  static readonly layer: Layer.Layer<ConfigReload, never, GatewayConfig | Registry | Strategies | HealthProbes | Exposure | PluginLoader | LiveAuth> = Layer.scoped(
    ConfigReload,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const registry = yield* Registry
      const strategies = yield* Strategies
      const probes = yield* HealthProbes
      const exposure = yield* Exposure
      const loader = yield* PluginLoader
      const liveAuth = yield* LiveAuth
      const flags = config.loadedFrom ?? {}
      const file = flags.configFile === undefined ? undefined : path.resolve(flags.configFile)
      const lock = yield* Effect.makeSemaphore(1)

      /** Why the file could not be read last (said once, until it can be read again). */
      let unreadable: string | undefined
      const readText = Effect.sync(() => {
        try {
          const text = file === undefined ? undefined : fs.readFileSync(file, "utf8")
          unreadable = undefined
          return text
        } catch (e) {
          unreadable = (e as Error).message
          return undefined
        }
      })
      /** The text last applied (or refused): a change is a file that reads differently. */
      let seen = yield* readText
      let applied = seen === undefined ? undefined : parse(seen)

      const refused = (problems: ReadonlyArray<string>): ReloadResult => ({ ok: false, problems, diff: emptyDiff, needsRestart: [] })

      const reloadText = (text: string | undefined) =>
        Effect.gen(function*() {
          seen = text
          if (file === undefined) return { ok: true, diff: emptyDiff, needsRestart: [] } satisfies ReloadResult
          if (text === undefined) return refused([`cannot read config file ${file}: ${unreadable ?? "unknown error"}`])
          const loaded = yield* Effect.either(loadGatewayConfig(flags))
          if (loaded._tag === "Left") return refused(loaded.left.problems)
          const next = loaded.right
          // Plugins of templates that are new or whose settings change must load, with valid options.
          const problems: Array<string> = []
          for (const t of next.templates) {
            const current = registry.template(t.name)
            if (current === undefined || JSON.stringify(loadBalancerJson(current.settings)) !== JSON.stringify(loadBalancerJson(t.loadBalancer))) {
              const invalid = yield* Effect.flip(Effect.zipRight(strategies.validate(t.loadBalancer), probes.validate(t.loadBalancer))).pipe(Effect.option)
              // (Named as at start: templates.{t}.load_balancer.strategy.)
              if (invalid._tag === "Some") problems.push(new PluginError({ ...invalid.value, template: t.name }).message)
            }
            if (current === undefined || JSON.stringify(current.exposure ?? null) !== JSON.stringify(t.exposure ?? null)) {
              const invalid = yield* Effect.flip(exposure.validate(`templates.${t.name}`, t.exposure)).pipe(Effect.option)
              if (invalid._tag === "Some") problems.push(invalid.value.message)
            }
          }
          // What takes effect at the next start must be startable: a provider or transform that
          // does not load would stop the next start, so the edit is refused now.
          // (Checked when changed only: what runs now was checked when it started.)
          const raw = parse(text) ?? {}
          const changed = (section: string) => JSON.stringify(raw[section] ?? null) !== JSON.stringify(applied?.[section] ?? null)
          if (changed("discovery")) {
            const invalid = yield* Effect.flip(validateProviders(loader, next.discovery ?? NO_DISCOVERY, next.gateway.baseDir, flags.configFile)).pipe(Effect.option)
            if (invalid._tag === "Some") problems.push(invalid.value.message)
          }
          if (changed("aggregation") || changed("virtual_servers")) {
            const aggregation = next.aggregation ?? DEFAULT_AGGREGATION
            for (const [location, v] of [["aggregation", aggregation.all] as const, ...aggregation.virtualServers.map((v) => [`virtual_servers.${v.name}`, v] as const)]) {
              const invalid = yield* Effect.flip(exposure.validate(location, v.exposure)).pipe(Effect.option)
              if (invalid._tag === "Some") problems.push(invalid.value.message)
            }
          }
          if (problems.length > 0) return refused(problems)
          const needsRestart = restartOnly(applied, raw)
          // (Applied on every reload, changed or not: a SIGHUP after fixing a JWKS file reads it again.)
          if (liveAuth.apply(next.gateway.auth) === "needs_restart" && changed("auth")) needsRestart.push("auth (turned on or off)")
          applied = raw
          const diff = yield* registry.applyConfig(next.templates)
          return { ok: true, diff, needsRestart } satisfies ReloadResult
        })

      /** The last reload was refused: the next good one says so, even if it changes nothing (the log's last word was an error). */
      let failing = false
      const logResult = (result: ReloadResult, why: string) => {
        const wasFailing = failing
        failing = !result.ok
        if (!result.ok) return Effect.logError(`config ${file}: not applied (${why}), the running config stays:\n${(result.problems ?? []).join("\n")}`)
        return Effect.zipRight(
          diffChangedSomething(result.diff) || result.diff.skipped.length > 0
            ? Effect.logInfo(`config ${file} applied (${why}): ${describeDiff(result.diff)}`)
            : wasFailing
            ? Effect.logInfo(`config ${file} is valid again (${why}): no change to templates`)
            : Effect.logDebug(`config ${file} read again (${why}): no change to templates`),
          result.needsRestart.length === 0
            ? Effect.void
            : Effect.logWarning(`config ${file}: ${result.needsRestart.join(", ")} changed; that takes effect at the next start`)
        )
      }

      const reload = (why: string) =>
        lock.withPermits(1)(Effect.flatMap(readText, reloadText)).pipe(Effect.tap((result) => file === undefined ? Effect.void : logResult(result, why)))

      /** A watch event or a poll: reload only if the file now reads differently from what was seen last. */
      let saidGone = false
      const checkForChange = (why: string) =>
        lock.withPermits(1)(Effect.gen(function*() {
          const text = yield* readText
          if (text === undefined) {
            if (saidGone) return
            saidGone = true
            return yield* Effect.logWarning(`config ${file} cannot be read (${unreadable}); the running config stays`)
          }
          saidGone = false
          if (text === seen) return
          yield* Effect.flatMap(reloadText(text), (result) => logResult(result, why))
        }))

      if (file !== undefined) {
        // SIGHUP reloads, watched or not (and even an unchanged file: after fixing what a file it
        // reads, such as a JWKS, pointed at). Handled, it no longer ends the process.
        const hangups = Stream.async<string>((emit) => {
          const onHup = () => void emit.single("SIGHUP")
          process.on("SIGHUP", onHup)
          return Effect.sync(() => void process.off("SIGHUP", onHup))
        })
        yield* hangups.pipe(Stream.runForEach(() => Effect.asVoid(reload("SIGHUP"))), Effect.forkScoped)
      }

      if (file !== undefined && config.gateway.watchConfig === true) {
        // The directory is watched, not the file: editors and ConfigMaps replace the file (a new inode).
        const events = Stream.async<void>((emit) => {
          let watcher: fs.FSWatcher | undefined
          try {
            watcher = fs.watch(path.dirname(file), () => void emit.single(undefined))
            watcher.on("error", () => undefined)
          } catch {
            // No watch on this file system: the poll below still sees changes.
          }
          return Effect.sync(() => watcher?.close())
        }).pipe(Stream.debounce(SETTLE), Stream.as("changed"))
        const polls = Stream.fromSchedule(Schedule.spaced(POLL)).pipe(Stream.as("changed"))
        yield* Stream.mergeAll([events, polls], { concurrency: 2 }).pipe(
          Stream.runForEach((why) => checkForChange(why)),
          Effect.forkScoped
        )
        yield* Effect.logDebug(`watching ${file} for changes`)
      }

      return { reload, file }
    })
  )
}
