import { Duration, Effect, FiberSet } from "effect"
import type * as http from "node:http"
import { GatewayConfig } from "../../config/GatewayConfig.js"
import type { Identity } from "../../domain/Identity.js"
import { ErrorCode } from "../../domain/JsonRpc.js"
import { AggregateSessions } from "../../aggregation/AggregateSessions.js"
import { ClientSessions } from "../../sessions/ClientSessions.js"
import type { EndpointSessionsShape } from "../../sessions/EndpointSessions.js"
import { type RunEffect, sendJson } from "../raw.js"
import { type makeRequestTelemetry, requestTelemetry } from "../requestTelemetry.js"
import { makePostHandler } from "./post.js"
import { withSession } from "./resolved.js"
import { rpcError } from "./rpc.js"
import { makeStandingStreams } from "./standingStream.js"

/**
 * The MCP Streamable HTTP endpoints: `/mcp/{template}` (an MCP client connects to the gateway as
 * if it were the server) and the aggregates `/mcp` and `/mcp/v/{name}` (several templates as one
 * server). The front gate (auth/Guard.ts) has checked Host, Origin, credential, scope and rate
 * limits; this file routes by HTTP method: POST (post.ts), GET (standingStream.ts), DELETE (ends
 * the session). Sessions and everything they do belong to sessions/ (ClientSessions) and
 * aggregation/ (AggregateSessions); this folder only speaks HTTP and SSE, the same way for both.
 */
export const makeMcpEndpoint = Effect.gen(function*() {
  const config = yield* GatewayConfig
  const run = yield* FiberSet.makeRuntime<never, unknown, unknown>()
  const telemetry = yield* requestTelemetry(config.tracing !== undefined)
  const templates = endpointFor((yield* ClientSessions).endpoint, config, run, telemetry)
  const aggregates = endpointFor((yield* AggregateSessions).endpoint, config, run, telemetry)

  return {
    /** `/mcp/{template}` */
    handle: templates.handle,
    /** `/mcp` (key `*`) and `/mcp/v/{name}` (key `v/{name}`) */
    handleAggregate: aggregates.handle,
    /** Shutdown: standing streams end at once (they never finish on their own). */
    endStandingStreams: () => {
      templates.endStandingStreams()
      aggregates.endStandingStreams()
    }
  }
})

const endpointFor = (sessions: EndpointSessionsShape, config: typeof GatewayConfig.Service, run: RunEffect, telemetry: ReturnType<typeof makeRequestTelemetry>) => {
  const post = makePostHandler({
    sessions,
    templateExists: sessions.exists,
    forwardHeaders: sessions.forwardHeaders,
    limits: { maxBytes: config.gateway.maxBodyBytes, maxDepth: config.gateway.maxJsonDepth },
    run,
    logDefect: (cause) => void run(Effect.logError("MCP endpoint request failed", cause)),
    telemetry,
    // As long as a request may take: the client's answer (a person filling a form) may take that long.
    inputWaitMs: Duration.toMillis(config.gateway.defaults.max_timeout)
  })
  const standing = makeStandingStreams(sessions, run)

  const handle = (req: http.IncomingMessage, res: http.ServerResponse, requestId: string, endpoint: string, identity: Identity) => {
    switch (req.method) {
      case "POST":
        return post(req, res, requestId, endpoint, identity)
      case "GET":
        return standing.handle(req, res, endpoint, identity)
      case "DELETE": {
        req.resume()
        const sessionId = req.headers["mcp-session-id"]
        return withSession(sessions.resolve(typeof sessionId === "string" ? sessionId : undefined, endpoint, identity), run, (session) => {
          if (!("id" in session)) return sendJson(res, session.status, rpcError(null, ErrorCode.InvalidRequest, session.message))
          run(sessions.close(session.id)).addObserver(() => res.writeHead(200).end())
        })
      }
      default:
        req.resume()
        sendJson(res, 405, rpcError(null, ErrorCode.InvalidRequest, `Method Not Allowed: the MCP endpoint takes GET, POST and DELETE, not ${req.method}`), {
          allow: "GET, POST, DELETE"
        })
    }
  }

  return { handle, endStandingStreams: standing.endAll }
}
