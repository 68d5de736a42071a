import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { DEFAULT_LOAD_BALANCER } from "../../src/domain/LoadBalancer.js"
import { makeRegistry } from "../../src/registry/Registry.js"
import { testConfig } from "../support/testConfig.js"

const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "gw-registry-"))

const registryAt = (file: string, templates = testConfig({ cfg: { instances: ["c1"] } }).templates) =>
  makeRegistry({ templates, defaults: DEFAULT_LOAD_BALANCER, file })

describe("Registry", () => {
  it.scoped("persists run-time registrations atomically and loads them at start", () =>
    Effect.gen(function*() {
      const file = path.join(tempDir(), "registry.json")
      const first = yield* registryAt(file)
      yield* first.register({ template: "cfg", spec: { id: "api-1", transport: "http", endpoint: "http://127.0.0.1:7001/mcp" } })
      yield* first.register({
        template: "fresh",
        spec: { transport: "http", endpoint: "http://127.0.0.1:7002/mcp", weight: 2 },
        loadBalancer: { strategy: "weighted" }
      })
      const saved = JSON.parse(fs.readFileSync(file, "utf8"))
      expect(saved).toEqual({
        version: 1,
        templates: {
          cfg: { instances: [{ id: "api-1", transport: "http", endpoint: "http://127.0.0.1:7001/mcp", weight: 1 }] },
          fresh: {
            load_balancer: { strategy: "weighted" },
            instances: [{ id: "fresh-1", transport: "http", endpoint: "http://127.0.0.1:7002/mcp", weight: 2 }]
          }
        }
      })
      // No temp file is left beside it.
      expect(fs.readdirSync(path.dirname(file))).toEqual(["registry.json"])

      const second = yield* registryAt(file)
      expect(second.templates().map((t) => [t.name, t.source, Array.from(t.instances.keys())])).toEqual([
        ["cfg", "config", ["c1", "api-1"]],
        ["fresh", "api", ["fresh-1"]]
      ])
      expect(second.template("fresh")!.settings.strategy).toBe("weighted")

      // Deregistering the last instance of a run-time template removes the template, on disk too.
      yield* second.deregister("fresh", "fresh-1")
      yield* second.deregister("cfg", "api-1")
      expect(JSON.parse(fs.readFileSync(file, "utf8"))).toEqual({ version: 1, templates: {} })
      expect(second.template("fresh")).toBeUndefined()
    }))

  it.scoped("refuses duplicates and load_balancer for an existing template; 404s unknown instances", () =>
    Effect.gen(function*() {
      const registry = yield* registryAt(path.join(tempDir(), "r.json"))
      const dup = yield* Effect.flip(registry.register({ template: "cfg", spec: { id: "c1", transport: "http", endpoint: "http://h/" } }))
      expect(dup.message).toContain(`already has an instance "c1"`)
      const lb = yield* Effect.flip(registry.register({
        template: "cfg",
        spec: { transport: "http", endpoint: "http://h/" },
        loadBalancer: { strategy: "random" }
      }))
      expect(lb._tag).toBe("RegistrationConflict")
      expect((yield* Effect.flip(registry.deregister("cfg", "nope")))._tag).toBe("InstanceNotFound")
    }))

  it.scoped("a corrupt registry file is a clear start-up error, and the file is left untouched", () =>
    Effect.gen(function*() {
      const file = path.join(tempDir(), "registry.json")
      for (const content of ["{\"version\":1,\"templ", JSON.stringify({ version: 1, templates: { t: { instances: [{ transport: "http", endpoint: "nope" }] } } })]) {
        fs.writeFileSync(file, content)
        const exit = yield* Effect.exit(registryAt(file))
        expect(Exit.isFailure(exit)).toBe(true)
        const message = Exit.isFailure(exit) ? (exit.cause as any).error.message : ""
        expect(message).toContain(`registry file ${file}`)
        expect(message).toContain("left untouched")
        expect(fs.readFileSync(file, "utf8")).toBe(content)
      }
    }))

  it.scoped("a registration that cannot be written is rolled back", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const registry = yield* registryAt(path.join(dir, "sub", "registry.json"))
      // The file's directory becomes a plain file: every write now fails.
      fs.writeFileSync(path.join(dir, "sub"), "")
      const error = yield* Effect.flip(registry.register({ template: "new", spec: { transport: "http", endpoint: "http://h/" } }))
      expect(error._tag).toBe("RegistryStorageError")
      expect(registry.template("new")).toBeUndefined()
    }))
})
