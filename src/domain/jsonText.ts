/**
 * Whether JSON text nests deeper than `max` (a linear scan of brackets outside strings, before
 * parsing: a 5,000-level document must be refused, not parsed and then re-serialised into a
 * stack overflow).
 */
export const nestsDeeperThan = (text: string, max: number): boolean => {
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 92 /* \ */) i++
      else if (c === 34 /* " */) inString = false
    } else if (c === 34) inString = true
    else if (c === 123 || c === 91 /* { [ */) {
      if (++depth > max) return true
    } else if (c === 125 || c === 93 /* } ] */) depth--
  }
  return false
}

/**
 * How deeply a server's message may nest. Far past any real MCP result, far short of what
 * passing it on (serialising it again for the client) would overflow the stack with.
 */
export const MAX_MESSAGE_DEPTH = 1000

/** A server's message: parsed, or why it cannot be passed on. */
export type ParsedMessage =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly reason: "not JSON" | "too deep" }

const NOT_JSON: ParsedMessage = { ok: false, reason: "not JSON" }
const TOO_DEEP: ParsedMessage = { ok: false, reason: "too deep" }

/** Parses a message a server sent (an answer, an SSE event, a stdout line) within MAX_MESSAGE_DEPTH. */
export const parseServerMessage = (text: string): ParsedMessage => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return NOT_JSON
  }
  // (Checked after parsing, which is where almost every message ends: only a nested one pays for the scan.)
  if (typeof value === "object" && value !== null && text.length > 2 * MAX_MESSAGE_DEPTH && nestsDeeperThan(text, MAX_MESSAGE_DEPTH)) return TOO_DEEP
  return { ok: true, value }
}

/**
 * A value's JSON text, or why it has none (a cycle, a BigInt, nesting past the stack): nothing a
 * client or a server sent can be one, their depth being bounded before parsing, but an answer
 * that cannot be written fails alone, never the gateway.
 */
export const jsonTextOf = (value: unknown): string | { readonly error: string } => {
  try {
    return JSON.stringify(value)
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e) }
  }
}

/** Why a server's message that cannot be passed on was not, for errors and logs. */
export const tooDeepMessage = `the server's message nests deeper than ${MAX_MESSAGE_DEPTH} levels`
