import type * as http from "node:http"

/**
 * What a request sends on to HTTP backends from the client: its request id, and the client's
 * headers the template lists in `forward_headers` (the config refuses credentials and the
 * gateway's own headers there). Built key by key: spreading header records is slow in V8.
 */
export const forwardedHeaders = (req: http.IncomingMessage, names: ReadonlyArray<string>, requestId: string): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const name of names) {
    const value = req.headers[name]
    if (typeof value === "string") out[name] = value
  }
  out["x-request-id"] = requestId
  return out
}
