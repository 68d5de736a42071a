import { Effect, Layer, Stream } from "effect"
import { Registry } from "../registry/Registry.js"
import { Transport } from "../transport/Transport.js"

/**
 * Ends what a deregistered instance had open: its process (group) or its backend session.
 * Each close runs on its own, so a slow stop (up to the SIGKILL grace) delays no other change.
 */
export const InstanceLifecycle: Layer.Layer<never, never, Registry | Transport> = Layer.scopedDiscard(
  Effect.gen(function*() {
    const registry = yield* Registry
    const transport = yield* Transport
    const changes = yield* registry.changes
    yield* changes.pipe(
      Stream.filter((change) => change._tag === "InstanceRemoved"),
      Stream.runForEach((change) => Effect.forkScoped(transport.close(change.instance.definition))),
      Effect.scoped,
      Effect.forkScoped
    )
  })
)
