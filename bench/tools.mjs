// What the bench holds the gateway against that comes from npm: mcp-proxy (a stdio server behind
// Streamable HTTP) and undici (whose Pool is compared with node:http's Agent). Installed on first
// use, together, into .tmp/bench-tools: not dependencies of the gateway, nothing in its lockfile.
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { root } from "./harness.mjs"

const TOOLS = path.join(root, ".tmp", "bench-tools")
const PACKAGES = ["mcp-proxy@6.7.19", "undici@6.29.1"]
const MCP_PROXY_BIN = path.join(TOOLS, "node_modules", "mcp-proxy", "dist", "bin", "mcp-proxy.mjs")
const UNDICI = path.join(TOOLS, "node_modules", "undici")

const present = () => fs.existsSync(MCP_PROXY_BIN) && fs.existsSync(path.join(UNDICI, "package.json"))

/**
 * The tools' paths (each undefined when it is not to be had). With `install: false` (a quick
 * run) nothing is fetched from the network: what is not at hand is left out.
 */
export const benchTools = ({ install }) => {
  if (!present() && install) {
    fs.mkdirSync(TOOLS, { recursive: true })
    try {
      console.error(`bench: installing ${PACKAGES.join(", ")} into ${TOOLS}`)
      execFileSync("npm", ["install", "--no-audit", "--no-fund", "--no-save", "--prefix", TOOLS, ...PACKAGES], { stdio: ["ignore", "ignore", "inherit"], timeout: 300_000 })
    } catch (e) {
      console.error(`bench: could not install them (${e.message}); their rows are left out`)
    }
  }
  return {
    mcpProxy: fs.existsSync(MCP_PROXY_BIN) ? MCP_PROXY_BIN : undefined,
    undici: fs.existsSync(path.join(UNDICI, "package.json")) ? UNDICI : undefined
  }
}

/** The reference MCP server the stdio rows run (a dependency of the gateway's tests). */
export const serverEverything = path.join(root, "node_modules", "@modelcontextprotocol", "server-everything", "dist", "index.js")
