import type { InstanceDefinition } from "./Instance.js"

/**
 * `unknown` until the first probe; `unhealthy` by probes or while its process restarts;
 * `failed` when its process restarted too often (see docs/operations.md).
 */
export type HealthStatus = "unknown" | "healthy" | "unhealthy" | "failed"

/**
 * What a strategy sees of an instance: its definition and live numbers the gateway keeps.
 * Read-only to plugins; the gateway updates the numbers as requests and probes complete.
 */
export interface InstanceView {
  readonly id: string
  readonly template: string
  readonly weight: number
  readonly definition: InstanceDefinition
  readonly status: HealthStatus
  /** Requests sent to the instance and not yet answered. */
  readonly activeRequests: number
  /** Exponentially weighted moving average of answered requests' latency, in ms (undefined before the first). */
  readonly latencyMs: number | undefined
  /** Exponentially weighted share of recent requests and probes that succeeded, from 0 to 1. */
  readonly successRate: number
}
