import { Command, Options } from "@effect/cli"
import { Console } from "effect"
import { GATEWAY_VERSION, MODERN_PROTOCOL_VERSIONS, SUPPORTED_PROTOCOL_VERSIONS } from "../domain/Protocol.js"

/** `version`: the gateway's version, and the MCP revisions it speaks. */
export const versionCommand = Command.make(
  "version",
  { json: Options.boolean("json").pipe(Options.withDescription("Print JSON")) },
  ({ json }) => {
    const protocols = [...MODERN_PROTOCOL_VERSIONS, ...SUPPORTED_PROTOCOL_VERSIONS]
    return Console.log(
      json
        ? JSON.stringify({ version: GATEWAY_VERSION, node: process.versions.node, mcp_protocol_versions: protocols })
        : `mcp-gateway ${GATEWAY_VERSION} (node ${process.versions.node}; MCP ${protocols.join(", ")})`
    )
  }
).pipe(Command.withDescription("Print the gateway's version and the MCP protocol revisions it speaks"))
