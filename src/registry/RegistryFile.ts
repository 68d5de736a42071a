import { Effect, Either, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { formatParseError } from "../domain/formatParseError.js"
import { RegistryStorageError } from "../domain/GatewayError.js"
import { InstanceSpec, TemplateName } from "../domain/Instance.js"
import { LoadBalancerInput } from "../domain/LoadBalancer.js"
import { type AtomicWriteOptions, writeFileAtomic } from "./atomicWrite.js"
import { PersistedPins } from "./PinStore.js"

/**
 * The registry file holds what was registered at run time (through the API), so that it
 * survives a restart; the config file stays the source of truth for what it declares.
 */
export const PersistedRegistry = Schema.Struct({
  version: Schema.Literal(1),
  templates: Schema.Record({
    key: TemplateName,
    value: Schema.Struct({
      /** Set for templates created at run time; templates from the config keep the config's settings. */
      load_balancer: Schema.optional(LoadBalancerInput),
      instances: Schema.Array(InstanceSpec)
    })
  }),
  /** Pinned tool definitions by template (tool integrity; absent in files written before it). */
  pins: Schema.optional(PersistedPins)
})
export type PersistedRegistry = typeof PersistedRegistry.Type

export const emptyRegistry: PersistedRegistry = { version: 1, templates: {} }

const decode = Schema.decodeUnknownEither(PersistedRegistry, { errors: "all" })
const encode = Schema.encodeSync(PersistedRegistry)

/** Reads the file; a missing file is an empty registry, anything unreadable is an error (and the file is left as it is). */
export const readRegistryFile = (file: string): Effect.Effect<PersistedRegistry, RegistryStorageError> =>
  Effect.gen(function*() {
    const text = yield* Effect.tryPromise({
      try: () => fs.readFile(file, "utf8"),
      catch: (e) => e as NodeJS.ErrnoException
    }).pipe(
      Effect.catchAll((e) =>
        e.code === "ENOENT"
          ? Effect.succeed(undefined)
          : new RegistryStorageError({ path: file, message: `cannot read registry file ${file}: ${e.message}` })
      )
    )
    if (text === undefined) return emptyRegistry
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (e) {
      return yield* new RegistryStorageError({
        path: file,
        message: `registry file ${file} is not valid JSON (${(e as Error).message}); ` +
          `it was left untouched: repair or remove it`
      })
    }
    const result = decode(json)
    if (Either.isLeft(result)) {
      return yield* new RegistryStorageError({
        path: file,
        message: `registry file ${file} is not a valid registry; it was left untouched: repair or remove it\n` +
          formatParseError(result.left, "registry").join("\n")
      })
    }
    return result.right
  })

/**
 * Writes atomically (atomicWrite.ts): an exclusive temp file of a random name in the same
 * directory, flushed, then renamed over the old one, so a crash mid-write leaves either the old
 * file or the new one, never half of one, and a planted symlink is never followed.
 */
export const writeRegistryFile = (
  file: string,
  registry: PersistedRegistry,
  options?: AtomicWriteOptions
): Effect.Effect<void, RegistryStorageError> =>
  Effect.tryPromise({
    try: async () => {
      const dir = path.dirname(file)
      await fs.mkdir(dir, { recursive: true })
      await writeFileAtomic(file, JSON.stringify(encode(registry), null, 2) + "\n", options)
    },
    catch: (e) => new RegistryStorageError({ path: file, message: `cannot write registry file ${file}: ${(e as Error).message}` })
  })
