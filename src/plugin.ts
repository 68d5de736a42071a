/**
 * The public API for plugin authors: `import { StrategyPlugin } from "mcp-gateway/plugin"`.
 * Built-in plugins in plugins/ import exactly this, as a user's plugin would.
 */
export { type SelectionContext, type Strategy, StrategyPlugin } from "./strategy/StrategyPlugin.js"
export type { HealthStatus, InstanceView } from "./domain/InstanceView.js"
export type { InstanceDefinition } from "./domain/Instance.js"
