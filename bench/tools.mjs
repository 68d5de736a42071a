// The other proxies the bench holds the gateway against that come from npm, installed on first
// use into .tmp/bench-tools (not dependencies of the gateway: nothing of theirs is in the lockfile).
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { root } from "./harness.mjs"

const TOOLS = path.join(root, ".tmp", "bench-tools")

const MCP_PROXY_BIN = path.join(TOOLS, "node_modules", "mcp-proxy", "dist", "bin", "mcp-proxy.mjs")

/** Whether mcp-proxy is installed already (a quick run installs nothing). */
export const mcpProxyInstalled = () => fs.existsSync(MCP_PROXY_BIN)

/** mcp-proxy (punkpeye/mcp-proxy): stdio server behind Streamable HTTP. Its bin, or undefined when it cannot be installed. */
export const mcpProxyBin = (version = "6.7.19") => {
  const bin = MCP_PROXY_BIN
  if (fs.existsSync(bin)) return bin
  fs.mkdirSync(TOOLS, { recursive: true })
  try {
    console.error(`bench: installing mcp-proxy@${version} into ${TOOLS}`)
    execFileSync("npm", ["install", "--no-audit", "--no-fund", "--no-save", "--prefix", TOOLS, `mcp-proxy@${version}`], { stdio: ["ignore", "ignore", "inherit"], timeout: 300_000 })
  } catch (e) {
    console.error(`bench: could not install mcp-proxy (${e.message}); its rows are left out`)
    return undefined
  }
  return fs.existsSync(bin) ? bin : undefined
}

/** The reference MCP server the stdio rows run (a dependency of the gateway's tests). */
export const serverEverything = path.join(root, "node_modules", "@modelcontextprotocol", "server-everything", "dist", "index.js")
