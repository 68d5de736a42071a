import { Effect, Stream } from "effect"
import type { RegistrationConflict, RegistryStorageError, RegistryUnavailable } from "../domain/GatewayError.js"
import type { InstanceSpec } from "../domain/Instance.js"
import type { LoadBalancerInput } from "../domain/LoadBalancer.js"
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
}

/** Nothing is kept: a gateway without a registry file forgets registrations when it stops. */
export const memoryStore: RegistryStoreShape = {
  name: "memory",
  load: Effect.succeed(emptyRegistry),
  save: () => Effect.void,
  external: Stream.never
}

/** The registry file, rewritten whole (atomically) at every change. */
export const fileStore = (file: string): RegistryStoreShape => ({
  name: `registry file ${file}`,
  load: readRegistryFile(file),
  save: (next) => writeRegistryFile(file, next),
  external: Stream.never
})
