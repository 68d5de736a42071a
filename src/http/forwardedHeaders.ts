import type * as http from "node:http"

/**
 * The client's headers a template passes on to its HTTP backends: only those it lists in
 * `forward_headers` (the config refuses credentials and the gateway's own headers there).
 */
export const forwardedHeaders = (req: http.IncomingMessage, names: ReadonlyArray<string>): Record<string, string> | undefined => {
  if (names.length === 0) return undefined
  let out: Record<string, string> | undefined
  for (const name of names) {
    const value = req.headers[name]
    if (typeof value === "string") (out ??= {})[name] = value
  }
  return out
}
