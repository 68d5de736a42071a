import type { InstanceDefinition } from "../domain/Instance.js"
import { resolveSandbox, type SandboxInput, type SandboxSettings } from "../domain/Sandbox.js"
import { DEFAULT_SANDBOX } from "./GatewayConfig.js"

/**
 * The sandbox an instance's processes run in: its own setting, else its template's, else the
 * gateway's, else the default (the most specific wins whole); undefined for none (not stdio, or off).
 */
export const sandboxOf = (
  instance: InstanceDefinition,
  templateSetting: SandboxInput | undefined,
  gatewaySetting: SandboxInput | undefined
): SandboxSettings | undefined =>
  instance.transport !== "stdio" ? undefined : resolveSandbox(
    instance.sandbox ?? templateSetting ?? gatewaySetting ?? DEFAULT_SANDBOX.setting,
    instance.working_dir ?? process.cwd(),
    DEFAULT_SANDBOX.presetLimits
  )
