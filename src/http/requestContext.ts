import type * as http from "node:http"
import type { Identity } from "../domain/Identity.js"

/** What the front listener learnt of a request, for the handlers behind it (the HttpApi ones reach it through the node request). */
export interface RequestContext {
  readonly requestId: string
  readonly identity: Identity
  /** The client's address (for audit lines). */
  readonly address: string
  /** The body, already read within the limits (routes of the HttpApi app that take one). */
  readonly body?: Buffer | undefined
}

const contexts = new WeakMap<http.IncomingMessage, RequestContext>()

export const setRequestContext = (req: http.IncomingMessage, context: RequestContext) => void contexts.set(req, context)
export const requestContextOf = (req: http.IncomingMessage): RequestContext | undefined => contexts.get(req)
