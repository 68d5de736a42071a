import { Context, type Effect, type Stream } from "effect"
import type { TemplateNotFound } from "../domain/GatewayError.js"
import type { IntegrityPolicy } from "../domain/IntegrityPolicy.js"
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

/** A template's policies (the `tool_integrity` setting of a template, or the gateway's default); defined in domain/ because the config reads them. */
export { DEFAULT_INTEGRITY_POLICY, type IntegrityPolicy } from "../domain/IntegrityPolicy.js"

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
   * `observe` of one page of a list: `complete` when it is the whole offer (pinned items missing
   * from it are `removed`), `lastPage` when no page follows (trust on first use pins every page
   * of the first listing, up to its last); `audience`: the capabilities the client declared
   * (sorted names, "" for none: a server may offer more to clients that declare more, and the
   * first offer to each audience is a first sight). What the faces call (exposure/Exposure.ts).
   */
  readonly observeOffer: (
    template: string,
    kind: DefinitionKind,
    offered: ReadonlyMap<string, Definition>,
    instanceId: string | undefined,
    page: { readonly complete: boolean; readonly lastPage: boolean; readonly audience?: string | undefined }
  ) => ReadonlySet<string>
  /**
   * The blocked change of one item, if clients may not call it now (`tools/call`, `prompts/get`).
   * Synchronous and allocation-free when nothing is blocked: the request path asks it.
   */
  readonly blocked: (template: string, kind: DefinitionKind, name: string) => Change | undefined
  /**
   * Re-pins the currently offered definitions of `names` (a name, or `kind:name`), or of every
   * pending change (undefined); `by` says who (for the pins' source and the audit line). Stored
   * before it returns (on every replica with Redis). Returns what was re-pinned.
   */
  readonly approve: (template: string, names: ReadonlyArray<string> | undefined, by: string) => Effect.Effect<ReadonlyArray<Pin>, TemplateNotFound>
  /**
   * Pins these definitions of a template as given, over what is pinned (a lock file loaded, or
   * definitions an operator supplies), stored on every replica; what is offered now is evaluated
   * again against them. Returns the pins.
   */
  readonly replacePins: (template: string, definitions: ReadonlyArray<Definition>, source: string) => Effect.Effect<ReadonlyArray<Pin>>
  /** What clients of a template may use changed (a block began or ended, an approval): their sessions get list_changed. */
  readonly listChanges: Stream.Stream<{ readonly template: string; readonly kind: DefinitionKind }>
  /** The error text of a refused call: what changed, and the command that approves it. */
  readonly describeRefusal: (template: string, change: Change) => string
}

export class ToolPins extends Context.Tag("mcp-gateway/ToolPins")<ToolPins, ToolPinsShape>() {}
