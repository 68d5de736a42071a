import { Effect, Stream } from "effect"
import type { RegistrationConflict, RegistryStorageError, RegistryUnavailable } from "../domain/GatewayError.js"
import type { InstanceSpec } from "../domain/Instance.js"
import type { LoadBalancerInput } from "../domain/LoadBalancer.js"
import { mergePins, type PersistedPins, type PinStoreShape } from "./PinStore.js"
import { emptyRegistry, type PersistedRegistry, readRegistryFile, writeRegistryFile } from "./RegistryFile.js"

/** What one change of the run-time registrations was (a store that keeps entries apart writes just that). */
export type StoredChange =
  | {
    readonly _tag: "Registered"
    readonly template: string
    readonly id: string
    readonly spec: InstanceSpec
    /** Given when the registration created the template. */
    readonly loadBalancer?: LoadBalancerInput | undefined
  }
  | { readonly _tag: "Deregistered"; readonly template: string; readonly id: string; readonly templateDropped: boolean }
  /** Something else changed what is persisted (a template the config let go of). */
  | { readonly _tag: "Other" }

/**
 * Where the registrations made at run time live, so that they survive a restart: the registry
 * file (a gateway on its own), or Redis (replicas that share them). The Registry keeps its own
 * state and tells the store each change; a shared store also tells the Registry of the changes
 * other replicas made.
 */
export interface RegistryStoreShape {
  /** For logs: "registry file /x/registry.json", "Redis redis://h:6379". */
  readonly name: string
  /** What is stored now (a missing file: nothing). */
  readonly load: Effect.Effect<PersistedRegistry, RegistryStorageError | RegistryUnavailable>
  /** Stores one change; `next` is everything the Registry would persist after it. */
  readonly save: (next: PersistedRegistry, change: StoredChange) => Effect.Effect<void, RegistryStorageError | RegistryUnavailable | RegistrationConflict>
  /** The registrations as they are after changes elsewhere (another replica), whole each time. */
  readonly external: Stream.Stream<PersistedRegistry>
  /** Where pinned tool definitions live beside the registrations (none: kept in memory only). */
  readonly pins?: PinStoreShape | undefined
}

/** Nothing is kept: a gateway without a registry file forgets registrations when it stops. */
export const memoryStore: RegistryStoreShape = {
  name: "memory",
  load: Effect.succeed(emptyRegistry),
  save: () => Effect.void,
  external: Stream.never
}

/**
 * The registry file, rewritten whole (atomically) at every change: the registrations the
 * Registry gives, and the pins (tool integrity) as last loaded or saved, one write at a time.
 */
export const fileStore = (file: string): RegistryStoreShape => {
  let registrations: PersistedRegistry = emptyRegistry
  let pins: PersistedPins = {}
  const writes = Effect.unsafeMakeSemaphore(1)
  const write = () => writeRegistryFile(file, Object.keys(pins).length === 0 ? registrations : { ...registrations, pins })
  const read = Effect.tap(readRegistryFile(file), (loaded) =>
    Effect.sync(() => {
      const { pins: kept, ...rest } = loaded
      registrations = rest
      pins = kept ?? {}
    }))
  const pinStore: PinStoreShape = {
    load: Effect.map(read, (loaded) => loaded.pins ?? {}),
    save: (template, added, mode) =>
      writes.withPermits(1)(Effect.suspend(() => {
        const { all, holding } = mergePins(pins[template] ?? [], added, mode)
        pins = { ...pins, [template]: all }
        return Effect.as(write(), holding)
      })),
    external: Stream.never
  }
  return {
    name: `registry file ${file}`,
    load: read,
    save: (next) =>
      writes.withPermits(1)(Effect.suspend(() => {
        registrations = next
        return write()
      })),
    external: Stream.never,
    pins: pinStore
  }
}
