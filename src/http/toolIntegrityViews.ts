import { toolLockOf, type ToolLockFile } from "../domain/ToolLock.js"
import { GATEWAY_VERSION } from "../domain/Protocol.js"
import type { Pin, TemplateIntegrity, ToolPinsShape } from "../integrity/ToolPins.js"

/** The admin API's JSON of tool integrity (snake_case, as the rest of /gateway/*). */

export const pinJson = (pin: TemplateIntegrity["pins"][number]) => ({
  kind: pin.kind,
  name: pin.name,
  digest: pin.digest,
  pinned_at: pin.pinnedAt,
  source: pin.source
})

export const pinOfJson = (pin: Pin) =>
  pinJson({ kind: pin.definition.kind, name: pin.definition.name, digest: pin.definition.digest, pinnedAt: pin.pinnedAt, source: pin.source })

/** GET /gateway/tools/lock: the pins of these templates as the lock file (templates with nothing pinned are left out). */
export const toolsLockJson = (pins: Pick<ToolPinsShape, "pinned">, templates: ReadonlyArray<string>): ToolLockFile =>
  toolLockOf(
    templates.flatMap((name) => {
      const pinned = pins.pinned(name)
      return pinned === undefined ? [] : [[name, Array.from(pinned.values(), (p) => p.definition)] as const]
    }),
    `mcp-gateway ${GATEWAY_VERSION}`
  )

/** A template's tool integrity as /gateway/registry and the status page show it (docs/api.md). */
export const integrityView = (integrity: TemplateIntegrity | undefined) =>
  integrity === undefined
    ? undefined
    : {
      policy: integrity.policy,
      pins: integrity.pins.length,
      pinned: integrity.pins.map(pinJson),
      changes: integrity.changes.map((c) => ({
        kind: c.kind,
        name: c.name,
        change: c.change,
        action: c.action,
        pinned_digest: c.pinned?.digest ?? null,
        offered_digest: c.offered?.digest ?? null,
        first_seen_at: c.firstSeenAt,
        instances: c.instances,
        diff: c.diff
      }))
    }
