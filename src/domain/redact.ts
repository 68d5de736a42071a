/**
 * What the gateway shows of an instance's address or command line, anywhere (responses, logs,
 * error messages): URLs without their user:password and with query values masked, command
 * lines with the values of secret-looking arguments masked. Secrets belong in `env` or
 * `{"env": ...}` headers, but a token in a URL or an argv must not leak either.
 */

const MASK = "***"

/** Names of arguments and query parameters whose values are secrets (a word of the name: `--github-pat`, `--bearer`). */
const SECRET_NAME = /(token|secret|passw(or)?d|pwd|api[-_]?key|apikey|auth|credential|private[-_]?key|access[-_]?key|session|bearer|(^|[-_])(pat|pass|key)($|[-_]))/i

/** `https://user:pw@host/p?token=x&page=2` → `https://***@host/p?token=***&page=***` */
export const redactUrl = (raw: string): string => {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    return raw
  }
  const userinfo = url.username !== "" || url.password !== ""
  // Nothing to hide: the URL as it was written.
  if (!userinfo && url.search === "" && url.hash === "") return raw
  url.username = ""
  url.password = ""
  const query = Array.from(url.searchParams.keys())
  // (Not url.origin: for schemes the URL standard does not know, redis:// among them, it is "null".)
  let out = `${url.protocol}//${url.host}${url.pathname}`
  if (query.length > 0) out += "?" + query.map((k) => `${encodeURIComponent(k)}=${MASK}`).join("&")
  if (url.hash !== "") out += "#" + MASK
  return userinfo ? out.replace("://", `://${MASK}@`) : out
}

/** `["server", "--token=abc", "--api-key", "xyz", "-v"]` → `["server", "--token=***", "--api-key", "***", "-v"]` */
export const redactCommand = (argv: ReadonlyArray<string>): Array<string> => {
  const out: Array<string> = []
  let maskNext = false
  for (const arg of argv) {
    if (maskNext && !arg.startsWith("-")) {
      out.push(MASK)
      maskNext = false
      continue
    }
    maskNext = false
    // `--name=value`, and `--name:value` as some tools write it
    const eq = arg.startsWith("-") ? arg.search(/[=:]/) : arg.indexOf("=")
    if (arg.startsWith("-") && eq !== -1) {
      out.push(SECRET_NAME.test(arg.slice(0, eq)) ? `${arg.slice(0, eq + 1)}${MASK}` : arg)
    } else if (arg.startsWith("-") && SECRET_NAME.test(arg)) {
      out.push(arg)
      maskNext = true
    } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(arg)) {
      out.push(redactUrl(arg))
    } else if (eq !== -1 && SECRET_NAME.test(arg.slice(0, eq))) {
      // KEY=value arguments (env-style, as `env KEY=value cmd` passes them)
      out.push(`${arg.slice(0, eq + 1)}${MASK}`)
    } else {
      out.push(arg)
    }
  }
  return out
}

/** Every URL inside a message (transport errors name the URL they failed on), redacted. */
export const redactUrlsIn = (message: string): string => message.replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>]+/gi, (url) => redactUrl(url))
