import { Effect, Either, Runtime, Schema, Stream } from "effect"
import { formatParseError } from "../domain/formatParseError.js"
import { RegistrationConflict, RegistryStorageError, RegistryUnavailable } from "../domain/GatewayError.js"
import { PersistedRegistry } from "../registry/RegistryFile.js"
import type { RegistryStoreShape } from "../registry/RegistryStore.js"
import type { FleetRedisShape } from "./FleetRedis.js"

/**
 * A registration, atomically: refused (0) when the id is taken (another replica was first);
 * the template's load_balancer kept when the registration creates it; every replica told.
 */
const REGISTER = `
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if ARGV[3] ~= '' then redis.call('HSETNX', KEYS[2], ARGV[4], ARGV[3]) end
redis.call('SET', KEYS[3], '1')
redis.call('PUBLISH', KEYS[4], ARGV[1])
return 1`

const decode = Schema.decodeUnknownEither(PersistedRegistry, { errors: "all" })

/**
 * The registrations in Redis, shared by every replica: one hash of instances (`{template}/{id}`
 * → the spec) and one of the templates registrations created (→ their load_balancer), so that
 * two replicas registering at once never overwrite each other; a message on a channel after
 * every change, on which every replica reads them again. When Redis comes back empty (it was
 * restarted without persistence), the replicas write back what they last knew: nothing is lost.
 */
export const redisRegistryStore = (fleet: FleetRedisShape): RegistryStoreShape => {
  const redis = fleet.command!
  const keys = {
    instances: `${fleet.prefix}registry:instances`,
    templates: `${fleet.prefix}registry:templates`,
    epoch: `${fleet.prefix}registry:epoch`,
    channel: `${fleet.prefix}registry:changed`
  }
  const unavailable = () =>
    new RegistryUnavailable({ message: `the shared registry (Redis ${fleet.describe}) cannot be reached; try again when it is back` })
  const call = <A>(run: () => Promise<A>) => Effect.tryPromise({ try: run, catch: unavailable })

  /** What the registry was last (loaded or saved): written back to a Redis that lost it. */
  let lastKnown: PersistedRegistry | undefined

  const load = Effect.gen(function*() {
    if (fleet.status() !== "ok") return yield* unavailable()
    const [instances, templates] = yield* call(() => Promise.all([redis.hgetall(keys.instances), redis.hgetall(keys.templates)]))
    const doc: { version: 1; templates: Record<string, { load_balancer?: unknown; instances: Array<unknown> }> } = { version: 1, templates: {} }
    for (const [name, lb] of Object.entries(templates)) doc.templates[name] = { load_balancer: JSON.parse(lb), instances: [] }
    for (const [field, spec] of Object.entries(instances).sort(([a], [b]) => a.localeCompare(b))) {
      const template = field.slice(0, field.indexOf("/"))
      ;(doc.templates[template] ??= { instances: [] }).instances.push(JSON.parse(spec))
    }
    const decoded = decode(doc)
    if (Either.isLeft(decoded)) {
      return yield* new RegistryStorageError({ path: keys.instances, message: `the registry in Redis is not valid:\n${formatParseError(decoded.left, "registry").join("\n")}` })
    }
    lastKnown = decoded.right
    return decoded.right
  }).pipe(
    // (An entry that is not JSON: written by something else than a replica.)
    Effect.catchAllDefect((e) => Effect.fail(new RegistryStorageError({ path: keys.instances, message: `the registry in Redis is not valid: ${e instanceof Error ? e.message : String(e)}` })))
  )

  /** Writes a whole registry back (Redis lost it), then tells every replica. */
  const restore = (registry: PersistedRegistry) =>
    call(async () => {
      const multi = redis.multi()
      for (const [template, entry] of Object.entries(registry.templates)) {
        if (entry.load_balancer !== undefined) multi.hsetnx(keys.templates, template, JSON.stringify(entry.load_balancer))
        for (const spec of entry.instances) multi.hsetnx(keys.instances, `${template}/${spec.id}`, JSON.stringify(spec))
      }
      multi.set(keys.epoch, "1")
      multi.publish(keys.channel, "restored")
      await multi.exec()
    })

  const save: RegistryStoreShape["save"] = (next, change) =>
    Effect.gen(function*() {
      if (fleet.status() !== "ok") return yield* unavailable()
      switch (change._tag) {
        case "Registered": {
          const field = `${change.template}/${change.id}`
          const done = yield* call(() =>
            redis.eval(REGISTER, 4, keys.instances, keys.templates, keys.epoch, keys.channel, field, JSON.stringify(change.spec), change.loadBalancer === undefined ? "" : JSON.stringify(change.loadBalancer), change.template)
          )
          if (done === 0) {
            return yield* new RegistrationConflict({ message: `template "${change.template}" already has an instance "${change.id}" (registered through another replica); deregister it first` })
          }
          break
        }
        case "Deregistered":
          yield* call(async () => {
            const multi = redis.multi().hdel(keys.instances, `${change.template}/${change.id}`)
            if (change.templateDropped) multi.hdel(keys.templates, change.template)
            await multi.publish(keys.channel, `${change.template}/${change.id}`).exec()
          })
          break
        case "Other":
          // (Templates only: instances are registered and deregistered one by one, never overwritten.)
          yield* call(async () => {
            const multi = redis.multi()
            for (const [template, entry] of Object.entries(next.templates)) {
              if (entry.load_balancer !== undefined) multi.hsetnx(keys.templates, template, JSON.stringify(entry.load_balancer))
            }
            await multi.publish(keys.channel, "templates").exec()
          })
      }
      lastKnown = next
    })

  // Run in the runtime of the fiber that reads the stream (the gateway's: its logger writes to
  // stderr), not Effect.runPromise's default one, which logs to stdout.
  const external = Stream.unwrap(Effect.map(Effect.runtime<never>(), (runtime) => Stream.async<PersistedRegistry>((emit) => {
    // One read at a time; messages that arrive meanwhile make one more read after it.
    let reading = false
    let again = false
    const read = (afterReconnect: boolean) => {
      if (reading) return void (again = true)
      reading = true
      const work = Effect.gen(function*() {
        if (afterReconnect && lastKnown !== undefined && (yield* call(() => redis.exists(keys.epoch))) === 0) {
          yield* Effect.logWarning(`the shared registry in Redis ${fleet.describe} is empty (Redis restarted without its data?): writing back the last known registrations`)
          yield* restore(lastKnown)
        }
        return yield* load
      })
      Runtime.runPromise(runtime)(Effect.either(work)).then((result) => {
        if (Either.isRight(result)) void emit.single(result.right)
        reading = false
        if (again) {
          again = false
          read(false)
        }
      })
    }
    fleet.subscribe(keys.channel, () => read(false))
    fleet.onReady(() => read(true))
  })))

  return { name: `Redis ${fleet.describe}`, load, save, external }
}
