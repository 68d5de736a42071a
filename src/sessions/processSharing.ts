import { isObject } from "../domain/JsonRpc.js"

/**
 * Whether a client session may share an instance's process (stdio) or SSE session (legacy SSE)
 * under `session_process: "auto"`: only where sharing cannot change what the client sees.
 *
 * The shared process was initialized by the gateway, with no client capabilities. A server
 * may offer different things to a client that declares capabilities (server-everything lists
 * `trigger-sampling-request` only to clients that can sample), and over a shared process a
 * request the server makes of "its client" (sampling, elicitation, roots) cannot be told apart
 * from another session's. So a session shares only if it declares nothing the gateway did not
 * (an empty `experimental` counts as nothing), and (checked per instance, by the caller) asks
 * for the protocol version the shared process speaks. Anything else gets a process of its own.
 */
export const capabilitiesAllowSharing = (initializeParams: Record<string, unknown>): boolean => {
  const capabilities = initializeParams.capabilities
  if (capabilities === undefined) return true
  if (!isObject(capabilities)) return false
  for (const [name, value] of Object.entries(capabilities)) {
    if (value === undefined) continue
    if (name === "experimental" && isObject(value) && Object.keys(value).length === 0) continue
    return false
  }
  return true
}
