import { Effect } from "effect"
import type { DispatcherShape } from "../../src/dispatch/Dispatcher.js"

/** The two ways a request is dispatched: the Dispatcher's effect, and the request path. */
export type Via = "call" | "callNow"

/**
 * `Dispatcher.call`, or the same request through `callNow` (the request path: plain code where it
 * can be), wrapped as an effect whose interruption cancels it. Tests run through both hold them
 * to one behaviour in everything a client, the stats or an instance's state can tell.
 */
export const dispatchVia = (via: Via) => (d: DispatcherShape): DispatcherShape["call"] =>
  via === "call" ? d.call : (template, method, params, options) =>
    Effect.async((resume) => Effect.sync(d.callNow(template, method, params, options, "test-request", resume)))
