import { Schema } from "effect"
import * as path from "node:path"

/**
 * The `sandbox` setting of stdio servers (per instance, per template, gateway-wide; the most
 * specific one given wins, whole). A preset name, `"off"`, or an object that starts from a
 * preset (default `strict`) and says what differs. transport/sandbox.ts turns the resolved
 * settings into the bubblewrap command line that runs the server.
 */
export const SandboxPresetName = Schema.Literal("strict", "network")
export type SandboxPresetName = typeof SandboxPresetName.Type

const Limit = Schema.Number.pipe(
  Schema.filter((n) => (Number.isInteger(n) && n >= 1) || `expected an integer of at least 1, got ${n}`)
)

const SandboxPath = Schema.String.pipe(Schema.minLength(1, { message: () => "expected a path (absolute, or relative to the instance's working_dir)" }))

export const SandboxLimitsInput = Schema.Struct({
  /** Private writable memory (RLIMIT_DATA), in MiB. */
  memory_mb: Schema.optional(Limit),
  /** CPU time over the process's whole life (RLIMIT_CPU), in seconds: past it the kernel kills it (and the gateway restarts it). */
  cpu_seconds: Schema.optional(Limit),
  /** Open files (RLIMIT_NOFILE). */
  open_files: Schema.optional(Limit),
  /** Processes and threads (RLIMIT_NPROC, counted in the server's own user namespace: each server's own budget). */
  processes: Schema.optional(Limit)
})
export type SandboxLimitsInput = typeof SandboxLimitsInput.Type

export const SandboxObjectInput = Schema.Struct({
  preset: Schema.optional(SandboxPresetName),
  network: Schema.optional(Schema.Literal("none", "host")),
  /** Paths it may read besides the system directories (its virtualenv, its installed code, ...; npx needs its npm cache writable). */
  read: Schema.optional(Schema.Array(SandboxPath)),
  /** Paths it may read and write besides its working directory. */
  write: Schema.optional(Schema.Array(SandboxPath)),
  limits: Schema.optional(SandboxLimitsInput)
})

export const SandboxInput = Schema.Union(Schema.Literal("strict", "network", "off"), SandboxObjectInput)
export type SandboxInput = typeof SandboxInput.Type

export interface SandboxLimits {
  readonly memoryMb?: number | undefined
  readonly cpuSeconds?: number | undefined
  readonly openFiles?: number | undefined
  readonly processes?: number | undefined
}

/** A sandbox as a process is started in it: absolute paths, every limit decided. */
export interface SandboxSettings {
  /** The preset it starts from ("custom" when the object form changed something of it). */
  readonly preset: SandboxPresetName | "custom"
  readonly network: "none" | "host"
  readonly read: ReadonlyArray<string>
  /** Writable paths: the working directory first, then the `write` list. */
  readonly write: ReadonlyArray<string>
  readonly limits: SandboxLimits
  /** Files of the gateway's own (its config and registry files) covered where a visible path holds them; set by the gateway. */
  readonly hide?: ReadonlyArray<string> | undefined
}

/**
 * The sandbox of a stdio instance from the setting that applies (its own, else its template's,
 * else the gateway's, else the default), or undefined for none. `workingDir` is absolute;
 * relative paths of the lists are relative to it. `presetLimits` are the limits a preset sets
 * (GatewayConfig.ts writes them); the object form's `limits` replace them one by one.
 */
export const resolveSandbox = (
  setting: SandboxInput | undefined,
  workingDir: string,
  presetLimits: SandboxLimits
): SandboxSettings | undefined => {
  if (setting === undefined || setting === "off") return undefined
  if (typeof setting === "string") {
    return { preset: setting, network: setting === "network" ? "host" : "none", read: [], write: [workingDir], limits: presetLimits }
  }
  const preset = setting.preset ?? "strict"
  const presetNetwork = preset === "network" ? "host" : "none"
  const changed = (setting.network !== undefined && setting.network !== presetNetwork) ||
    (setting.read ?? []).length > 0 || (setting.write ?? []).length > 0 || setting.limits !== undefined
  const absolute = (p: string) => path.resolve(workingDir, p)
  const limits = setting.limits
  return {
    preset: changed ? "custom" : preset,
    network: setting.network ?? presetNetwork,
    read: (setting.read ?? []).map(absolute),
    write: [workingDir, ...(setting.write ?? []).map(absolute).filter((p) => p !== workingDir)],
    limits: {
      memoryMb: limits?.memory_mb ?? presetLimits.memoryMb,
      cpuSeconds: limits?.cpu_seconds ?? presetLimits.cpuSeconds,
      openFiles: limits?.open_files ?? presetLimits.openFiles,
      processes: limits?.processes ?? presetLimits.processes
    }
  }
}



/** What `/gateway/registry` shows of a sandbox. */
export const sandboxView = (sandbox: SandboxSettings | undefined) =>
  sandbox === undefined
    ? { preset: "off" as const }
    : {
      preset: sandbox.preset,
      network: sandbox.network,
      write: sandbox.write,
      read: sandbox.read,
      // As the config spells them (snake_case, as the rest of the API).
      limits: {
        memory_mb: sandbox.limits.memoryMb,
        cpu_seconds: sandbox.limits.cpuSeconds,
        open_files: sandbox.limits.openFiles,
        processes: sandbox.limits.processes
      }
    }
