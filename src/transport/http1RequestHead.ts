/**
 * Request framing: one request's head and body as the single write the client sends, with
 * header names and values checked before anything is sent (a forwarded header cannot inject
 * lines), `Host`, URL credentials as Basic auth, and `Content-Length`, as node:http wrote them.
 */

/** A header the client refuses to send (a name that is not a token, a value with a line break): nothing was sent. */
export class Http1HeaderError extends Error {}

export type Http1Headers = Readonly<Record<string, string | number | ReadonlyArray<string> | undefined>>

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** Characters no header value may hold (the set node:http refuses). */
const INVALID_VALUE = /[^\t\x20-\x7e\x80-\xff]/
const NON_ASCII = /[^\x00-\x7f]/

/**
 * Names checked once: the same few headers go out on every request. Process-wide on purpose: a
 * name valid once is valid everywhere (it holds no gateway's state), and it stops growing at 1,024.
 */
const checkedNames = new Set<string>()
const checkName = (name: string) => {
  if (checkedNames.has(name)) return
  if (!TOKEN.test(name)) throw new Http1HeaderError(`invalid header name ${JSON.stringify(name)}`)
  if (checkedNames.size < 1024) checkedNames.add(name)
}
const checkValue = (name: string, value: string) => {
  if (INVALID_VALUE.test(value)) throw new Http1HeaderError(`invalid character in the value of header ${JSON.stringify(name)}`)
}

/**
 * The bytes of one request: the head and body in one payload. `host` is the Host header's value
 * unless `headers` has one; `authorization` (credentials of the URL) unless `headers` has one.
 * Throws Http1HeaderError, before anything is sent, for a header no HTTP message may carry.
 */
export const requestPayload = (
  method: string,
  path: string,
  headers: Http1Headers,
  body: string | undefined,
  host: string,
  authorization: string | undefined
): string | Buffer => {
  let head = `${method} ${path} HTTP/1.1\r\n`
  let hasHost = false
  let hasAuthorization = false
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined) continue
    checkName(name)
    if (!hasHost && name.length === 4 && name.toLowerCase() === "host") hasHost = true
    if (!hasAuthorization && name.length === 13 && name.toLowerCase() === "authorization") hasAuthorization = true
    if (typeof value === "object") {
      for (const v of value) {
        checkValue(name, v)
        head += `${name}: ${v}\r\n`
      }
    } else {
      const text = typeof value === "string" ? value : String(value)
      checkValue(name, text)
      head += `${name}: ${text}\r\n`
    }
  }
  if (!hasHost) head += `host: ${host}\r\n`
  // Credentials in the endpoint's URL (user:password@host) go as Basic auth, as node:http sent them.
  if (!hasAuthorization && authorization !== undefined) head += `authorization: ${authorization}\r\n`
  if (body !== undefined) head += `content-length: ${Buffer.byteLength(body)}\r\n`
  head += "\r\n"
  // One write: headers are Latin-1 and the body UTF-8, the same bytes when the head is ASCII.
  return body === undefined
    ? Buffer.from(head, "latin1")
    : !NON_ASCII.test(head)
    ? head + body
    : Buffer.concat([Buffer.from(head, "latin1"), Buffer.from(body, "utf8")])
}
