import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import type { ToolPins } from "../integrity/ToolPins.js"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Cause, Context, Data, Duration, Effect, FiberSet, Layer, Option, Runtime } from "effect"
import { randomUUID } from "node:crypto"
import * as http from "node:http"
import type * as net from "node:net"
import { ConfigReload } from "../discovery/ConfigReload.js"
import { Exposure } from "../exposure/Exposure.js"
import { AggregateSessions } from "../aggregation/AggregateSessions.js"
import { FleetRedis } from "../fleet/FleetRedis.js"
import { Discovery } from "../discovery/Discovery.js"
import { DEFAULT_CLIENT_LIMITS, GatewayConfig } from "../config/GatewayConfig.js"
import { MAX_NAME_LENGTH } from "../domain/Instance.js"
import { Dispatcher } from "../dispatch/Dispatcher.js"
import { ClientSessions } from "../sessions/ClientSessions.js"
import type { RateLimiter } from "../limits/RateLimiter.js"
import type { Stats } from "../observability/Stats.js"
import { Registry } from "../registry/Registry.js"
import type { HealthProbes } from "../health/HealthProbes.js"
import type { Strategies } from "../strategy/Strategies.js"
import { ApiHandlers } from "./ApiHandlers.js"
import { errorAnswer } from "./ApiError.js"
import { Authenticator } from "./auth/Authenticator.js"
import { makeGuard } from "./auth/Guard.js"
import { resourceMetadata } from "./auth/ProtectedResource.js"
import { CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE } from "../observability/PrometheusText.js"
import { GatewayMetrics } from "../observability/GatewayMetrics.js"
import { scrapeMetrics } from "./scrape.js"
import { redocAsset, redocPage } from "./docs.js"
import { requestTelemetry } from "./requestTelemetry.js"
import { statusPage } from "./statusPage.js"
import { makeMcpEndpoint } from "./mcp/McpEndpoint.js"
import { readBody, type RunEffect, sendError, sendJson } from "./raw.js"
import { setRequestContext } from "./requestContext.js"
import { makeRestHandler } from "./RestHandler.js"
import { defaultConnectionCaps, descriptorLimit, makeConnectionGate } from "./connectionLimits.js"
import { ResponseFlow } from "./ResponseFlow.js"
import { repeat, Timer } from "../clock/Timer.js"
import { classifyRoute, methodsOf, requirementOf, type Route } from "./routes.js"

export class ListenError extends Data.TaggedError("ListenError")<{ readonly message: string }> {}

/** A client's X-Request-ID is echoed when it is a sane token; otherwise the gateway makes one. */
const REQUEST_ID = /^[\x21-\x7e]{1,128}$/

/** Where the gateway listens, once it does (the port is the bound one, also with `--port 0`). */
export class ListeningAddress extends Context.Tag("mcp-gateway/ListeningAddress")<ListeningAddress, { readonly url: string }>() {}

/**
 * The gateway's one HTTP server. Every request first passes the guard (auth/Guard.ts: Host,
 * Origin, content type, credential and scope, rate limits), then its listener sends the REST MCP
 * operations (`/mcp/{template}/{operation}`, a hot path) to a lean handler that runs the
 * Dispatcher with a runtime built once, and `/mcp/{template}` to the MCP endpoint; everything
 * else (`/gateway/*`, `/mcp/{t}/health`, `/docs`, `/openapi.json`) goes to the HttpApi app, with
 * its body (if any) read here within the limit, and `/redoc` and the OAuth resource metadata
 * are static answers. Shutdown stops accepting, ends the standing SSE streams, lets the
 * requests in flight finish for up to the default `drain_timeout`, then cuts what is left.
 */
export const HttpServerLive: Layer.Layer<
  ListeningAddress,
  ListenError,
  | GatewayConfig
  | Dispatcher
  | Registry
  | Stats
  | GatewayMetrics
  | Strategies
  | HealthProbes
  | ClientSessions
  | Authenticator
  | RateLimiter
  | Discovery
  | ConfigReload
  | Exposure
  | AggregateSessions
  | FleetRedis
  | Timer
  | ToolPins
