import { Duration, Effect, Layer, Schedule, Stream } from "effect"
import type { LoadBalancerSettings } from "../domain/LoadBalancer.js"
import type { InstanceState } from "../instance/InstanceState.js"
import { Registry } from "../registry/Registry.js"
import { Transport } from "../transport/Transport.js"
import { ClientSessions } from "../sessions/ClientSessions.js"

/** How often a draining instance is checked for requests still in flight. */
const DRAIN_POLL = Duration.millis(50)

/**
 * Drains a removed instance: it takes no new requests (it is out of the registry, and sessions
 * pinned to it answer 404 so that their clients move), the requests in flight finish, for up
 * to the template's `drain_timeout`; then its sessions end and its process (group) or backend
 * session is closed. Each drain runs on its own, so a slow one delays no other change.
 */
export const InstanceLifecycle: Layer.Layer<never, never, Registry | Transport | ClientSessions> = Layer.scopedDiscard(
  Effect.gen(function*() {
    const registry = yield* Registry
    const transport = yield* Transport
    const sessions = yield* ClientSessions

    const drain = (instance: InstanceState, settings: LoadBalancerSettings) =>
      Effect.gen(function*() {
        if (instance.activeRequests > 0) {
          yield* Effect.logInfo(
            `draining: ${instance.activeRequests} requests in flight, waiting up to ${Duration.format(settings.drain_timeout)}`
          )
          const idle = yield* Effect.suspend(() => instance.activeRequests === 0 ? Effect.void : Effect.fail("busy")).pipe(
            Effect.retry(Schedule.spaced(DRAIN_POLL)),
            Effect.timeout(settings.drain_timeout),
            Effect.option
          )
          if (idle._tag === "None") {
            yield* Effect.logWarning(`drain_timeout reached with ${instance.activeRequests} requests in flight; closing anyway`)
          }
        }
        yield* sessions.closePinnedTo(instance)
        yield* transport.close(instance.definition)
        yield* Effect.logInfo("removed instance closed")
      }).pipe(Effect.annotateLogs({ instance: `${instance.template}/${instance.id}` }))

    const changes = yield* registry.changes
    yield* changes.pipe(
      Stream.runForEach((change) =>
        change._tag === "InstanceRemoved" ? Effect.forkScoped(drain(change.instance, change.settings)) : Effect.void
      ),
      Effect.scoped,
      Effect.forkScoped
    )
  })
)
