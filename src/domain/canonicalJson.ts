/** JSON with object keys sorted: equal values, equal text (capabilities, specs and params compared or used as keys as declared). */
export const canonicalJson = (value: unknown): string =>
  JSON.stringify(value ?? null, (_, v) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, (v as Record<string, unknown>)[k]]))
      : v)

/**
 * What a client declared to a server (its capabilities and its name), as one string: an old
 * server may answer by it (server-everything lists a sampling tool only to clients that sample),
 * so sessions are shared and cache entries kept per declaration.
 */
export const declarationOf = (initializeParams: Record<string, unknown>): string => {
  const info = initializeParams.clientInfo
  return canonicalJson([initializeParams.capabilities ?? {}, typeof info === "object" && info !== null ? (info as Record<string, unknown>).name ?? "" : ""])
}
