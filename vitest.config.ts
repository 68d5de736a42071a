import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

export default defineConfig({
  resolve: {
    // Plugins import the public plugin API by package name; in tests that is the source file.
    alias: { "mcp-gateway/plugin": fileURLToPath(new URL("./src/plugin.ts", import.meta.url)) }
  },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // e2e suites start real servers and processes: keep files from competing for 2 cores
    fileParallelism: false
  }
})
