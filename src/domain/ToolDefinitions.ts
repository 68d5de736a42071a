import { createHash } from "node:crypto"
import { canonicalJson } from "./canonicalJson.js"
import { isObject } from "./JsonRpc.js"

/**
 * What a model reads of a server's offer, one item at a time: a tool, a prompt or a resource
 * template, as the gateway pins it (tool integrity, docs/security.md). Only what steers a model
 * counts (its name, title, description, schemas, annotations); what does not (icons, `_meta`,
 * an item's position in the list) is left out, so that a digest changes only when the meaning does.
 */
export type DefinitionKind = "tool" | "prompt" | "resource_template"

export interface Definition {
  readonly kind: DefinitionKind
  /** A tool's or prompt's name; a resource template's URI template. */
  readonly name: string
  /** The fields that count, as the server wrote them (canonical in `text`). */
  readonly fields: Readonly<Record<string, unknown>>
  /** canonicalJson of the fields: equal meaning, equal text (key order does not matter). */
  readonly text: string
  /** sha256 of `text`, hex. */
  readonly digest: string
}

/** Where a definition is kept: `tool:echo`, `prompt:greet`, `resource_template:file:///{path}`. */
export const definitionKey = (kind: DefinitionKind, name: string) => `${kind}:${name}`

/** The list method whose result holds each kind, and the result's field that holds the items. */
export const LIST_OF: Readonly<Record<DefinitionKind, { readonly method: string; readonly field: string }>> = {
  tool: { method: "tools/list", field: "tools" },
  prompt: { method: "prompts/list", field: "prompts" },
  resource_template: { method: "resources/templates/list", field: "resourceTemplates" }
}

/** The kind a list method's items are, if it is one of the pinned lists. */
export const kindOfList = (method: string): DefinitionKind | undefined =>
  method === "tools/list" ? "tool" : method === "prompts/list" ? "prompt" : method === "resources/templates/list" ? "resource_template" : undefined

const FIELDS: Readonly<Record<DefinitionKind, ReadonlyArray<string>>> = {
  tool: ["name", "title", "description", "inputSchema", "outputSchema", "annotations"],
  prompt: ["name", "title", "description", "arguments"],
  resource_template: ["uriTemplate", "name", "title", "description", "mimeType", "annotations"]
}

const digestOf = (text: string) => createHash("sha256").update(text).digest("hex")

/** One list item as a Definition; undefined for an item without a name (the server's mistake, passed on untouched). */
export const definitionOf = (kind: DefinitionKind, item: unknown): Definition | undefined => {
  if (!isObject(item)) return undefined
  const name = kind === "resource_template" ? item.uriTemplate : item.name
  if (typeof name !== "string") return undefined
  const fields: Record<string, unknown> = {}
  for (const field of FIELDS[kind]) if (item[field] !== undefined) fields[field] = item[field]
  const text = canonicalJson(fields)
  return { kind, name, fields, text, digest: digestOf(text) }
}

/** A Definition again from its kept text (a pin read back from a store or a lock file). */
export const definitionFromText = (kind: DefinitionKind, name: string, text: string): Definition => {
  const fields = JSON.parse(text) as Record<string, unknown>
  return { kind, name, fields, text, digest: digestOf(text) }
}

/** The items of a list result as Definitions, by name (the last of a repeated name wins, as a client's map would). */
export const definitionsOfList = (kind: DefinitionKind, result: unknown): Map<string, Definition> => {
  const found = new Map<string, Definition>()
  const items = isObject(result) ? result[LIST_OF[kind].field] : undefined
  if (!Array.isArray(items)) return found
  for (const item of items) {
    const definition = definitionOf(kind, item)
    if (definition !== undefined) found.set(definition.name, definition)
  }
  return found
}

/** One digest for a whole offer (every kind, every item): equal offers, equal digests, whatever the order. */
export const offerDigest = (definitions: Iterable<Definition>): string =>
  digestOf(Array.from(definitions, (d) => `${definitionKey(d.kind, d.name)} ${d.digest}`).sort().join("\n"))

/** The fields as indented canonical JSON, one line per leaf or bracket: what a diff compares. */
const linesOf = (fields: Readonly<Record<string, unknown>>): Array<string> =>
  JSON.stringify(JSON.parse(canonicalJson(fields)), null, 2).split("\n")

/**
 * A readable line diff between a pinned definition and the offered one (`-` pinned, `+` offered,
 * two lines of context), for logs, `tools diff` and the registry view. Either side may be absent
 * (a new item, a removed one).
 */
export const describeChange = (pinned: Definition | undefined, offered: Definition | undefined): string => {
  const subject = pinned ?? offered
  if (subject === undefined) return ""
  const title = `${subject.kind.replace("_", " ")} ${JSON.stringify(subject.name)}`
  if (pinned === undefined) return `${title} is new:\n${linesOf(offered!.fields).map((l) => `+ ${l}`).join("\n")}`
  if (offered === undefined) return `${title} is no longer offered`
  const a = linesOf(pinned.fields)
  const b = linesOf(offered.fields)
  // Longest common subsequence of lines (definitions are small: a few hundred lines at most).
  const lcs = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0))
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!)
    }
  }
  const ops: Array<{ readonly op: " " | "-" | "+"; readonly line: string }> = []
  let i = 0
  let j = 0
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      ops.push({ op: " ", line: a[i]! })
      i++
      j++
    } else if (i < a.length && (j === b.length || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
      // (What was pinned first, then what is offered instead, as diff(1) reads.)
      ops.push({ op: "-", line: a[i++]! })
    } else {
      ops.push({ op: "+", line: b[j++]! })
    }
  }
  // Only the changed lines and two lines of context around each.
  const shown = ops.map((_, k) => ops.slice(Math.max(0, k - 2), k + 3).some((n) => n.op !== " "))
  const out: Array<string> = []
  ops.forEach((o, k) => {
    if (shown[k]) out.push(`${o.op} ${o.line}`)
    else if (shown[k - 1]) out.push("  …")
  })
  return `${title} changed:\n${out.join("\n")}`
}
