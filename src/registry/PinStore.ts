import { Effect, Either, Runtime, Schema, Stream } from "effect"
import { formatParseError } from "../domain/formatParseError.js"
import { RegistryStorageError, RegistryUnavailable } from "../domain/GatewayError.js"
import { type FleetRedisShape, isRedisTimeout } from "../fleet/FleetRedis.js"

/**
 * Where the pinned tool definitions live (tool integrity, docs/security.md): beside the
 * run-time registrations, in the same store, so that a restart keeps them and replicas that
 * share a Redis agree on them. What a pin holds is the definition's canonical text (its digest
 * is recomputed from it: a store cannot make a digest disagree with its text).
 */
export const StoredPin = Schema.Struct({
  kind: Schema.Literal("tool", "prompt", "resource_template"),
  name: Schema.String,
  /** The definition's canonical JSON (domain/ToolDefinitions.ts). */
  definition: Schema.String,
  pinned_at: Schema.String,
  source: Schema.String
})
export type StoredPin = typeof StoredPin.Type

/** Every template's pins. */
export const PersistedPins = Schema.Record({ key: Schema.String, value: Schema.Array(StoredPin) })
export type PersistedPins = typeof PersistedPins.Type

export type PinStoreError = RegistryStorageError | RegistryUnavailable

export interface PinStoreShape {
  readonly load: Effect.Effect<PersistedPins, PinStoreError>
  /**
   * Stores pins of one template. `first`: only where there is none yet (first sight: the first
   * writer wins, here or on another replica); `replace`: over what is there (an approval, `allow`,
   * a lock file). Returns the pins that hold now for the same items.
   */
  readonly save: (template: string, pins: ReadonlyArray<StoredPin>, mode: "first" | "replace") => Effect.Effect<ReadonlyArray<StoredPin>, PinStoreError>
  /** Every template's pins again after another replica changed them. */
  readonly external: Stream.Stream<PersistedPins>
}

export const pinKey = (pin: { readonly kind: string; readonly name: string }) => `${pin.kind}:${pin.name}`

/** `pins` over `current`: `first` keeps what is there. */
export const mergePins = (current: ReadonlyArray<StoredPin>, pins: ReadonlyArray<StoredPin>, mode: "first" | "replace") => {
  const byKey = new Map(current.map((p) => [pinKey(p), p]))
  for (const pin of pins) if (mode === "replace" || !byKey.has(pinKey(pin))) byKey.set(pinKey(pin), pin)
  return { all: Array.from(byKey.values()), holding: pins.map((p) => byKey.get(pinKey(p))!) }
}

/**
 * In Redis: one hash, `{template}\u0000{kind}:{name}` → the pin as JSON; first sight with
 * HSETNX (two replicas seeing a server first at once: the first writer wins, the other reads
 * its pin back); a message on a channel after every change, on which every replica reads them
 * again.
 */
export const redisPinStore = (fleet: FleetRedisShape): PinStoreShape => {
  const redis = fleet.command!
  const keys = { pins: `${fleet.prefix}registry:pins`, channel: `${fleet.prefix}registry:pins-changed` }
  const unavailable = (e?: unknown) => {
    if (isRedisTimeout(e)) fleet.reportSlow()
    return new RegistryUnavailable({ message: `the shared registry (Redis ${fleet.describe}) cannot be reached; try again when it is back` })
  }
  const call = <A>(run: () => Promise<A>) => Effect.tryPromise({ try: run, catch: unavailable })
  const decodePin = Schema.decodeUnknownEither(Schema.parseJson(StoredPin))
  const FIRST = `
local out = {}
for i = 1, #ARGV, 2 do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  out[#out + 1] = redis.call('HGET', KEYS[1], ARGV[i])
end
redis.call('PUBLISH', KEYS[2], 'first')
return out`
  const REPLACE = `
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PUBLISH', KEYS[2], 'replace')
return 1`

  const field = (template: string, pin: StoredPin) => `${template}\u0000${pinKey(pin)}`
  const parsePin = (text: string) => {
    const pin = decodePin(text)
    return Either.isLeft(pin)
      ? Effect.fail(new RegistryStorageError({ path: keys.pins, message: `a pin in Redis is not valid: ${formatParseError(pin.left, "pin").join("; ")}` }))
      : Effect.succeed(pin.right)
  }

  const load: PinStoreShape["load"] = Effect.gen(function*() {
    if (fleet.status() !== "ok") return yield* unavailable()
    const raw = yield* call(() => redis.hgetall(keys.pins))
    const out: Record<string, Array<StoredPin>> = {}
    for (const [f, text] of Object.entries(raw)) {
      const template = f.slice(0, f.indexOf("\u0000"))
      ;(out[template] ??= []).push(yield* parsePin(text))
    }
    return out
  })

  const save: PinStoreShape["save"] = (template, pins, mode) =>
    Effect.gen(function*() {
      if (pins.length === 0) return []
      if (fleet.status() !== "ok") return yield* unavailable()
      const args = pins.flatMap((p) => [field(template, p), JSON.stringify(p)])
      if (mode === "replace") {
        yield* call(() => redis.eval(REPLACE, 2, keys.pins, keys.channel, ...args))
        return pins
      }
      const held = (yield* call(() => redis.eval(FIRST, 2, keys.pins, keys.channel, ...args))) as Array<string>
      return yield* Effect.forEach(held, parsePin)
    })

  const external = Stream.asyncScoped<PersistedPins>((emit) =>
    Effect.gen(function*() {
      const runtime = yield* Effect.runtime<never>()
      // One read at a time; messages that arrive meanwhile make one more read after it.
      let reading = false
      let again = false
      const read = () => {
        if (reading) return void (again = true)
        reading = true
        Runtime.runPromise(runtime)(Effect.either(load)).then((result) => {
          if (Either.isRight(result)) void emit.single(result.right)
          reading = false
          if (again) {
            again = false
            read()
          }
        })
      }
      fleet.subscribe(keys.channel, read)
      fleet.onReady(read)
    })
  )

  return { load, save, external }
}
