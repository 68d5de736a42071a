import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Timer } from "../../src/clock/Timer.js"
import { GatewayConfig, type GatewayConfigShape } from "../../src/config/GatewayConfig.js"
import type { IntegrityPolicy } from "../../src/domain/IntegrityPolicy.js"
import { type Definition, definitionOf } from "../../src/domain/ToolDefinitions.js"
import { parseToolLock, toolLockOf, toolLockText } from "../../src/domain/ToolLock.js"
import { FleetRedis } from "../../src/fleet/FleetRedis.js"
import { ToolPins } from "../../src/integrity/ToolPins.js"
import { ToolPinsLive } from "../../src/integrity/ToolPinsLive.js"
import { GatewayMetrics } from "../../src/observability/GatewayMetrics.js"
import { readRegistryFile, writeRegistryFile } from "../../src/registry/RegistryFile.js"
import { Registry } from "../../src/registry/Registry.js"
import { testConfig } from "../support/testConfig.js"

/** The lock file as the pins service takes it at start (gateway.tools_lock_file, `start --locked`). */

const tool = (name: string, description: string): Definition => definitionOf("tool", { name, description, inputSchema: { type: "object" } })!
const offer = (...tools: ReadonlyArray<Definition>) => new Map(tools.map((t) => [t.name, t]))
const stored = (d: Definition, source: string) => ({ kind: d.kind, name: d.name, definition: d.text, pinned_at: "2026-01-01T00:00:00.000Z", source })

/** A registry file whose store holds `pins` for template "t", and a lock file holding `locked` for it. */
const setUp = (pins: ReadonlyArray<ReturnType<typeof stored>>, locked: ReadonlyArray<Definition>, lockedEverywhere: boolean, policy?: IntegrityPolicy) =>
  Effect.gen(function*() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-pins-lock-"))
    const registryFile = path.join(dir, "registry.json")
    yield* writeRegistryFile(registryFile, { version: 1, templates: {}, pins: { t: [...pins] } })
    const lockFile = path.join(dir, "tools.lock.json")
    const lock = Either.getOrThrow(parseToolLock(toolLockText(toolLockOf([["t", locked]])), lockFile))
    const base = testConfig({ t: { instances: ["a"] } }, { registryFile })
    const config: GatewayConfigShape = {
      ...base,
      gateway: { ...base.gateway, toolsLock: { file: lockFile, lock, locked: lockedEverywhere } },
      templates: base.templates.map((t) => ({ ...t, toolIntegrity: policy }))
    }
    const layer = ToolPinsLive.pipe(
      Layer.provideMerge(Registry.layer.pipe(Layer.provide(FleetRedis.off))),
      Layer.provide(Layer.mergeAll(GatewayMetrics.layer, Timer.layerTest)),
      Layer.provide(GatewayConfig.layer(config))
    )
    return { layer, registryFile }
  })

describe("ToolPins and the tools lock file", () => {
  it.live("at start the lock's pins go over the store's (and are stored); the rest stay; first sight pins nothing more of the template", () =>
    Effect.gen(function*() {
      const { layer, registryFile } = yield* setUp(
        [stored(tool("echo", "Echo v1"), "first sight"), stored(tool("old", "Old"), "first sight")],
        [tool("echo", "Echo v2"), tool("add", "Add")],
        false
      )
      yield* Effect.gen(function*() {
        const pins = yield* ToolPins
        expect(Array.from(pins.pinned("t")!.values(), (p) => `${p.definition.name} ${p.source}`).sort()).toEqual(["add lock file", "echo lock file", "old first sight"])
        expect(pins.pinned("t")!.get("tool:echo")!.definition.digest).toBe(tool("echo", "Echo v2").digest)
        expect((yield* pins.report("t"))[0]!.policy.pin).toBe("trust_on_first_use")
        // A new tool, to plain clients or to clients that sample: a change (blocked), not a first sight.
        expect(pins.observe("t", "tool", offer(tool("echo", "Echo v2"), tool("add", "Add"), tool("old", "Old"), tool("new", "New")), "a")).toEqual(new Set(["new"]))
        expect(pins.observeOffer("t", "tool", offer(tool("echo", "Echo v2"), tool("sampler", "Samples")), "a", { audience: "sampling", complete: false, lastPage: true }))
          .toEqual(new Set(["sampler"]))
        // (Stored by the service's fiber: wait for it.)
        for (let i = 0; i < 100 && (yield* readRegistryFile(registryFile)).pins?.t?.find((p) => p.name === "echo")?.source !== "lock file"; i++) yield* Effect.sleep(10)
      }).pipe(Effect.provide(layer), Effect.scoped)
      const inStore = (yield* readRegistryFile(registryFile)).pins!.t!
      expect(inStore.map((p) => `${p.name} ${p.source}`).sort()).toEqual(["add lock file", "echo lock file", "old first sight"])
    }))

  it.live("--locked: the lock's pins alone, whatever the store held; anything else blocked whatever on_change says, until approved", () =>
    Effect.gen(function*() {
      const { layer } = yield* setUp(
        [stored(tool("echo", "Echo v1"), "first sight"), stored(tool("old", "Old"), "approved by bob")],
        [tool("echo", "Echo v2")],
        true,
        { pin: "trust_on_first_use", on_change: "warn", drift: "off" }
      )
      yield* Effect.gen(function*() {
        const pins = yield* ToolPins
        expect(Array.from(pins.pinned("t")!.values(), (p) => `${p.definition.name} ${p.source}`)).toEqual(["echo lock file"])
        expect((yield* pins.report("t"))[0]!.policy).toMatchObject({ pin: "locked", on_change: "block" })
        expect(pins.observe("t", "tool", offer(tool("echo", "Echo v1"), tool("old", "Old")), "a")).toEqual(new Set(["echo", "old"]))
        expect(pins.blocked("t", "tool", "old")).toMatchObject({ change: "new", action: "blocked" })
        expect(pins.blocked("t", "tool", "echo")).toMatchObject({ change: "changed", action: "blocked" })
        // Approved while it runs: served.
        yield* pins.approve("t", ["old"], "alice")
        expect(pins.blocked("t", "tool", "old")).toBeUndefined()
        expect(pins.observe("t", "tool", offer(tool("echo", "Echo v1"), tool("old", "Old")), "a")).toEqual(new Set(["echo"]))
      }).pipe(Effect.provide(layer), Effect.scoped)
    }))
})
