import { Context, Duration, Effect, ExecutionStrategy, Exit, Layer, Runtime, Scope } from "effect"
import type { InstanceDefinition } from "../domain/Instance.js"
import type { JsonRpcResponse } from "../domain/JsonRpc.js"
import type { Connection, ConnectionEnv, ConnectionLog, RequestDone, RequestOptions } from "./Connection.js"
import { makeHttpConnection } from "./http.js"
import type { EraMemory } from "./HttpSession.js"
import { makeLegacySseConnection } from "./legacySse.js"
import { Http1Pools } from "./Http1Pools.js"
import { makeSandboxProbes } from "./sandboxProbe.js"
import { makeStdioConnection, runsAsRoot } from "./stdio.js"
import { type CallerEntry, CallerConnections } from "./CallerConnections.js"
import { WarmProcesses } from "./WarmProcesses.js"
import { ConnectionPolicy } from "./Supervision.js"
import { acquireLean } from "./acquireLean.js"
import { type RequestTimeout, TransportError } from "./TransportError.js"

export interface TransportShape {
  /** One JSON-RPC request to an instance; resolves with its response (a result or a JSON-RPC error). */
  readonly request: (
    instance: InstanceDefinition,
    method: string,
    params: Record<string, unknown> | undefined,
    options?: RequestOptions
  ) => Effect.Effect<JsonRpcResponse, TransportError | RequestTimeout>
  /**
   * `request` without an Effect step, where the instance's connection can send at once (see
   * RequestNow in Connection.ts); undefined otherwise, and then `request` does the work.
   */
  readonly requestNow?: (
    instance: InstanceDefinition,
    method: string,
    params: Record<string, unknown> | undefined,
    options: RequestOptions | undefined,
    done: RequestDone
  ) => (() => void) | undefined
  /**
   * A connection for one client session of the MCP endpoint, open as long as the given scope:
   * over HTTP a backend session of its own, initialized with the client's `initialize` params;
   * over stdio the instance's shared process (its ids are rewritten per request, so sessions
   * do not see each other's answers). Closing the scope ends what was opened for the session.
   */
  readonly openSession: (
    instance: InstanceDefinition,
    initializeParams: Record<string, unknown>,
    /** stdio and legacy SSE: a process (SSE session) of its own for the client session instead of the shared one. */
    options?: {
      readonly ownProcess?: boolean
      /** With auth on: the caller's own shared process (SSE session) of the instance instead of the instance's (see RequestOptions.caller). */
      readonly caller?: string | undefined
      /**
       * HTTP: go on with a session the server already has (opened by another replica of the
       * gateway), by its id and version, instead of initializing a new one.
       */
      readonly resume?: { readonly sessionId: string; readonly protocolVersion: string } | undefined
    }
  ) => Effect.Effect<Connection, TransportError, Scope.Scope>
  /**
   * The instance's answer to the gateway's own `initialize` (starting it or opening its session
   * if need be): its shared connection's, or with `caller` that caller's own one's.
   */
  readonly initializeResult: (instance: InstanceDefinition, caller?: string) => Effect.Effect<Record<string, unknown>, TransportError>
  /** Stops the instance's process or ends its session; for deregistration. */
  readonly close: (instance: InstanceDefinition) => Effect.Effect<void>
  /**
   * stdio: keeps `count` processes of the instance started and waiting for a new session's
   * `initialize` (`warm_processes`, within its process bound); `openSession` with `ownProcess`
   * takes one. Absent where nothing is kept warm (fakes).
   */
  readonly keepWarm?: (instance: InstanceDefinition, count: number) => void
}

/**
 * Talks MCP to instances. The live layer keeps one connection per instance and picks the
 * transport by `instance.transport`; tests replace the whole service with a fake.
 */
