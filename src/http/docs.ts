import { readFileSync } from "node:fs"
import type * as http from "node:http"
import { createRequire } from "node:module"
import * as path from "node:path"

/**
 * ReDoc, served from the `redoc` package on this machine (no CDN: gateways often run offline).
 * The page reads the same `/openapi.json` that Swagger UI at `/docs` shows.
 */
const page = `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8" />
  <meta name="viewport" content="width=device-width, initial-scale=1" />
  <title>MCP Gateway API</title>
  <style>body { margin: 0; padding: 0; }</style>
</head>
<body>
  <redoc spec-url="/openapi.json"></redoc>
  <script src="/redoc/redoc.standalone.js"></script>
</body>
</html>`

let bundle: Buffer | undefined

export const redocPage = (res: http.ServerResponse) => {
  res.writeHead(200, { "content-type": "text/html; charset=utf-8", "content-length": Buffer.byteLength(page) })
  res.end(page)
}

export const redocAsset = (res: http.ServerResponse) => {
  if (bundle === undefined) {
    const require = createRequire(import.meta.url)
    bundle = readFileSync(path.join(path.dirname(require.resolve("redoc/package.json")), "bundles/redoc.standalone.js"))
  }
  res.writeHead(200, {
    "content-type": "text/javascript; charset=utf-8",
    "content-length": bundle.length,
    "cache-control": "public, max-age=86400"
  })
  res.end(bundle)
}
