import { Effect, FiberId, Layer, Runtime } from "effect"
import type { InstanceDefinition } from "../../src/domain/Instance.js"
import type { JsonRpcResponse } from "../../src/domain/JsonRpc.js"
import type { Connection, RequestDone, RequestOptions } from "../../src/transport/Connection.js"
import { Transport } from "../../src/transport/Transport.js"
import { RequestTimeout, TransportError } from "../../src/transport/TransportError.js"

/**
 * How a fake instance answers one request. `options` carries what the Dispatcher gave the
 * request (its relay: call `options.onNotification` to report progress).
 */
export type Behaviour = (
  method: string,
  params: Record<string, unknown> | undefined,
  options: RequestOptions | undefined
) => Effect.Effect<unknown, TransportError>

/**
 * A Transport that answers from per-instance behaviours (default: `{ instance: id }` as the
 * result) and records every request. Tests change behaviours between calls to make
 * instances fail, hang or answer slowly. Like the real transports it arms the request's
 * deadline while the request is out and fails it with RequestTimeout when it fires, so
 * deadlines are the Dispatcher's own (driven by the TestClock through Timer.fromClock).
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
  ): Effect.Effect<JsonRpcResponse, TransportError | RequestTimeout> =>
    Effect.suspend(() => {
      calls.push({ instanceId: instance.id, method })
      const behaviour = behaviours.get(instance.id)
      const result = behaviour === undefined ? Effect.succeed({ instance: instance.id }) : behaviour(method, params, options)
      const answered = Effect.map(result, (value): JsonRpcResponse =>
        value !== null && typeof value === "object" && "error" in value
          ? { jsonrpc: "2.0", id: 1, error: (value as any).error }
          : { jsonrpc: "2.0", id: 1, result: value })
      const deadline = options?.deadline
      if (deadline === undefined) return answered
      const expiry = Effect.async<never, RequestTimeout>((resume) => {
        deadline.arm(() => resume(Effect.fail(new RequestTimeout({ instanceId: instance.id, timeoutMs: deadline.timeoutMs }))))
        return Effect.sync(() => deadline.disarm())
      })
      return Effect.raceFirst(answered, expiry)
    })

  const initializeResult = (instance: InstanceDefinition) => ({
    protocolVersion: "2025-11-25",
    // A server that offers everything (aggregates do not ask a server for what it does not offer).
    capabilities: { tools: { listChanged: true }, prompts: {}, resources: { subscribe: true }, completions: {}, logging: {} },
    serverInfo: { name: instance.id, version: "1" }
  })

  /**
   * The plain request path (RequestNow): the behaviour run in a fiber of the test's runtime (its
   * TestClock), `done` told how it ended unless cancelled first. So the Dispatcher's `callNow`
   * takes its plain path against the fake as it does against real connections.
   */
  const requestNow = (runtime: Runtime.Runtime<never>, effect: Effect.Effect<JsonRpcResponse, TransportError | RequestTimeout>, done: RequestDone) => {
    let cancelled = false
    const fiber = Runtime.runFork(runtime)(effect)
    fiber.addObserver((exit) => {
      if (!cancelled) done(exit)
    })
    return () => {
      cancelled = true
      fiber.unsafeInterruptAsFork(FiberId.none)
    }
  }

  const layer = Layer.effect(
    Transport,
    Effect.map(Effect.runtime<never>(), (runtime) => ({
      request: respond,
      requestNow: (instance: InstanceDefinition, method: string, params: Record<string, unknown> | undefined, options: RequestOptions | undefined, done: RequestDone) =>
        requestNow(runtime, respond(instance, method, params, options), done),
      initializeResult: (instance: InstanceDefinition) => Effect.succeed(initializeResult(instance)),
      openSession: (instance: InstanceDefinition) =>
        Effect.succeed<Connection>({
          request: (method, params, options) => respond(instance, method, params, options),
          requestNow: (method, params, options, done) => requestNow(runtime, respond(instance, method, params, options), done),
          initialize: Effect.succeed(initializeResult(instance)),
          listen: () => Effect.void,
          notify: () => Effect.void,
          generation: () => 1,
          alive: () => true,
          close: Effect.void
        }),
      close: (instance: InstanceDefinition) => Effect.sync(() => void closed.push(instance.id))
    }))
  )

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
  new TransportError({ instanceId, reason: "refused", message: "ECONNREFUSED", reachedBackend: false })

export const broken = (instanceId: string) =>
  new TransportError({ instanceId, reason: "reset", message: "process exited (code 1)", reachedBackend: true })

/** The backend refused the message as malformed (HTTP 400): the client's fault. */
export const rejected = (instanceId: string) =>
  new TransportError({ instanceId, reason: "rejected", message: "HTTP 400: bad request", reachedBackend: true })
