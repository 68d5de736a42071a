import { Effect, Either, Runtime, Schedule, Schema, Stream } from "effect"
import { randomBytes } from "node:crypto"
import { formatParseError } from "../domain/formatParseError.js"
import { RegistrationConflict, RegistryStorageError, RegistryUnavailable } from "../domain/GatewayError.js"
import { emptyRegistry, PersistedRegistry } from "./RegistryFile.js"
import type { RegistryStoreShape } from "./RegistryStore.js"
import { redisPinStore } from "./PinStore.js"
import { type FleetRedisShape, isRedisTimeout } from "../fleet/FleetRedis.js"

/**
 * The field that holds the registry's generation, in both hashes: a token written with the
 * fleet's first registration and kept for as long as the registry lives in Redis. A hash
 * without it, or two hashes that disagree, or a generation other than the one a replica last
 * saw, is a registry Redis lost (a FLUSHALL, an eviction, a failover to an empty replica behind
 * the same address) and was recreated since. (No template name starts with a '.', so no
 * instance's field `{template}/{id}` and no template's is ever this one.)
 */
const GENERATION = ".generation"

/**
 * A registration, atomically: refused (0) when the id is taken (another replica was first);
 * the template's load_balancer kept when the registration creates it; every replica told.
 * Refused with -1 when the registry is not the generation this replica knew (ARGV[5]; "" for
 * none yet): it must be written back first. The first registration of a registry writes its
 * generation (ARGV[6]). Returns the status and the generation.
 */
const REGISTER = `
local g = redis.call('HGET', KEYS[1], '${GENERATION}')
if g ~= redis.call('HGET', KEYS[2], '${GENERATION}') then return {-1, ''} end
if g then
  if ARGV[5] ~= '' and g ~= ARGV[5] then return {-1, g} end
else
  if ARGV[5] ~= '' then return {-1, ''} end
  g = ARGV[6]
  redis.call('HSET', KEYS[1], '${GENERATION}', g)
  redis.call('HSET', KEYS[2], '${GENERATION}', g)
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return {0, g} end
if ARGV[3] ~= '' then redis.call('HSETNX', KEYS[2], ARGV[4], ARGV[3]) end
redis.call('PUBLISH', KEYS[3], ARGV[1])
return {1, g}`

/** A deregistration; -1 (and nothing done) when the registry is not the generation this replica knew (ARGV[4]). */
const DEREGISTER = `
local g = redis.call('HGET', KEYS[1], '${GENERATION}')
if g ~= redis.call('HGET', KEYS[2], '${GENERATION}') then return -1 end
if ARGV[4] ~= '' and g ~= ARGV[4] then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[2] == '1' then redis.call('HDEL', KEYS[2], ARGV[3]) end
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1`

/**
 * What a replica knew, written back: entries that are missing are set (HSETNX: nothing newer
 * is overwritten), under the generation the instances hash has (a newcomer's first registration
 * may have started one) or else ARGV[1]. ARGV[2] is the number of instance pairs that follow,
 * then the template pairs. Returns the generation.
 */
const RESTORE = `
local g = redis.call('HGET', KEYS[1], '${GENERATION}') or ARGV[1]
redis.call('HSET', KEYS[1], '${GENERATION}', g)
redis.call('HSET', KEYS[2], '${GENERATION}', g)
local n = tonumber(ARGV[2])
for i = 3, 2 + 2 * n, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 3 + 2 * n, #ARGV, 2 do redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('PUBLISH', KEYS[3], 'restored')
return g`

const decode = Schema.decodeUnknownEither(PersistedRegistry, { errors: "all" })

const newGeneration = () => randomBytes(9).toString("base64url")

/** The generation both hashes agree on, if they do. */
const generationOf = (instances: Record<string, string>, templates: Record<string, string>) => {
  const g = instances[GENERATION]
  return g !== undefined && g === templates[GENERATION] ? g : undefined
}

const instanceIds = (registry: PersistedRegistry) => {
  const ids = new Set<string>()
  for (const [template, entry] of Object.entries(registry.templates)) for (const spec of entry.instances) ids.add(`${template}/${spec.id}`)
  return ids
}

/**
 * The registrations in Redis, shared by every replica: one hash of instances (`{template}/{id}`
 * → the spec) and one of the templates registrations created (→ their load_balancer), so that
 * two replicas registering at once never overwrite each other; a message on a channel after
 * every change, on which every replica reads them again.
 *
 * Redis may lose them without the replicas noticing a reconnect (FLUSHALL, eviction, a managed
 * Redis failing over to an empty replica behind one address), or restart empty. Each replica
 * keeps what it last knew, and the registry's generation (above): it checks the generation on
 * every change it makes (in the same script), on every change it hears of, and every
 * `registry.check_interval_ms`. A registry that is not the generation it knew is written back
 * from what it knew before anything is read from it, so an emptied Redis is never read as
 * "everyone deregistered"; a read that loses several registrations at once is logged at warn.
 */
