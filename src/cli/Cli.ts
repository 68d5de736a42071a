import { Command } from "@effect/cli"
import { GATEWAY_VERSION } from "../domain/Protocol.js"
import { stopCommand } from "./background.js"
import { configCommand } from "./configValidate.js"
import { hashKeyCommand } from "./hashKey.js"
import { openapiCommand } from "./openapi.js"
import { deregisterCommand, registerCommand } from "./register.js"
import { startCommand } from "./start.js"
import { registryCommand, statusCommand } from "./status.js"
import { syncCommand } from "./sync.js"
import { toolsCommand } from "./tools.js"
import { versionCommand } from "./version.js"

export const rootCommand = Command.make("mcp-gateway").pipe(
  Command.withDescription("One URL for every MCP server: load balancing, health checks and failover"),
  Command.withSubcommands([
    startCommand,
    stopCommand,
    statusCommand,
    registerCommand,
    deregisterCommand,
    registryCommand,
    syncCommand,
    toolsCommand,
    configCommand,
    openapiCommand,
    hashKeyCommand,
    versionCommand
  ])
)

const subcommands = new Set(["start", "stop", "status", "register", "deregister", "registry", "sync", "tools", "config", "openapi", "hash-key", "version"])

/**
 * `start` is the default command: `mcp-gateway --config gateway.json` means
 * `mcp-gateway start --config gateway.json`. Help and version stay with the root.
 */
export const withDefaultCommand = (argv: ReadonlyArray<string>): ReadonlyArray<string> => {
  const [node, script, ...args] = argv
  const first = args[0]
  const rootOnly = new Set(["--help", "-h", "--version", "--wizard", "--completions"])
  if (first === undefined || (!subcommands.has(first) && first.startsWith("-") && !rootOnly.has(first))) {
    return [node!, script!, "start", ...args]
  }
  return argv
}

export const cli = Command.run(rootCommand, { name: "mcp-gateway", version: GATEWAY_VERSION })
