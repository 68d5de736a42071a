/**
 * The public API for plugin authors: `import { StrategyPlugin, HealthProbePlugin } from "mcp-gateway/plugin"`.
 * Built-in plugins in plugins/ import exactly this, as a user's plugin would.
 */
export { type SelectionContext, type Strategy, StrategyPlugin, noOptions } from "./strategy/StrategyPlugin.js"
export { type HealthProbe, HealthProbePlugin, ProbeError, type ProbeTarget } from "./health/HealthProbePlugin.js"
export type { HealthStatus, InstanceView } from "./domain/InstanceView.js"
export type { InstanceDefinition } from "./domain/Instance.js"
export {
  type DiscoveryContext,
  DiscoveredDocument,
  DiscoveryError,
  DiscoveryPlugin,
  type DiscoveryProvider
} from "./discovery/DiscoveryPlugin.js"
/** An argv array, or one command line split like a shell would (no shell runs it): what `command` takes in the config. */
export { Command as CommandLine } from "./domain/Instance.js"
export {
  type Transform,
  type TransformContext,
  TransformError,
  TransformPlugin,
  type TransformRequest
} from "./transform/TransformPlugin.js"
/** Which names a transform applies to: `globMatcher(["read_*"])("read_file")`; no globs match every name. */
export { globMatcher } from "./domain/Exposure.js"
