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

/**
 * One line per problem, each naming where it is: the form users read in start-up errors
 * (`templates.everything.instances[1].endpoint: expected an http(s) URL, got "localhost"`)
 * and in 400 answers of the API.
 */
export const formatParseError = (error: ParseResult.ParseError, root = ""): ReadonlyArray<string> => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const lines = issues.map((issue) => `${formatPath(root, issue.path)}: ${issue.message}`)
  return Array.from(new Set(lines))
}
