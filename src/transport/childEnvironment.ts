/**
 * What a stdio server's process sees of the gateway's environment: a short list of what
 * programs need to run at all, the variables its `inherit_env` names, and its own `env`. Never
 * the rest: the gateway's environment holds its session keys, JWT secret, Redis URL and the
 * backend tokens instances' headers read (`{"env": ...}`), and a server is not to see those.
 *
 * The list is the official MCP SDK's (its stdio client's getDefaultEnvironment, after sudo's
 * env_keep) with the locale (LANG, LC_*), TMPDIR and TZ added; on Windows, the SDK's with
 * what programs there commonly need to start (COMSPEC, PATHEXT, TMP, WINDIR, ...).
 */
export const DEFAULT_INHERITED_ENV: ReadonlyArray<string> = process.platform === "win32"
  ? [
    "APPDATA", "COMSPEC", "HOMEDRIVE", "HOMEPATH", "LOCALAPPDATA", "PATH", "PATHEXT", "PROCESSOR_ARCHITECTURE",
    "PROGRAMDATA", "PROGRAMFILES", "SYSTEMDRIVE", "SYSTEMROOT", "TEMP", "TMP", "USERNAME", "USERPROFILE", "WINDIR"
  ]
  : ["HOME", "LANG", "LC_*", "LOGNAME", "PATH", "SHELL", "TERM", "TMPDIR", "TZ", "USER"]

/** Windows spells names in any case (`Path`): compared upper-cased there. */
const caseOf = process.platform === "win32" ? (s: string) => s.toUpperCase() : (s: string) => s

/** Whether `name` is what `pattern` names: the name itself, or any name it starts with when it ends in `*`. */
const matches = (pattern: string, name: string) => {
  const p = caseOf(pattern)
  const n = caseOf(name)
  return p.endsWith("*") ? n.startsWith(p.slice(0, -1)) : p === n
}

/**
 * The child's environment: from `parent`, the default list and `inherit` (names, or prefixes
 * ending in `*`); then `own` (the instance's `env`), which wins. A value that starts with `()`
 * is a shell function (as the SDK does, left out of the default list: a security risk).
 */
export const childEnvironment = (
  own: Readonly<Record<string, string>> | undefined,
  inherit: ReadonlyArray<string>,
  parent: NodeJS.ProcessEnv = process.env
): Record<string, string> => {
  const env: Record<string, string> = {}
  const patterns = inherit.length === 0 ? DEFAULT_INHERITED_ENV : [...DEFAULT_INHERITED_ENV, ...inherit]
  for (const name in parent) {
    const value = parent[name]
    if (value === undefined) continue
    for (let i = 0; i < patterns.length; i++) {
      if (!matches(patterns[i]!, name)) continue
      if (i < DEFAULT_INHERITED_ENV.length && value.startsWith("()")) break
      env[name] = value
      break
    }
  }
  if (own !== undefined) for (const name in own) env[name] = own[name]!
  return env
}
