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
