import { Context, type Effect } from "effect"
import type { TemplateNotFound } from "../domain/GatewayError.js"
import type { Definition, DefinitionKind } from "../domain/ToolDefinitions.js"

/**
 * Tool integrity (issue 23, docs/security.md): for each template the gateway keeps the approved
 * definition of every tool, prompt and resource template it exposes (its pins), notices when an
 * instance offers something else, and decides by the template's policy what clients see.
 *
 * This file is the contract between the parts: the pins themselves (ToolPins, the service),
 * the per-instance offers and drift (which instances match the pins), and the management
 * surface (admin API routes, `mcp-gateway tools …`, the lock file). The service's layer lives
 * beside it (ToolPinsLive.ts).
 */

/** A template's policies (the `tool_integrity` setting of a template, or the gateway's default). */
export interface IntegrityPolicy {
  /** What is pinned when nothing is yet: what the first healthy instance offers; only the lock file's; nothing (integrity off). */
  readonly pin: "trust_on_first_use" | "locked" | "off"
  /** An offered definition that differs from its pin (or is new): left out and refused; served with an alert; re-pinned. */
  readonly on_change: "block" | "warn" | "allow"
  /** Instances whose offer differs from the pins: take no requests; or are used anyway (shown as drift either way). */
  readonly drift: "route_to_pinned" | "off"
}

export const DEFAULT_INTEGRITY_POLICY: IntegrityPolicy = { pin: "trust_on_first_use", on_change: "block", drift: "route_to_pinned" }

/** One definition as pinned. */
export interface Pin {
  readonly definition: Definition
  /** ISO time of the pin (first sight, approval or lock file). */
  readonly pinnedAt: string
  /** How it was pinned: first sight, an approval (by whom), a lock file, `allow`. */
  readonly source: string
}

/** A definition offered that differs from its pin, a new one, or one no longer offered. */
export interface Change {
  readonly kind: DefinitionKind
  readonly name: string
  readonly change: "changed" | "new" | "removed"
  readonly pinned: Definition | undefined
  readonly offered: Definition | undefined
  /** describeChange(pinned, offered). */
  readonly diff: string
  /** What the policy made of it: left out and refused, served with an alert, or re-pinned. */
  readonly action: "blocked" | "warned" | "allowed"
  readonly firstSeenAt: string
  /** The instances seen offering it, when known. */
  readonly instances: ReadonlyArray<string>
}

/** What /gateway/registry, the status page and `tools diff` show of a template. */
export interface TemplateIntegrity {
  readonly template: string
  readonly policy: IntegrityPolicy
  readonly pins: ReadonlyArray<{ readonly kind: DefinitionKind; readonly name: string; readonly digest: string; readonly pinnedAt: string; readonly source: string }>
  readonly changes: ReadonlyArray<Change>
}

export interface ToolPinsShape {
  /** The template's pins by definitionKey (undefined: nothing pinned yet, or integrity off). Synchronous: read on the request path. */
  readonly pinned: (template: string) => ReadonlyMap<string, Pin> | undefined
  /**
   * An offer seen (a list answer through any face, or an instance's own list read for drift):
   * pins on first sight, records changes by the policy (logged once, audited, counted), and says
   * which names of the offer clients may not see or call (`block`). Synchronous.
   */
  readonly observe: (template: string, kind: DefinitionKind, offered: ReadonlyMap<string, Definition>, instanceId: string | undefined) => ReadonlySet<string>
  /** The template's integrity (every template when undefined), for views and `tools diff`. */
  readonly report: (template?: string) => Effect.Effect<ReadonlyArray<TemplateIntegrity>>
  /**
   * Re-pins what the template's instances offer now, for the pending changes of `names` (every
   * pending change when undefined; a removed definition's pin is dropped): `mcp-gateway tools
   * approve`, `POST /gateway/templates/{t}/tools/approve`. `by` is who approved (the credential's
   * id), kept as the pins' source. Answers the pins made.
   */
  readonly approve: (template: string, names: ReadonlyArray<string> | undefined, by: string) => Effect.Effect<ReadonlyArray<Pin>, TemplateNotFound>
}

export class ToolPins extends Context.Tag("mcp-gateway/ToolPins")<ToolPins, ToolPinsShape>() {}