> = Layer.scoped(
  ListeningAddress,
  Effect.gen(function*() {
    const config = yield* GatewayConfig
    const dispatcher = yield* Dispatcher
    const registry = yield* Registry
    const run: RunEffect = yield* FiberSet.makeRuntime<never, unknown, unknown>()
    const mcpEndpoint = yield* makeMcpEndpoint
    const sessions = yield* ClientSessions
    const metrics = yield* GatewayMetrics
    const fleet = yield* FleetRedis
    const timer = yield* Timer

    const apiApp = yield* HttpApiBuilder.httpApp.pipe(
      // Names in paths (/mcp/{t}/health, /gateway/deregister/{t}/{id}) as long as a name may be
      // (the router's default of 100 made names of 101-128 characters registrable but not removable).
      HttpRouter.withRouterConfig({ maxParamLength: MAX_NAME_LENGTH }),
      Effect.provide(
        HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" }).pipe(
          Layer.provideMerge(ApiHandlers),
          Layer.provideMerge(HttpApiBuilder.Router.Live),
          Layer.provideMerge(HttpApiBuilder.Middleware.layer)
        )
      )
    )
    const apiHandler = yield* NodeHttpServer.makeHandler(
      // No route: the same JSON error shape as every other answer, not an empty 404.
      Effect.catchAllCause(apiApp, (cause) => {
        const failure = Cause.failureOption(cause)
        if (Option.isNone(failure) || (failure.value as { _tag?: string })._tag !== "RouteNotFound") {
          return Effect.failCause(cause)
        }
        return Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
          HttpServerResponse.json(
            errorAnswer(404, "not_found", `no route for ${request.method} ${request.url}`, request.headers["x-request-id"] ?? "").body,
            { status: 404 }
          ).pipe(Effect.orDie))
      })
    ).pipe(Effect.provide(NodeHttpServer.layerContext))

    const telemetry = yield* requestTelemetry(config.tracing !== undefined)
    const restOperation = makeRestHandler({
      dispatcher,
      registry,
      settings: config.gateway,
      run,
      telemetry,
      exposure: yield* Exposure,
      processPerCaller: config.gateway.auth !== undefined
    })
    const guard = yield* makeGuard
    const authenticator = yield* Authenticator

    // Swagger UI is built on its first request, not at start (swaggerDocs.ts says why).
    const runtime = yield* Effect.runtime<never>()
    let swagger: Promise<(req: http.IncomingMessage, res: http.ServerResponse) => void> | undefined
    const serveSwagger = (req: http.IncomingMessage, res: http.ServerResponse, requestId: string) => {
      swagger ??= Runtime.runPromise(runtime)(
        Effect.flatMap(Effect.promise(() => import("./swaggerDocs.js")), (docs) => docs.makeSwaggerHandler)
      )
      swagger.then((handler) => handler(req, res), (e) => {
        swagger = undefined
        sendError(res, errorAnswer(500, "internal_error", `cannot build the documentation page: ${String(e)}`, requestId))
      })
    }

    /** Routes of the HttpApi app and the small static ones. */
    const serveOther = (req: http.IncomingMessage, res: http.ServerResponse, route: Route, requestId: string) => {
      const path = (req.url ?? "/").split("?")[0]!
      if (route.kind === "other") {
        // Never handed to the router: a path the guard did not classify is not served at all.
        return sendError(res, errorAnswer(404, "not_found", `no route for ${req.method} ${path}`, requestId))
      }
      const allow = methodsOf(route)
      if (allow !== undefined && req.method !== allow && !(req.method === "HEAD" && allow === "GET")) {
        return sendError(res, errorAnswer(405, "method_not_allowed", `${path} takes ${allow}, not ${req.method}`, requestId), { allow })
      }
      if (route.kind === "resource_metadata") {
        if (authenticator.settings === undefined) {
          return sendError(res, errorAnswer(404, "not_found", "this gateway does not require authentication (no auth configured)", requestId))
        }
        // (For any template name: the open document must not tell which templates exist.)
        return sendJson(res, 200, resourceMetadata(authenticator.settings, req.headers.host, route.endpoint))
      }
      if (route.kind === "ui") return statusPage(res)
      if (path === "/metrics") {
        const text = scrapeMetrics(metrics, registry, sessions, timer.now(), fleet.status())
        res.writeHead(200, { "content-type": PROMETHEUS_CONTENT_TYPE, "content-length": Buffer.byteLength(text) })
        return void res.end(text)
      }
      if (path === "/docs") return serveSwagger(req, res, requestId)
      if (path === "/redoc" || path === "/redoc/") return redocPage(res)
      if (path === "/redoc/redoc.standalone.js") return redocAsset(res)
      apiHandler(req, res)
    }

    // Slow and many clients (docs/security.md): caps on connections, and backpressure with bounds
    // and a write timeout on what is written to them.
    const clientLimits = config.gateway.clientLimits
    const derivedCaps = defaultConnectionCaps(descriptorLimit())
    const gate = makeConnectionGate({
      maxConnections: clientLimits?.maxConnections ?? derivedCaps.maxConnections,
      maxConnectionsPerAddress: clientLimits?.maxConnectionsPerAddress ?? Math.min(
        derivedCaps.maxConnectionsPerAddress,
        clientLimits?.maxConnections ?? derivedCaps.maxConnections
      ),
      firstRequestTimeoutMs: clientLimits?.firstRequestTimeoutMs ?? DEFAULT_CLIENT_LIMITS.firstRequestTimeoutMs
    }, timer, (what) => void run(Effect.logDebug(`client connection ${what.replaceAll("_", " ")}`)))
    const flow = new ResponseFlow({
      writeTimeoutMs: clientLimits?.writeTimeoutMs ?? DEFAULT_CLIENT_LIMITS.writeTimeoutMs,
      maxBufferedBytesPerResponse: clientLimits?.maxBufferedBytesPerResponse ?? DEFAULT_CLIENT_LIMITS.maxBufferedBytesPerResponse,
      maxBufferedBytes: clientLimits?.maxBufferedBytes ?? DEFAULT_CLIENT_LIMITS.maxBufferedBytes
    }, timer, (reason) => void run(Effect.logInfo(`closed a client's response: ${reason.replaceAll("_", " ")}`)))

    let inflight = 0
    /** Requests in progress per connection: at shutdown, a connection with none is closed at once. */
    const busy = new WeakMap<object, number>()
    const listener = (req: http.IncomingMessage, res: http.ServerResponse) => {
      inflight++
      const socket = req.socket
      const before = busy.get(socket) ?? 0
      busy.set(socket, before + 1)
      if (before === 0) gate.requestStarted(socket)
      res.once("close", () => {
        inflight--
        const left = (busy.get(socket) ?? 1) - 1
        busy.set(socket, left)
        if (left === 0) gate.requestsDone(socket)
      })
      const given = req.headers["x-request-id"]
      const requestId = typeof given === "string" && REQUEST_ID.test(given) ? given : randomUUID()
      req.headers["x-request-id"] = requestId
      res.setHeader("x-request-id", requestId)
      const url = req.url ?? "/"
      const queryAt = url.indexOf("?")
      const route = classifyRoute(req.method, queryAt === -1 ? url : url.slice(0, queryAt))
      const requirement = requirementOf(route)

      guard.check(req, res, requestId, requirement, run, (admitted) => {
        for (const name in admitted.headers) res.setHeader(name, admitted.headers[name]!)
        const serve = () => {
          switch (route.kind) {
            case "mcp_endpoint":
              return mcpEndpoint.handle(req, res, requestId, route.template, admitted.identity)
            case "aggregate":
              return mcpEndpoint.handleAggregate(req, res, requestId, route.key, admitted.identity)
            case "rest_operation":
              return restOperation(req, res, requestId, route.template, route.operation, admitted.identity.id)
            case "malformed":
              return sendError(res, errorAnswer(400, "invalid_request", route.message, requestId))
            default:
              return serveOther(req, res, route, requestId)
          }
        }
        // The MCP endpoint's and the REST operations' POSTs read their JSON bodies themselves.
        // Any other body is read here, within the limit (chunked or not): kept for the handler
        // that takes one (register), only counted for the routes that take none.
        if (req.method === "POST" && (route.kind === "mcp_endpoint" || route.kind === "aggregate" || route.kind === "rest_operation")) return serve()
        const context = { requestId, identity: admitted.identity, address: req.socket.remoteAddress ?? "unknown" }
        const hasBody = req.headers["transfer-encoding"] !== undefined || Number(req.headers["content-length"] ?? 0) > 0
        if (!hasBody) {
          setRequestContext(req, context)
          return serve()
        }
        readBody(req, requestId, config.gateway.maxBodyBytes, (body) => {
          if (!body.ok) return sendError(res, body.error)
          setRequestContext(req, { ...context, body: body.value })
          serve()
        })
      })
    }

    // Node refuses larger header blocks itself (431), and closes connections whose headers or
    // request do not arrive in time (a slow client must not hold sockets for minutes).
    const server = http.createServer({
      keepAliveTimeout: 65_000,
      maxHeaderSize: config.gateway.maxHeaderBytes,
      headersTimeout: 15_000,
      requestTimeout: 60_000,
      connectionsCheckingInterval: 5_000
    }, listener)
    // Every connection, to close at shutdown those that carry no request: Node's
    // closeIdleConnections skips connections that never sent one (clients open spare
    // connections ahead of need), which would hold shutdown for the whole drain.
    const sockets = new Set<net.Socket>()
    flow.attach(server)
    server.on("connection", (socket: net.Socket) => {
      if (!gate.admit(socket)) return
      sockets.add(socket)
      socket.once("close", () => sockets.delete(socket))
    })
    const closeUnused = () => {
      server.closeIdleConnections()
      for (const socket of sockets) if ((busy.get(socket) ?? 0) === 0) socket.destroy()
    }
    yield* Effect.acquireRelease(
      Effect.async<void, ListenError>((resume) => {
        const onError = (e: NodeJS.ErrnoException) =>
          resume(Effect.fail(new ListenError({
            message: `cannot listen on ${config.gateway.host}:${config.gateway.port}: ${e.code === "EADDRINUSE" ? "the address is already in use" : e.message}`
          })))
        server.once("error", onError)
        server.listen(config.gateway.port, config.gateway.host, () => {
          server.off("error", onError)
          resume(Effect.void)
        })
      }),
      () =>
        Effect.gen(function*() {
          const drain = config.gateway.defaults.drain_timeout
          // Standing streams never finish by themselves: they end now, not after the drain.
          mcpEndpoint.endStandingStreams()
          yield* Effect.logInfo(
            `shutting down: no new connections; ${inflight} requests in flight get up to ${Duration.format(drain)} to finish`
          )
          yield* Effect.async<void>((resume) => {
            const cut = timer.schedule(Duration.toMillis(drain), () => server.closeAllConnections())
            // A keep-alive connection whose request finishes during the drain turns idle; close it
            // then, rather than wait for the whole drain.
            const idle = repeat(timer, 100, closeUnused)
            server.close(() => {
              cut()
              idle()
              resume(Effect.void)
            })
            closeUnused()
          })
          gate.close()
          flow.close()
          yield* Effect.logInfo("HTTP server closed")
        })
    )
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : config.gateway.port
    return { url: `http://${formatHost(config.gateway.host)}:${port}` }
  })
)

const formatHost = (host: string) => (host.includes(":") ? `[${host}]` : host)
