import { Exit } from "effect"
import type { EndpointSession } from "../../sessions/EndpointSession.js"
import type { Adoption, SessionRefusal } from "../../sessions/EndpointSessions.js"
import type { RunEffect } from "../raw.js"

/**
 * Goes on with the session a request names: at once when this replica holds it (the hot path:
 * no fiber), once taken over when another replica sealed it, or with the refusal.
 */
export const withSession = (
  resolved: EndpointSession | SessionRefusal | Adoption,
  run: RunEffect,
  next: (session: EndpointSession | SessionRefusal) => void
) => {
  if (!("adopt" in resolved)) return next(resolved)
  run(resolved.adopt).addObserver((exit) =>
    next(Exit.isSuccess(exit) ? exit.value : { status: 404, message: "Session not found: it could not be taken over from another replica" }))
}
