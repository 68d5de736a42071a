/**
 * Splits a command line into argv the way a POSIX shell would tokenise it (quotes, backslash
 * escapes), without running a shell: no globbing, no variables, no operators.
 * Returns an error message for unbalanced quotes.
 */
export const splitCommand = (line: string): ReadonlyArray<string> | string => {
  const args: Array<string> = []
  let current = ""
  let inToken = false
  let quote: "'" | "\"" | undefined
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!
    if (quote === "'") {
      if (c === "'") quote = undefined
      else current += c
    } else if (quote === "\"") {
      if (c === "\"") quote = undefined
      else if (c === "\\" && i + 1 < line.length && "\"\\$`\n".includes(line[i + 1]!)) current += line[++i]
      else current += c
    } else if (c === "'" || c === "\"") {
      quote = c
      inToken = true
    } else if (c === "\\") {
      if (i + 1 < line.length) current += line[++i]
      inToken = true
    } else if (c === " " || c === "\t" || c === "\n") {
      if (inToken) args.push(current)
      current = ""
      inToken = false
    } else {
      current += c
      inToken = true
    }
  }
  if (quote !== undefined) return `unbalanced ${quote === "'" ? "single" : "double"} quote in command`
  if (inToken) args.push(current)
  return args
}
