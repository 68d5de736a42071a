/**
 * One string for many equal ones. What every idle session keeps (its owner, its template's name,
 * its client's declaration) arrives as a new string with each session (parsed from a path, a
 * header, a body); kept once, thousands of sessions hold one copy. Bounded: past MAX_INTERNED
 * distinct strings the table starts over (strings already handed out stay valid).
 */
const interned = new Map<string, string>()
const MAX_INTERNED = 4096

export const intern = (s: string): string => {
  const known = interned.get(s)
  if (known !== undefined) return known
  if (interned.size >= MAX_INTERNED) interned.clear()
  interned.set(s, s)
  return s
}