export class Transport extends Context.Tag("mcp-gateway/Transport")<Transport, TransportShape>() {
  static readonly layer: Layer.Layer<Transport, never, ConnectionPolicy> = Layer.scoped(
    Transport,
    Effect.gen(function*() {
      const policy = yield* ConnectionPolicy
      const layerScope = yield* Effect.scope
      const runtime = yield* Effect.runtime<never>()
      // The HTTP/1.1 pools of this Transport, closed after every connection (finalizers run in
      // reverse: this one was added before the connections' own).
      const http1Pools = yield* Effect.acquireRelease(Effect.sync(() => new Http1Pools()), (pools) => Effect.sync(() => pools.close()))
      // Keyed by the definition itself, not its template and id: an instance replaced under the
      // same id (a re-registration, a reload) drains on its old connection while the new one
      // connects, and closing the old must not close the new.
      const connections = new Map<InstanceDefinition, { readonly connection: Connection; readonly scope: Scope.CloseableScope }>()
      // Definitions whose connection was closed (deregistered instances): a request still in
      // flight for one, or a late health probe, must not start a new process or session.
      // A re-registration is a new definition object, so it connects as usual.
      const removed = new WeakSet<InstanceDefinition>()
      // Which revision each HTTP instance spoke last (see EraMemory): its next connection tries that first.
      // (One memory per instance, shared by its connections: an idle client session holds none of its own.)
      const eras = new WeakMap<InstanceDefinition, EraMemory>()
      const eraOf = (instance: InstanceDefinition): EraMemory => {
        let memory = eras.get(instance)
        if (memory === undefined) {
          let era: "legacy" | "modern" | undefined
          memory = { get: () => era, set: (spoken) => void (era = spoken) }
          eras.set(instance, memory)
        }
        return memory
      }
      const removedError = (instance: InstanceDefinition) =>
        Effect.fail(new TransportError({ instanceId: instance.id, reason: "closed", message: "instance was removed", reachedBackend: false }))

      // One log per instance, shared by its sessions' connections (not four closures per session).
      const logs = new WeakMap<InstanceDefinition, ConnectionLog>()
      const logFor = (instance: InstanceDefinition): ConnectionLog => {
        const known = logs.get(instance)
        if (known !== undefined) return known
        const run = (effect: Effect.Effect<void>) =>
          Runtime.runFork(runtime)(Effect.annotateLogs(effect, { instance: `${instance.template}/${instance.id}` }))
        const log: ConnectionLog = {
          debug: (m) => run(Effect.logDebug(m)),
          info: (m) => run(Effect.logInfo(m)),
          warn: (m) => run(Effect.logWarning(m))
        }
        logs.set(instance, log)
        return log
      }

      // Whether sandboxes can be set up here: probed once per PATH, asynchronously, at the first
      // sandboxed start (a gateway without sandboxes never runs bwrap), shared by every connection.
      const sandboxProbes = makeSandboxProbes({
        runtime,
        scope: layerScope,
        asRoot: runsAsRoot(),
        warn: (message) => Runtime.runFork(runtime)(Effect.logWarning(message))
      })

      // Processes being stopped now, for every connection of this Transport (see ConnectionEnv.stopping).
      const stopping = { count: 0 }
      const envFor = (instance: InstanceDefinition, scope: Scope.Scope, supervised: boolean): ConnectionEnv => ({
        log: logFor(instance),
        scope,
        runtime,
        http1Pools,
        inheritEnv: instance.transport === "stdio" && policy.inheritEnv !== undefined ? () => policy.inheritEnv!(instance) : undefined,
        sandbox: instance.transport === "stdio" && policy.sandbox !== undefined ? () => policy.sandbox!(instance) : undefined,
        sandboxProbes,
        stopping,
        supervision: supervised
          ? { policy: () => policy.supervision(instance), report: (status) => policy.report(instance, status) }
          : undefined
      })

      const connectionFor = (instance: InstanceDefinition): Connection => {
        const existing = connections.get(instance)
        if (existing !== undefined) return existing.connection
        const scope = Effect.runSync(Scope.fork(layerScope, ExecutionStrategy.sequential))
        // The instance's own channel is supervised (restarted when it ends); see SharedChannel.ts.
        const env = envFor(instance, scope, true)
        const connection = instance.transport === "stdio"
          ? makeStdioConnection(instance, env)
          : instance.transport === "sse"
          ? makeLegacySseConnection(instance, env)
          : makeHttpConnection(instance, env, { era: eraOf(instance) })
        connections.set(instance, { connection, scope })
        return connection
      }

      const warm = new WarmProcesses(logFor, (instance) => policy.inheritEnv?.(instance) ?? [], (instance) => policy.sandbox?.(instance), sandboxProbes)

      // With auth on, each caller's own connection to an instance (see CallerConnections.ts).
      const clock = yield* Effect.clock
      const now = () => clock.unsafeCurrentTimeMillis()
      const callers = new CallerConnections((instance, caller) => {
        const scope = Effect.runSync(Scope.fork(layerScope, ExecutionStrategy.sequential))
        const env = envFor(instance, scope, false)
        logFor(instance).info(`a connection of caller ${caller}'s own (no other credential's requests share its process or session)`)
        const connection = instance.transport === "stdio"
          ? makeStdioConnection(instance, env)
          : instance.transport === "sse"
          ? makeLegacySseConnection(instance, env)
          : makeHttpConnection(instance, env, { era: eraOf(instance) })
        return { connection, close: connection.close.pipe(Effect.ensuring(Scope.close(scope, Exit.void))) }
      }, now)
      const closeCallers = (entries: ReadonlyArray<CallerEntry>) =>
        Effect.forEach(entries, (entry) => entry.close, { concurrency: "unbounded", discard: true })
      /** The caller's own connection to the instance, or why there is none. */
      const callerEntry = (instance: InstanceDefinition, caller: string): CallerEntry | TransportError => {
        const entry = callers.get(instance, caller, policy.processes(instance).max, (evicted) => {
          logFor(instance).info(`stopping caller ${evicted.caller}'s idle connection to make room for caller ${caller}'s`)
          Runtime.runFork(runtime)(evicted.close)
        })
        return typeof entry === "string" ? new TransportError({ instanceId: instance.id, reason: "unavailable", message: entry, reachedBackend: false }) : entry
      }
      const callerConnection = (instance: InstanceDefinition, caller: string): Connection | TransportError => {
        const entry = callerEntry(instance, caller)
        return entry instanceof TransportError ? entry : entry.connection
      }
      // Callers' connections nobody used for session_process_idle_timeout stop.
      yield* Effect.suspend(() => closeCallers(callers.takeIdle((instance) => Duration.toMillis(policy.processes(instance).idle)))).pipe(
        Effect.zipRight(Effect.sleep(Duration.seconds(1))),
        Effect.forever,
        Effect.forkScoped
      )

      const close = (instance: InstanceDefinition) =>
        Effect.suspend(() => {
          removed.add(instance)
          const ofCallers = closeCallers(callers.take(instance)).pipe(Effect.zipRight(Effect.promise(() => warm.stop(instance))))
          const entry = connections.get(instance)
          if (entry === undefined) return ofCallers
          connections.delete(instance)
          return entry.connection.close.pipe(Effect.ensuring(Scope.close(entry.scope, Exit.void)), Effect.zipRight(ofCallers))
        })

      // Shutdown: every process stopped, every session ended, all at once.
      yield* Effect.addFinalizer(() =>
        Effect.suspend(() =>
          connections.size + callers.size + warm.size === 0
            ? Effect.void
            : Effect.logInfo(
              `shutting down: closing ${connections.size + callers.size} instance connections (processes, sessions)` +
                (warm.size === 0 ? "" : ` and ${warm.size} warm processes`)
            )
        ).pipe(
          Effect.zipRight(Effect.all([
            Effect.forEach(
              Array.from(connections.values()),
              (entry) => entry.connection.close.pipe(Effect.ensuring(Scope.close(entry.scope, Exit.void))),
              { concurrency: "unbounded", discard: true }
            ),
            Effect.suspend(() => closeCallers(callers.take())),
            Effect.promise(() => warm.stop())
          ], { concurrency: "unbounded", discard: true })),
          Effect.zipRight(Effect.suspend(() => connections.size === 0 ? Effect.void : Effect.logInfo("shutting down: every process stopped"))),
          Effect.ensuring(Effect.sync(() => connections.clear()))
        )
      )

      return {
        request: (instance, method, params, options) => {
          if (removed.has(instance)) return removedError(instance)
          if (options?.caller === undefined) return connectionFor(instance).request(method, params, options)
          const connection = callerConnection(instance, options.caller)
          return connection instanceof TransportError ? Effect.fail(connection) : connection.request(method, params, options)
        },
        requestNow: (instance, method, params, options, done) => {
          if (removed.has(instance)) return undefined
          if (options?.caller === undefined) return connectionFor(instance).requestNow?.(method, params, options, done)
          const connection = callerConnection(instance, options.caller)
          return connection instanceof TransportError ? undefined : connection.requestNow?.(method, params, options, done)
        },
        initializeResult: (instance, caller) => {
          if (removed.has(instance)) return removedError(instance)
          if (caller === undefined) return connectionFor(instance).initialize
          const connection = callerConnection(instance, caller)
          return connection instanceof TransportError ? Effect.fail(connection) : connection.initialize
        },
        openSession: (instance, initializeParams, options) =>
          Effect.suspend(() => {
            if (removed.has(instance)) return removedError(instance)
            if (instance.transport !== "http" && options?.ownProcess === true) {
              return Effect.flatMap(Effect.scope, (scope) =>
                acquireLean(
                  () =>
                    instance.transport === "stdio"
                      ? makeStdioConnection(instance, envFor(instance, scope, false), { forSession: { initializeParams }, prestarted: warm.take(instance) })
                      : makeLegacySseConnection(instance, envFor(instance, scope, false), { forSession: { initializeParams } }),
                  (connection) => connection.close
                ))
            }
            if (instance.transport !== "http" && options?.caller !== undefined) {
              // With auth on: the caller's own shared channel, held while the session lasts (never stopped under it).
              const caller = options.caller
              return Effect.suspend(() => {
                const entry = callerEntry(instance, caller)
                if (entry instanceof TransportError) return Effect.fail(entry)
                return acquireLean(() => {
                  entry.holders++
                  return { ...entry.connection, close: Effect.void } satisfies Connection
                }, () =>
                  Effect.sync(() => {
                    entry.holders--
                    entry.lastUsed = now()
                  }))
              })
            }
            if (instance.transport !== "http") {
              // stdio and legacy SSE: the instance's one shared channel.
              const shared = connectionFor(instance)
              return Effect.succeed<Connection>({ ...shared, close: Effect.void })
            }
            return Effect.flatMap(Effect.scope, (scope) =>
              acquireLean(
                () =>
                  makeHttpConnection(instance, envFor(instance, scope, false), {
                    initializeParams,
                    renewLostSession: false,
                    era: eraOf(instance),
                    resume: options?.resume
                  }),
                (connection) => connection.close
              ))
          }),
        close,
        keepWarm: (instance, count) => {
          if (!removed.has(instance)) warm.keep(instance, count)
        }
      }
    })
  )
}
