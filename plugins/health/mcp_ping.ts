import { Effect } from "effect"
import { HealthProbePlugin, noOptions } from "mcp-gateway/plugin"

/**
 * MCP `ping` over the instance's own transport (the default probe). On an instance that has
 * no process or session yet, the transport starts one first: the probe also brings it up.
 */
export default HealthProbePlugin.make({
  name: "mcp_ping",
  description: "Sends an MCP ping over the instance's own transport.",
  options: noOptions,
  make: () => Effect.succeed({ probe: (target) => Effect.asVoid(target.request("ping")) })
})
