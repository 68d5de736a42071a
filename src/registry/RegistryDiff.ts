/**
 * What one reconciliation changed in the registry (a config reload, a discovery sync): names
 * are `template/instance` for instances, template names for templates. What `mcp-gateway sync`
 * prints and the log says.
 */
export interface RegistryDiff {
  readonly added: ReadonlyArray<string>
  readonly removed: ReadonlyArray<string>
  /** Same id, another definition: the old one drains, the new one starts. */
  readonly replaced: ReadonlyArray<string>
  readonly templatesAdded: ReadonlyArray<string>
  readonly templatesRemoved: ReadonlyArray<string>
  /** Load-balancer settings, rate limit or forwarded headers changed: they apply to the next request. */
  readonly templatesChanged: ReadonlyArray<string>
  /** What was not applied, and why (an id another source holds, a setting of a template it does not own). */
  readonly skipped: ReadonlyArray<string>
}

export const emptyDiff: RegistryDiff = {
  added: [],
  removed: [],
  replaced: [],
  templatesAdded: [],
  templatesRemoved: [],
  templatesChanged: [],
  skipped: []
}

/** Whether applying it changed anything that serves traffic. */
export const diffChangedSomething = (diff: RegistryDiff): boolean =>
  diff.added.length + diff.removed.length + diff.replaced.length + diff.templatesAdded.length +
      diff.templatesRemoved.length + diff.templatesChanged.length > 0

/** One line for the log: `+2 instances (a/1, a/2), -1 (b/3), 1 template changed (a)`. */
export const describeDiff = (diff: RegistryDiff): string => {
  const part = (n: ReadonlyArray<string>, what: string) => n.length === 0 ? [] : [`${what} ${n.join(", ")}`]
  const parts = [
    ...part(diff.templatesAdded, "templates added:"),
    ...part(diff.templatesRemoved, "templates removed:"),
    ...part(diff.templatesChanged, "templates changed:"),
    ...part(diff.added, "added:"),
    ...part(diff.removed, "removed:"),
    ...part(diff.replaced, "replaced:"),
    ...part(diff.skipped, "skipped:")
  ]
  return parts.length === 0 ? "no change" : parts.join("; ")
}

/** Collects a diff while a reconciliation runs. */
export class DiffBuilder {
  readonly added: Array<string> = []
  readonly removed: Array<string> = []
  readonly replaced: Array<string> = []
  readonly templatesAdded: Array<string> = []
  readonly templatesRemoved: Array<string> = []
  readonly templatesChanged: Array<string> = []
  readonly skipped: Array<string> = []

  build(): RegistryDiff {
    return {
      added: this.added,
      removed: this.removed,
      replaced: this.replaced,
      templatesAdded: this.templatesAdded,
      templatesRemoved: this.templatesRemoved,
      templatesChanged: this.templatesChanged,
      skipped: this.skipped
    }
  }
}
