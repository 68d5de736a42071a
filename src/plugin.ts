/**
 * The public API for plugin authors: `import { StrategyPlugin, HealthProbePlugin } from "mcp-gateway/plugin"`.
 * Built-in plugins in plugins/ import exactly this, as a user's plugin would.
 */
export { type SelectionContext, type Strategy, StrategyPlugin, noOptions } from "./strategy/StrategyPlugin.js"
export { type HealthProbe, HealthProbePlugin, ProbeError, type ProbeTarget } from "./health/HealthProbePlugin.js"
export type { HealthStatus, InstanceView } from "./domain/InstanceView.js"
export type { InstanceDefinition } from "./domain/Instance.js"
