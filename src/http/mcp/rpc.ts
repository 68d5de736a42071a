import type { JsonRpcId } from "../../domain/JsonRpc.js"

/** A JSON-RPC error body, the form every error of the MCP endpoint takes (clients parse JSON-RPC there). */
export const rpcError = (id: JsonRpcId | null, code: number, message: string) => ({ jsonrpc: "2.0", id, error: { code, message } })

/** The `accept` header lists every one of these (or a wildcard that covers them). */
export const accepts = (header: string | undefined, ...types: ReadonlyArray<string>) => {
  if (header === undefined) return false
  const listed = header.split(",").map((part) => part.split(";")[0]!.trim().toLowerCase())
  return types.every((type) => listed.includes(type) || listed.includes("*/*") || listed.includes(`${type.split("/")[0]}/*`))
}
