import { randomBytes } from "node:crypto"
import type { JsonRpcRequest, JsonRpcResponse } from "../../domain/JsonRpc.js"

/** A request an old backend made of "its client" while serving a modern client's call. */
export interface ServerAsk {
  readonly request: JsonRpcRequest
  readonly reply: (response: JsonRpcResponse) => void
}

/** What a call in progress says next: it asks the client something, or it is over. */
export type CallEvent<A> = { readonly _tag: "Ask"; readonly ask: ServerAsk } | { readonly _tag: "Done"; readonly outcome: A }

/**
 * One backend call of a modern client, seen as a sequence of events: the server's questions
 * (sampling, elicitation, roots) and, last, its outcome. An old server asks in the middle of a
 * call and waits; a modern client answers by retrying the call (the 2026-07-28 revision's
 * `input_required` round trip). So the call is kept running between the client's requests,
 * and each of them takes the next event.
 */
export class CallEvents<A> {
  private readonly queue: Array<CallEvent<A>> = []
  private waiter: ((event: CallEvent<A>) => void) | undefined

  push(event: CallEvent<A>) {
    const waiter = this.waiter
    if (waiter !== undefined) {
      this.waiter = undefined
      waiter(event)
    } else {
      this.queue.push(event)
    }
  }

  /** Calls `f` with the next event, now or when it comes (one waiter at a time). */
  next(f: (event: CallEvent<A>) => void) {
    const event = this.queue.shift()
    if (event !== undefined) f(event)
    else this.waiter = f
  }
}

export interface ParkedCall<A, R> {
  readonly owner: string
  readonly template: string
  readonly method: string
  readonly events: CallEvents<A>
  /** The questions the client was asked and has not answered, by the key it was given. */
  readonly asked: Map<string, ServerAsk>
  /** Ends the call at the backend (the client did not come back). */
  readonly cancel: () => void
  /** Where the call's notifications go from now on: the response of the client's latest retry. */
  readonly retarget: (responder: R) => void
}

/**
 * What starts every requestState the gateway hands out: a retry whose state does not start so
 * carries a modern server's own state, which goes back to that server untouched.
 */
const PARKED_STATE_PREFIX = "mcpgw."

export const isParkedState = (state: unknown): boolean => typeof state === "string" && state.startsWith(PARKED_STATE_PREFIX)

/**
 * Calls waiting for a modern client's answers, by their `requestState`: 128 random bits the
 * client echoes (it cannot be guessed, and it is honoured only for the caller and template
 * that got it). A call nobody comes back for is cancelled after `expiresMs`.
 */
export const makeParkedCalls = <A, R>(expiresMs: number) => {
  const parked = new Map<string, { readonly call: ParkedCall<A, R>; readonly timer: ReturnType<typeof setTimeout> }>()
  return {
    park: (call: ParkedCall<A, R>): string => {
      const state = PARKED_STATE_PREFIX + randomBytes(16).toString("base64url")
      // raw timer: one per parked call, unref'd (a waiting call must not hold the process up);
      // the expiry is the client's patience, not state other logic reads.
      const timer = setTimeout(() => {
        parked.delete(state)
        call.cancel()
      }, expiresMs)
      timer.unref()
      parked.set(state, { call, timer })
      return state
    },
    /** The call a retry names, taken out of the waiting room; undefined if unknown, expired or someone else's. */
    take: (state: unknown, owner: string, template: string, method: string): ParkedCall<A, R> | undefined => {
      if (typeof state !== "string") return undefined
      const entry = parked.get(state)
      if (entry === undefined || entry.call.owner !== owner || entry.call.template !== template || entry.call.method !== method) return undefined
      parked.delete(state)
      clearTimeout(entry.timer)
      return entry.call
    }
  }
}
