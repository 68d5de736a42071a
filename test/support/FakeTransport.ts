import { Effect, Layer } from "effect"
import type { InstanceDefinition } from "../../src/domain/Instance.js"
import type { JsonRpcResponse } from "../../src/domain/JsonRpc.js"
import { Transport } from "../../src/transport/Transport.js"
import type { RequestOptions } from "../../src/transport/Connection.js"
import { RequestTimeout, TransportError } from "../../src/transport/TransportError.js"

export type Behaviour = (method: string, params: Record<string, unknown> | undefined) => Effect.Effect<unknown, TransportError>

/**
 * A Transport that answers from per-instance behaviours (default: `{ instance: id }` as the
 * result) and records every request. Tests change behaviours between calls to make
 * instances fail, hang or answer slowly.
 */
export const makeFakeTransport = () => {
  const behaviours = new Map<string, Behaviour>()
  const calls: Array<{ readonly instanceId: string; readonly method: string }> = []
  const closed: Array<string> = []

  const respond = (
    instance: InstanceDefinition,
    method: string,
    params: Record<string, unknown> | undefined,
    options?: RequestOptions
  ) =>
    Effect.suspend(() => {
      calls.push({ instanceId: instance.id, method })
      const behaviour = behaviours.get(instance.id)
      const result = behaviour === undefined ? Effect.succeed({ instance: instance.id }) : behaviour(method, params)
      const answered = Effect.map(result, (value): JsonRpcResponse =>
        value !== null && typeof value === "object" && "error" in value
          ? { jsonrpc: "2.0", id: 1, error: (value as any).error }
          : { jsonrpc: "2.0", id: 1, result: value })
      // The real transports keep the time with a timer; here the TestClock does.
      const timeoutMs = options?.timeoutMs
      return timeoutMs === undefined ? answered : answered.pipe(
        Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => new RequestTimeout({ instanceId: instance.id, timeoutMs }) })
      )
    })

  const layer = Layer.succeed(Transport, {
    request: respond,
    initializeResult: (instance: InstanceDefinition) =>
      Effect.succeed({ protocolVersion: "2025-11-25", capabilities: {}, serverInfo: { name: instance.id, version: "1" } }),
    openSession: (instance: InstanceDefinition) =>
      Effect.succeed({
        request: (method: string, params: Record<string, unknown> | undefined, options?: RequestOptions) =>
          respond(instance, method, params, options),
        initialize: Effect.succeed({ protocolVersion: "2025-11-25", capabilities: {}, serverInfo: { name: instance.id, version: "1" } }),
        listen: () => Effect.void,
        notify: () => Effect.void,
        generation: () => 1,
        alive: () => true,
        close: Effect.void
      }),
    close: (instance) => Effect.sync(() => void closed.push(instance.id))
  })

  return {
    layer,
    calls,
    closed,
    set: (instanceId: string, behaviour: Behaviour) => void behaviours.set(instanceId, behaviour),
    clear: (instanceId: string) => void behaviours.delete(instanceId),
    /** How many calls each instance got for a method (pings of health checks are not counted unless asked). */
    distribution: (method = "tools/call") => {
      const out: Record<string, number> = {}
      for (const c of calls) if (c.method === method) out[c.instanceId] = (out[c.instanceId] ?? 0) + 1
      return out
    }
  }
}

export const refused = (instanceId: string) =>
  new TransportError({ instanceId, message: "ECONNREFUSED", reachedBackend: false })

export const broken = (instanceId: string) =>
  new TransportError({ instanceId, message: "process exited (code 1)", reachedBackend: true })
