import { ParseResult } from "effect"

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/

/** `["templates","a b","instances",1,"endpoint"]` → `templates["a b"].instances[1].endpoint` */
export const formatPath = (root: string, path: ReadonlyArray<PropertyKey>): string => {
  let out = root
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`
    else {
      const name = String(key)
      out += IDENTIFIER.test(name) ? (out === "" ? name : `.${name}`) : `[${JSON.stringify(name)}]`
    }
  }
  return out === "" ? "(root)" : out
}

/** Edit distance, for "did you mean" on a misspelt field. */
const distance = (a: string, b: string): number => {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1))
      previous = current
    }
  }
  return row[b.length]!
}

/**
 * A received value as a problem line shows it: short primitives as they are; objects and
 * arrays by kind only (a whole subtree on stderr is unreadable, and may hold a secret).
 */
const shortValue = (actual: string): string => {
  const text = actual.trim()
  if (text.startsWith("{")) return "an object"
  if (text.startsWith("[")) return "an array"
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

/**
 * What was expected, as a line can say it: a struct or record schema by kind (its whole type,
 * kilobytes of it, says nothing a user can act on), anything else as the schema describes it.
 */
const shortExpected = (expected: string): string => {
  const text = expected.trim()
  if (text.startsWith("{ readonly [")) return "an object of named entries"
  if (text.startsWith("{")) return "an object"
  if (text.startsWith("ReadonlyArray<")) return "an array"
  return text.length > 120 ? `${text.slice(0, 117)}...` : text
}

const EXPECTED_ACTUAL = /^Expected ([\s\S]+), actual ([\s\S]+)$/
const UNEXPECTED = /^is unexpected, expected: ([\s\S]+)$/

/** A problem's message in the form of the others: `expected X, got Y`; a misspelt field gets a suggestion. */
const rephrase = (message: string, path: ReadonlyArray<PropertyKey>): string => {
  const unexpected = UNEXPECTED.exec(message)
  if (unexpected !== null) {
    const name = String(path.at(-1) ?? "")
    const known = Array.from(unexpected[1]!.matchAll(/"([^"]+)"/g), (m) => m[1]!)
    const closest = known.map((k) => ({ k, d: distance(name.toLowerCase(), k.toLowerCase()) })).sort((a, b) => a.d - b.d)[0]
    return closest !== undefined && closest.d <= Math.max(2, Math.floor(name.length / 3))
      ? `is not a known field; did you mean "${closest.k}"?`
      : `is not a known field (known: ${known.join(", ")})`
  }
  const typed = EXPECTED_ACTUAL.exec(message)
  if (typed !== null) return `expected ${shortExpected(typed[1]!)}, got ${shortValue(typed[2]!)}`
  return message
}

const within = (inner: ReadonlyArray<PropertyKey>, outer: ReadonlyArray<PropertyKey>) =>
  inner.length >= outer.length && outer.every((key, i) => inner[i] === key)

/**
 * One line per problem, each naming where it is: the form users read in start-up errors
 * (`templates.everything.instances[1].endpoint: expected an http(s) URL, got "localhost"`)
 * and in 400 answers of the API.
 *
 * Effect reports an optional field that fails twice: the problem inside it, and "Expected
 * undefined" for the field and each object around it (the other side of `optional`). Those
 * echoes are dropped where a real problem lies within, so two problems give two lines.
 */
export const formatParseError = (error: ParseResult.ParseError, root = ""): ReadonlyArray<string> => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const echo = (message: string) => message.startsWith("Expected undefined, actual")
  const real = issues.filter((issue) => !echo(issue.message))
  const kept = issues.filter((issue) => !echo(issue.message) || !real.some((other) => within(other.path, issue.path)))
  const lines = kept.map((issue) => `${formatPath(root, issue.path)}: ${rephrase(issue.message, issue.path)}`)
  return Array.from(new Set(lines))
}
