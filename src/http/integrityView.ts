import type { TemplateIntegrity } from "../integrity/ToolPins.js"

/** A template's tool integrity as /gateway/registry and the status page show it (docs/api.md). */
export const integrityView = (integrity: TemplateIntegrity | undefined) =>
  integrity === undefined
    ? undefined
    : {
      policy: integrity.policy,
      pins: integrity.pins.length,
      pinned: integrity.pins.map((p) => ({ kind: p.kind, name: p.name, digest: p.digest, pinned_at: p.pinnedAt, source: p.source })),
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