export const redisRegistryStore = (fleet: FleetRedisShape): RegistryStoreShape => {
  const redis = fleet.command!
  const keys = {
    instances: `${fleet.prefix}registry:instances`,
    templates: `${fleet.prefix}registry:templates`,
    channel: `${fleet.prefix}registry:changed`
  }
  const unavailable = (e?: unknown) => {
    if (isRedisTimeout(e)) fleet.reportSlow()
    return new RegistryUnavailable({ message: `the shared registry (Redis ${fleet.describe}) cannot be reached; try again when it is back` })
  }
  const call = <A>(run: () => Promise<A>) => Effect.tryPromise({ try: run, catch: unavailable })

  /** What the registry was last (loaded or saved): written back to a Redis that lost it. */
  let lastKnown: PersistedRegistry | undefined
  /** The generation of the registry this replica last read or wrote (undefined: none seen yet). */
  let known: string | undefined
  /**
   * This replica's own changes under way, and how many have started. The Registry applies a
   * change to its state before the change reaches Redis, so a read of Redis made meanwhile
   * (one a message started, the write-back's own message above all) may lack it, and applied
   * after it, would remove what was just registered (or bring back what was just removed) until
   * the next read: such a read is dropped, and read again once no change is under way.
   */
  let savesStarted = 0
  let savesRunning = 0
  let afterSaves: (() => void) | undefined

  const readRaw = call(async () => {
    const replies = await redis.multi().hgetall(keys.instances).hgetall(keys.templates).exec()
    const [instances, templates] = (replies ?? []).map(([error, value]) => {
      if (error) throw error
      return value as Record<string, string>
    })
    return { instances: instances ?? {}, templates: templates ?? {} }
  })

  const parse = (raw: { readonly instances: Record<string, string>; readonly templates: Record<string, string> }) =>
    Effect.gen(function*() {
      const doc: { version: 1; templates: Record<string, { load_balancer?: unknown; instances: Array<unknown> }> } = { version: 1, templates: {} }
      for (const [name, lb] of Object.entries(raw.templates)) {
        if (name !== GENERATION) doc.templates[name] = { load_balancer: JSON.parse(lb), instances: [] }
      }
      for (const [field, spec] of Object.entries(raw.instances).sort(([a], [b]) => a.localeCompare(b))) {
        if (field === GENERATION) continue
        const template = field.slice(0, field.indexOf("/"))
        ;(doc.templates[template] ??= { instances: [] }).instances.push(JSON.parse(spec))
      }
      const decoded = decode(doc)
      if (Either.isLeft(decoded)) {
        return yield* new RegistryStorageError({ path: keys.instances, message: `the registry in Redis is not valid:\n${formatParseError(decoded.left, "registry").join("\n")}` })
      }
      return decoded.right
    }).pipe(
      // (An entry that is not JSON: written by something else than a replica.)
      Effect.catchAllDefect((e) => Effect.fail(new RegistryStorageError({ path: keys.instances, message: `the registry in Redis is not valid: ${e instanceof Error ? e.message : String(e)}` })))
    )

  /** Writes back what this replica knew (Redis lost it, whole or in part), then tells every replica. */
  const restore = (registry: PersistedRegistry) =>
    Effect.gen(function*() {
      const instancePairs: Array<string> = []
      const templatePairs: Array<string> = []
      for (const [template, entry] of Object.entries(registry.templates)) {
        if (entry.load_balancer !== undefined) templatePairs.push(template, JSON.stringify(entry.load_balancer))
        for (const spec of entry.instances) instancePairs.push(`${template}/${spec.id}`, JSON.stringify(spec))
      }
      const generation = yield* call(() =>
        redis.eval(RESTORE, 3, keys.instances, keys.templates, keys.channel, newGeneration(), instancePairs.length / 2, ...instancePairs, ...templatePairs)
      )
      known = String(generation)
    })

  const isEmpty = (registry: PersistedRegistry | undefined) => registry === undefined || Object.keys(registry.templates).length === 0

  /**
   * Reads the registry; if it is not the generation this replica knew, or its two hashes
   * disagree (one was lost), writes back what this replica knew first, and reads again. Never
   * returns a registry that Redis lost as if it were the fleet's.
   */
  const readRepaired = Effect.gen(function*() {
    const raw = yield* readRaw
    const generation = generationOf(raw.instances, raw.templates)
    const partial = generation === undefined && (raw.instances[GENERATION] !== undefined || raw.templates[GENERATION] !== undefined)
    // (A replica that has seen no generation yet takes the one there is.)
    if (!partial && (generation === known || known === undefined)) return { raw, generation }
    if (!isEmpty(lastKnown)) {
      const held = yield* parse(raw).pipe(Effect.map((r) => instanceIds(r).size), Effect.orElseSucceed(() => 0))
      yield* Effect.logWarning(
        `the shared registry in Redis ${fleet.describe} lost its data (emptied, evicted or failed over: ${held} of the ` +
          `${instanceIds(lastKnown!).size} registrations this replica knew are there): writing back the last known registrations`
      )
    }
    yield* restore(lastKnown ?? emptyRegistry)
    const again = yield* readRaw
    return { raw: again, generation: generationOf(again.instances, again.templates) }
  })

  const load = Effect.gen(function*() {
    if (fleet.status() !== "ok") return yield* unavailable()
    const { raw, generation } = yield* readRepaired
    const registry = yield* parse(raw)
    if (lastKnown !== undefined) {
      const before = instanceIds(lastKnown)
      const after = instanceIds(registry)
      let removed = 0
      for (const id of before) if (!after.has(id)) removed++
      if (removed > 1) {
        yield* Effect.logWarning(
          `the shared registry in Redis ${fleet.describe} has ${removed} of the ${before.size} registrations this replica knew fewer ` +
            `(deregistered through other replicas at once); ${after.size} left`
        )
      }
    }
    lastKnown = registry
    if (generation !== undefined) known = generation
    return registry
  })

  /** Runs a change's script; when the registry is not the generation this replica knew (-1), writes it back and tries once more. */
  const guarded = <A>(run: () => Promise<A>, refused: (a: A) => boolean) =>
    Effect.gen(function*() {
      const first = yield* call(run)
      if (!refused(first)) return first
      yield* readRepaired
      return yield* call(run)
    })

  const save: RegistryStoreShape["save"] = (next, change) =>
    Effect.gen(function*() {
      if (fleet.status() !== "ok") return yield* unavailable()
      savesStarted++
      savesRunning++
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          savesRunning--
          if (savesRunning === 0) afterSaves?.()
        })
      )
      switch (change._tag) {
        case "Registered": {
          const field = `${change.template}/${change.id}`
          const token = newGeneration()
          const [done, generation] = yield* guarded(
            () =>
              redis.eval(
                REGISTER,
                3,
                keys.instances,
                keys.templates,
                keys.channel,
                field,
                JSON.stringify(change.spec),
                change.loadBalancer === undefined ? "" : JSON.stringify(change.loadBalancer),
                change.template,
                known ?? "",
                token
              ) as Promise<[number, string]>,
            ([status]) => status === -1
          )
          if (done === -1) return yield* unavailable()
          if (generation !== "") known = generation
          if (done === 0) {
            return yield* new RegistrationConflict({ message: `template "${change.template}" already has an instance "${change.id}" (registered through another replica); deregister it first` })
          }
          break
        }
        case "Deregistered": {
          const done = yield* guarded(
            () =>
              redis.eval(DEREGISTER, 3, keys.instances, keys.templates, keys.channel, `${change.template}/${change.id}`, change.templateDropped ? "1" : "", change.template, known ?? "") as Promise<number>,
            (status) => status === -1
          )
          if (done === -1) return yield* unavailable()
          break
        }
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
    }).pipe(Effect.scoped)

  const external = Stream.asyncScoped<PersistedRegistry>((emit) =>
    Effect.gen(function*() {
      // (This fiber's runtime: its logger is the gateway's, so these lines follow --log-format.)
      const runtime = yield* Effect.runtime<never>()
      // One read at a time; messages that arrive meanwhile make one more read after it.
      let reading = false
      let again = false
      // (Set while a read waits for this replica's changes under way: see savesStarted.)
      let deferred = false
      const read = () => {
        if (reading) return void (again = true)
        if (savesRunning > 0) return void (deferred = true)
        reading = true
        const started = savesStarted
        Runtime.runPromise(runtime)(Effect.either(load)).then((result) => {
          // A change of this replica's that started meanwhile may be missing from what was read.
          if (savesStarted !== started) again = true
          else if (Either.isRight(result)) void emit.single(result.right)
          reading = false
          if (again) {
            again = false
            read()
          }
        })
      }
      afterSaves = () => {
        if (!deferred) return
        deferred = false
        read()
      }
      fleet.subscribe(keys.channel, read)
      fleet.onReady(read)
      // The periodic check: the generation alone (two small reads), the whole registry only when it changed.
      const check = Effect.gen(function*() {
        if (fleet.status() !== "ok" || reading) return
        const [instances, templates] = yield* call(() => Promise.all([redis.hget(keys.instances, GENERATION), redis.hget(keys.templates, GENERATION)]))
        const generation = instances !== null && instances === templates ? instances : undefined
        if (instances !== templates || generation !== known) read()
      }).pipe(Effect.ignore)
      yield* Effect.forkScoped(Effect.repeat(check, Schedule.spaced(fleet.checkInterval)))
    })
  )

  return { name: `Redis ${fleet.describe}`, load, save, external, pins: redisPinStore(fleet) }
}
