import type * as http from "node:http"
import type { Identity } from "../../domain/Identity.js"
import { ErrorCode } from "../../domain/JsonRpc.js"
import type { EndpointSession } from "../../sessions/EndpointSession.js"
import type { EndpointSessionsShape } from "../../sessions/EndpointSessions.js"
import { type RunEffect, sendJson } from "../raw.js"
import { withSession } from "./resolved.js"
import { accepts, rpcError } from "./rpc.js"
import { carry, openStream, writeEvent } from "./sse.js"

/** How often an idle standing stream gets a comment, so that proxies in between keep it open. */
const KEEP_ALIVE_MS = 25_000

/**
 * GET /mcp/{template}: the session's standing SSE stream, for what the server sends outside
 * requests, or the resumption of a stream the client lost (Last-Event-ID `{stream}-{seq}`: a
 * request's stream gets its missed events and the rest of it, up to its response). One standing
 * stream per session: a new one replaces the old. `endAll` ends every standing stream at once
 * (shutdown: they would otherwise hold the server open for the whole drain).
 */
export const makeStandingStreams = (sessions: EndpointSessionsShape, run: RunEffect) => {
  const open = new Map<EndpointSession, () => void>()

  const handle = (req: http.IncomingMessage, res: http.ServerResponse, template: string, caller: Identity) => {
    if (!accepts(req.headers.accept, "text/event-stream")) {
      return sendJson(res, 406, rpcError(null, ErrorCode.InvalidRequest, "Not Acceptable: Accept must list text/event-stream"))
    }
    const sessionId = req.headers["mcp-session-id"]
    withSession(sessions.resolve(typeof sessionId === "string" ? sessionId : undefined, template, caller), run, (session) => {
      if (!("id" in session)) return sendJson(res, session.status, rpcError(null, ErrorCode.InvalidRequest, session.message))
      carryStanding(req, res, session)
    })
  }

  const carryStanding = (req: http.IncomingMessage, res: http.ServerResponse, session: EndpointSession) => {
    const resume = /^(\d+)-(\d+)$/.exec(String(req.headers["last-event-id"] ?? ""))
    const resumed = resume === null || resume[1] === "0" ? undefined : session.stream(resume[1]!)
    if (resumed !== undefined) {
      return carry(openStream(res), resume![1]!, resumed, Number(resume![2]))
    }
    open.get(session)?.()
    // A session taken over from another replica hears its server from now on (that replica's stream, if any, has gone).
    session.standingStreamOpened()
    // (A client that lags has its events bounded and timed by the server's ResponseFlow; a stalled one is cut off.)
    const writer = openStream(res, "open")
    const detach = session.outbox.attach(
      (seq, message) => writeEvent(writer, `0-${seq}`, message),
      resume !== null && resume[1] === "0" ? Number(resume[2]) : undefined
    )
    // raw timer: a heartbeat on the client's socket (it keeps proxies from cutting an idle
    // stream), real time whatever clock the gateway's logic runs on; one per open stream.
    const keepAlive = setInterval(() => writer.event(": keep-alive\n\n", "keep-alive"), KEEP_ALIVE_MS)
    const end = () => writer.end()
    session.onClose.add(end)
    open.set(session, end)
    res.on("close", () => {
      detach()
      clearInterval(keepAlive)
      session.onClose.delete(end)
      if (open.get(session) === end) open.delete(session)
      // (Its client left, or reconnects: which, its next request or stream will tell.)
      session.streamDroppedAt = session.lastSeen
    })
  }

  const endAll = () => {
    for (const end of Array.from(open.values())) end()
  }

  return { handle, endAll, size: () => open.size }
}
