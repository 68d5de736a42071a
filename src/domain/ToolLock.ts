import { Either, Schema } from "effect"
import { createHash } from "node:crypto"
import { canonicalJson } from "./canonicalJson.js"
import { formatParseError } from "./formatParseError.js"
import { TemplateName } from "./Instance.js"
import { type Definition, definitionFromText, type DefinitionKind, definitionKey } from "./ToolDefinitions.js"

/**
 * The tools lock file (tool integrity, docs/security.md "The lock file"): every template's pinned
 * definitions as a file a team commits and reviews, written by `mcp-gateway tools lock`, read at
 * start (`gateway.tools_lock_file`). Each entry holds the definition itself as JSON, keys sorted
 * (so that a review's diff shows the changed description line, not a changed blob); its canonical
 * text is canonicalJson(definition), and the digest must be that text's sha256, so a hand edit
 * that forgot the digest is refused, not pinned.
 */

/** The format this gateway writes and reads. A newer file is refused: read with an older gateway, it might be misread. */
export const TOOL_LOCK_VERSION = 1

const Kind = Schema.Literal("tool", "prompt", "resource_template")

export const ToolLockEntry = Schema.Struct({
  kind: Kind,
  /** A tool's or prompt's name; a resource template's URI template. */
  name: Schema.String.pipe(Schema.minLength(1, { message: () => "expected a non-empty name" })),
  /** sha256 of canonicalJson(definition), hex. */
  digest: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/, { message: () => "expected a sha256 digest (64 lower-case hex digits)" })),
  /** What a model reads of it: the fields the gateway pins (domain/ToolDefinitions.ts). */
  definition: Schema.Record({ key: Schema.String, value: Schema.Unknown })
})
export type ToolLockEntry = typeof ToolLockEntry.Type

export const ToolLockFile = Schema.Struct({
  version: Schema.Literal(TOOL_LOCK_VERSION),
  /** Where and by what it was written (informational). */
  generated_by: Schema.optional(Schema.String),
  templates: Schema.Record({ key: TemplateName, value: Schema.Array(ToolLockEntry) })
})
export type ToolLockFile = typeof ToolLockFile.Type

/** A lock file as the gateway uses it: each template's definitions. */
export interface ToolLock {
  readonly templates: ReadonlyMap<string, ReadonlyArray<Definition>>
}

const decode = Schema.decodeUnknownEither(ToolLockFile, { errors: "all", onExcessProperty: "error" })

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex")

/** The name a definition gives itself (a resource template's is its URI template). */
const ownName = (kind: DefinitionKind, definition: Readonly<Record<string, unknown>>) =>
  kind === "resource_template" ? definition.uriTemplate : definition.name

/**
 * A lock file's text as the gateway's pins, or every problem with it, each naming where it is
 * (`templates.everything[2].digest: ...`). `where` names the file in the messages. Nothing of a
 * bad file is used: a half-written or hand-broken lock must stop the gateway, not pin less.
 */
export const parseToolLock = (text: string, where: string): Either.Either<ToolLock, ReadonlyArray<string>> => {
  if (text.trim() === "") return Either.left([`${where}: the file is empty (a half-written lock file? write it again with \`mcp-gateway tools lock\`)`])
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (e) {
    return Either.left([`${where}: not valid JSON (${(e as Error).message}): a half-written or hand-broken lock file? write it again with \`mcp-gateway tools lock\``])
  }
  if (typeof raw === "object" && raw !== null && !Array.isArray(raw)) {
    const version = (raw as Record<string, unknown>).version
    if (typeof version === "number" && version > TOOL_LOCK_VERSION) {
      return Either.left([`${where}: version ${version} is newer than this gateway reads (${TOOL_LOCK_VERSION}): upgrade mcp-gateway`])
    }
  }
  const decoded = decode(raw)
  if (Either.isLeft(decoded)) return Either.left(formatParseError(decoded.left).map((p) => `${where}: ${p}`))
  const problems: Array<string> = []
  const templates = new Map<string, ReadonlyArray<Definition>>()
  for (const [template, entries] of Object.entries(decoded.right.templates)) {
    const seen = new Set<string>()
    const definitions: Array<Definition> = []
    entries.forEach((entry, i) => {
      const at = `${where}: templates${/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(template) ? `.${template}` : `[${JSON.stringify(template)}]`}[${i}]`
      const key = definitionKey(entry.kind, entry.name)
      if (seen.has(key)) return problems.push(`${at}: ${entry.kind} ${JSON.stringify(entry.name)} is listed twice`)
      seen.add(key)
      if (ownName(entry.kind, entry.definition) !== entry.name) {
        return problems.push(`${at}.name: ${JSON.stringify(entry.name)} is not the name its definition gives (${JSON.stringify(ownName(entry.kind, entry.definition) ?? null)})`)
      }
      const canonical = canonicalJson(entry.definition)
      if (sha256(canonical) !== entry.digest) {
        return problems.push(
          `${at}.digest: does not match the definition (edited by hand? approve the change on a gateway and write the file again with \`mcp-gateway tools lock\`)`
        )
      }
      definitions.push(definitionFromText(entry.kind, entry.name, canonical))
    })
    templates.set(template, definitions)
  }
  return problems.length > 0 ? Either.left(problems) : Either.right({ templates })
}

const KIND_ORDER: Readonly<Record<DefinitionKind, number>> = { tool: 0, prompt: 1, resource_template: 2 }

/**
 * The lock file of these pins: templates by name, entries by kind then name, every object's keys
 * sorted, so that the same pins always write the same text (a commit changes only what changed).
 */
export const toolLockOf = (templates: Iterable<readonly [string, Iterable<Definition>]>, generatedBy?: string): ToolLockFile => {
  const sorted = Array.from(templates, ([name, definitions]) =>
    [
      name,
      Array.from(definitions)
        .sort((a, b) => KIND_ORDER[a.kind] - KIND_ORDER[b.kind] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
        .map((d): ToolLockEntry => ({ kind: d.kind, name: d.name, digest: d.digest, definition: JSON.parse(d.text) as Record<string, unknown> }))
    ] as const
  ).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return {
    version: TOOL_LOCK_VERSION,
    ...(generatedBy === undefined ? {} : { generated_by: generatedBy }),
    templates: Object.fromEntries(sorted)
  }
}

/** A lock file's text: indented JSON (canonical definitions: their keys sorted), one final newline. */
export const toolLockText = (lock: ToolLockFile): string => `${JSON.stringify(lock, null, 2)}\n`
