/**
 * What a caller of the HTTP/1.1 client (Http1Client.ts) sees of one request: the answer's head,
 * its body's text and its end, or an error; and the exchange, to abort it.
 */

/**
 * The head of an answer: its status and headers (names lower-cased; repeated ones joined with
 * ", "). A value may share the memory of the whole head: copy one kept for long (flatString).
 */
export interface Http1Head {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
}

/** What a request is told, in this order: the head once, the body's text (UTF-8) as it comes, then its end, or an error at any point. */
export interface Http1Handler {
  readonly onHead: (head: Http1Head) => void
  readonly onData: (text: string) => void
  readonly onEnd: () => void
  readonly onError: (error: Http1Error) => void
}

/**
 * A request that failed below HTTP. `code` is the system's (ECONNREFUSED, ENOTFOUND, ...), or
 * ECONNRESET when the connection ended before the answer did, or HPE_INVALID when the answer is
 * not HTTP. `answered`: part of an answer had arrived.
 */
export class Http1Error extends Error {
  constructor(readonly code: string, message: string, readonly answered: boolean) {
    super(message)
  }
}

/** A copy of `s` that shares no memory with the string it was cut from (a header value kept for hours). */
export const flatString = (s: string): string => Buffer.from(s, "latin1").toString("latin1")

/** One request on its way; `abort` closes its connection (how Streamable HTTP cancels a request). */
export interface Http1Exchange {
  readonly abort: () => void
}
