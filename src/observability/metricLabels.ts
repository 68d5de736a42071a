/**
 * What a client can put into a metric label, bounded. A method name is the client's to invent
 * (a JSON-RPC request may name any method, and the gateway forwards what it does not know), so
 * only the protocol's methods are labels of their own; every other name is counted as `other`.
 * Without this, each invented name was a series for ever: 3,000 names of 4 KB grew `/metrics`
 * to 270 MB.
 */
const KNOWN_METHODS: ReadonlySet<string> = new Set([
  "initialize",
  "ping",
  "server/discover",
  "subscriptions/listen",
  "tools/list",
  "tools/call",
  "resources/list",
  "resources/templates/list",
  "resources/read",
  "resources/subscribe",
  "resources/unsubscribe",
  "prompts/list",
  "prompts/get",
  "completion/complete",
  "logging/setLevel",
  "tasks/get",
  "tasks/result",
  "tasks/list",
  "tasks/cancel",
  "tasks/update",
  "sampling/createMessage",
  "roots/list",
  "elicitation/create"
])

/** The `operation` label of a method: itself when the protocol defines it, else `other`. */
export const operationLabel = (method: string): string => (KNOWN_METHODS.has(method) ? method : "other")

/**
 * The most series one metric keeps (each a label set). Past it, new label sets are counted in
 * one series whose labels are all `other`, and `mcp_gateway_metric_series_folded_total` counts
 * the updates folded so. The labels left (templates, instances, outcomes, states) are names the
 * gateway knows; the cap is for a registry that churns (instances registered and deregistered
 * without end leave their counters behind).
 */
export const MAX_SERIES_PER_METRIC = 10_000

/** The label value of a folded series. */
export const FOLDED = "other"
