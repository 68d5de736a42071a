import { Effect, FiberId, FiberSet, Layer } from "effect"
import type { InstanceDefinition } from "../domain/Instance.js"
import type { JsonRpcResponse } from "../domain/JsonRpc.js"
import type { Connection, RequestDone, RequestOptions } from "./Connection.js"
import { Transport } from "./Transport.js"
import { RequestTimeout, type TransportError } from "./TransportError.js"

/**
 * How a fake instance answers one request: the result (or `{ error: { code, message } }` for a
 * JSON-RPC error), or a TransportError. `options` carries what the Dispatcher gave the request
 * (its relay: call `options.onNotification` to report progress). Sleep on the Clock to answer
 * slowly, never finish to hang.
 */
export type FakeBehaviour = (
  method: string,
  params: Record<string, unknown> | undefined,
  options: RequestOptions | undefined
) => Effect.Effect<unknown, TransportError>

/** A fake Transport and what it saw (see makeTransportFake). */
export interface TransportFake {
  /** The Transport: provide it under the gateway's services (GatewayCore) or a Dispatcher. */
  readonly layer: Layer.Layer<Transport>
  /** Every request, in order (health probes' pings included). */
  readonly calls: ReadonlyArray<{ readonly instanceId: string; readonly method: string }>
  /** The instances the gateway closed (deregistered, removed). */
  readonly closed: ReadonlyArray<string>
  /** From now on, the instance answers so. */
  readonly set: (instanceId: string, behaviour: FakeBehaviour) => void
  /** From now on, the instance answers `{ instance: id }` again. */
  readonly clear: (instanceId: string) => void
  /** How many calls each instance got for a method (default `tools/call`). */
  readonly distribution: (method?: string) => Record<string, number>
}

/**
 * A Transport for tests, yours and the gateway's own: every instance answers from a behaviour
 * set per instance (by default `{ instance: id }` as the result) and every request is recorded,
 * so a test makes instances fail, hang or answer slowly and checks where requests went. Like the
 * real transports it arms the request's deadline while the request is out and fails it with
 * RequestTimeout when it fires, so deadlines are the Dispatcher's own; with `Timer.layerTest`
 * they, and every behaviour that sleeps, run on the TestClock of an `it.effect`/`it.scoped` test.
 *
 *     const fake = makeTransportFake({ a: () => Effect.fail(new TransportError({ ... })) })
 *     const layer = GatewayCore.pipe(Layer.provide(fake.layer), Layer.provide(Timer.layerTest), Layer.provide(GatewayConfig.layer(config)))
 *
 * The requests the plain request path sends (`requestNow`) run in fibers of the layer's scope:
 * none outlives the test.
 */
export const makeTransportFake = (initial: Readonly<Record<string, FakeBehaviour>> = {}): TransportFake => {
  const behaviours = new Map<string, FakeBehaviour>(Object.entries(initial))
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
          ? { jsonrpc: "2.0", id: 1, error: (value as { error: { code: number; message: string } }).error }
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

  const layer = Layer.scoped(
    Transport,
    Effect.gen(function*() {
      const run = yield* FiberSet.makeRuntime<never, JsonRpcResponse, TransportError | RequestTimeout>()
      /**
       * The plain request path (RequestNow): the behaviour run in a fiber of the layer's scope,
       * `done` told how it ended unless cancelled first. So the Dispatcher's `callNow` takes its
       * plain path against the fake as it does against real connections.
       */
      const requestNow = (effect: Effect.Effect<JsonRpcResponse, TransportError | RequestTimeout>, done: RequestDone) => {
        let cancelled = false
        const fiber = run(effect)
        fiber.addObserver((exit) => {
          if (!cancelled) done(exit)
        })
        return () => {
          cancelled = true
          fiber.unsafeInterruptAsFork(FiberId.none)
        }
      }
      return Transport.of({
        request: respond,
        requestNow: (instance, method, params, options, done) => requestNow(respond(instance, method, params, options), done),
        initializeResult: (instance) => Effect.succeed(initializeResult(instance)),
        openSession: (instance) =>
          Effect.succeed<Connection>({
            request: (method, params, options) => respond(instance, method, params, options),
            requestNow: (method, params, options, done) => requestNow(respond(instance, method, params, options), done),
            initialize: Effect.succeed(initializeResult(instance)),
            listen: () => Effect.void,
            notify: () => Effect.void,
            generation: () => 1,
            alive: () => true,
            close: Effect.void
          }),
        close: (instance) => Effect.sync(() => void closed.push(instance.id))
      })
    })
  )

  return {
    layer,
    calls,
    closed,
    set: (instanceId, behaviour) => void behaviours.set(instanceId, behaviour),
    clear: (instanceId) => void behaviours.delete(instanceId),
    distribution: (method = "tools/call") => {
      const out: Record<string, number> = {}
      for (const c of calls) if (c.method === method) out[c.instanceId] = (out[c.instanceId] ?? 0) + 1
      return out
    }
  }
}

/** The fake Transport's layer alone, for a test that needs not look at the calls. */
export const layerFake = (behaviours: Readonly<Record<string, FakeBehaviour>> = {}): Layer.Layer<Transport> =>
  makeTransportFake(behaviours).layer
