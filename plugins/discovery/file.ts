import { Effect, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { type DiscoveredDocument, DiscoveryError, DiscoveryPlugin } from "mcp-gateway/plugin"

/** Editors write a file in several steps; one discovery for the burst. */
const SETTLE_MS = 200

/**
 * Instances from a directory of `*.json` files, each `{"templates": {"name": {"instances":
 * [...]}}}` (the shape of the config's templates). Every change of the directory applies at
 * once: a new file's instances start, a removed file's drain. A file that is not valid JSON or
 * not a valid document fails the whole run, naming the file, and nothing changes until it is
 * fixed. Hidden files (`.name.json`, editors' swap files) are ignored. Relative `working_dir`s
 * of stdio instances are relative to the file's directory.
 */
export default DiscoveryPlugin.make({
  name: "file",
  description: "Instances from the *.json files of a directory, applied on every change",
  defaultIntervalSeconds: 30,
  options: Schema.Struct({
    /** Relative to the config file's directory. */
    directory: Schema.String
  }),
  make: (options, context) =>
    Effect.gen(function*() {
      const directory = path.resolve(context.baseDir, options.directory)
      if (!fs.existsSync(directory) || !fs.statSync(directory).isDirectory()) {
        return yield* new DiscoveryError({ message: `directory ${directory} does not exist (create it, or fix options.directory)` })
      }

      const readOne = (name: string) =>
        Effect.gen(function*() {
          const file = path.join(directory, name)
          const text = yield* Effect.tryPromise({
            try: () => fs.promises.readFile(file, "utf8"),
            catch: (e) => new DiscoveryError({ message: `${name}: cannot read it: ${(e as Error).message}` })
          })
          const json = yield* Effect.try({
            try: () => JSON.parse(text) as unknown,
            catch: (e) => new DiscoveryError({ message: `${name}: not valid JSON (${(e as Error).message})` })
          })
          const document = yield* DiscoveryPlugin.decodeDocument(json, name)
          return { name, document }
        })

      const discover = Effect.gen(function*() {
        const names = yield* Effect.tryPromise({
          try: () => fs.promises.readdir(directory),
          catch: (e) => new DiscoveryError({ message: `cannot list ${directory}: ${(e as Error).message}` })
        })
        const files = names.filter((n) => n.endsWith(".json") && !n.startsWith(".")).sort()
        const documents = yield* Effect.forEach(files, readOne, { concurrency: 8 })
        // One template may be spread over several files; its load_balancer is given once.
        const templates: Record<string, { load_balancer?: any; instances: Array<any>; lbFrom?: string; ids?: Map<string, string> }> = {}
        for (const { document, name } of documents) {
          for (const [template, entry] of Object.entries(document.templates)) {
            const merged = templates[template] ??= { instances: [] }
            if (entry.load_balancer !== undefined) {
              if (merged.lbFrom !== undefined) {
                return yield* new DiscoveryError({ message: `${name}: templates.${template}.load_balancer is also given in ${merged.lbFrom}; give it once` })
              }
              merged.load_balancer = entry.load_balancer
              merged.lbFrom = name
            }
            for (const spec of entry.instances) {
              // Two files naming one id: say which, rather than an index into the merged list.
              const ids = merged.ids ??= new Map()
              if (spec.id !== undefined) {
                const other = ids.get(spec.id)
                if (other !== undefined) {
                  return yield* new DiscoveryError({ message: `${name}: templates.${template}: instance id "${spec.id}" is also given in ${other}` })
                }
                ids.set(spec.id, name)
              }
              merged.instances.push(
                spec.transport === "stdio" ? { ...spec, working_dir: path.resolve(directory, spec.working_dir ?? ".") } : spec
              )
            }
          }
        }
        const out: DiscoveredDocument["templates"] = Object.fromEntries(
          Object.entries(templates).map(([name, { ids: _ids, lbFrom: _, ...entry }]) => [name, entry])
        )
        return { templates: out }
      })

      const changes = Stream.async<void>((emit) => {
        const watcher = fs.watch(directory, () => void emit.single(undefined))
        watcher.on("error", () => undefined)
        return Effect.sync(() => watcher.close())
      }).pipe(Stream.debounce(`${SETTLE_MS} millis`))

      return { discover, changes }
    })
})
