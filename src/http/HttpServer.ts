import { HttpApiBuilder, HttpApiSwagger, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Cause, Context, Data, Duration, Effect, Exit, FiberId, FiberSet, Layer, Option } from "effect"
import { randomUUID } from "node:crypto"
import * as http from "node:http"
import { GatewayConfig } from "../config/GatewayConfig.js"
import type { DispatchError } from "../domain/GatewayError.js"
import { Dispatcher, type DispatchResult } from "../proxy/Dispatcher.js"
import type { ClientSessions } from "../proxy/ClientSessions.js"
import type { Stats } from "../proxy/Stats.js"
import type { Registry } from "../registry/Registry.js"
import type { HealthProbes } from "../health/HealthProbes.js"
import type { Strategies } from "../strategy/Strategies.js"
import { ApiHandlers } from "./ApiHandlers.js"
import { defectAnswer, dispatchErrorAnswer, errorAnswer } from "./ApiError.js"
import { redocAsset, redocPage } from "./docs.js"
import { makeMcpEndpoint } from "./mcp/McpEndpoint.js"
import { readJsonBody, sendError, sendJson } from "./raw.js"
import { restOperations, runRestOperation } from "./RestOperations.js"

export class ListenError extends Data.TaggedError("ListenError")<{ readonly message: string }> {}

/** A client's X-Request-ID is echoed when it is a sane token; otherwise the gateway makes one. */
const REQUEST_ID = /^[\x21-\x7e]{1,128}$/

/** Where the gateway listens, once it does (the port is the bound one, also with `--port 0`). */
export class ListeningAddress extends Context.Tag("mcp-gateway/ListeningAddress")<ListeningAddress, { readonly url: string }>() {}

/**
 * The gateway's one HTTP server. Its listener sends the REST MCP operations
 * (`/mcp/{template}/{operation}`, the hot path) to a lean handler that runs the Dispatcher with
 * a runtime built once, and `/mcp/{template}` to the MCP endpoint; everything else
 * (`/gateway/*`, `/mcp/{t}/health`, `/docs`, `/openapi.json`) goes to the HttpApi app, and
 * `/redoc` is a static page. Shutdown stops accepting, ends the standing SSE streams, lets the
 * requests in flight finish for up to the default `drain_timeout`, then cuts what is left.
 */
export const HttpServerLive: Layer.Layer<
  ListeningAddress,
  ListenError,
  GatewayConfig | Dispatcher | Registry | Stats | Strategies | HealthProbes | ClientSessions
> = Layer.scoped(
  ListeningAddress,
  Effect.gen(function*() {
    const config = yield* GatewayConfig
    const dispatcher = yield* Dispatcher
    const run = yield* FiberSet.makeRuntime<never, DispatchResult, DispatchError>()
    const mcpEndpoint = yield* makeMcpEndpoint
    const maxBodyBytes = config.gateway.maxBodyBytes

    const apiApp = yield* HttpApiBuilder.httpApp.pipe(
      Effect.provide(
        Layer.mergeAll(
          HttpApiSwagger.layer({ path: "/docs" }),
          HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })
        ).pipe(
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

    const handleOperation = (
      req: http.IncomingMessage,
      res: http.ServerResponse,
      requestId: string,
      template: string,
      operationName: string
    ) => {
      const operation = Object.hasOwn(restOperations, operationName) ? restOperations[operationName] : undefined
      if (operation === undefined) {
        return sendError(
          res,
          errorAnswer(404, "unknown_operation", `unknown MCP operation "${operationName}"; operations: ${Object.keys(restOperations).join(", ")}, health`, requestId)
        )
      }
      if (req.method !== operation.httpMethod) {
        req.resume()
        return sendError(
          res,
          errorAnswer(405, "method_not_allowed", `${operationName} takes ${operation.httpMethod}, not ${req.method}`, requestId),
          { allow: operation.httpMethod }
        )
      }
      const dispatch = (params: Record<string, unknown> | undefined) => {
        const fiber = run(runRestOperation(dispatcher, template, operation, params))
        // A client that hangs up cancels its request, down to the backend.
        const onClose = () => {
          if (!res.writableFinished) fiber.unsafeInterruptAsFork(FiberId.none)
        }
        res.once("close", onClose)
        fiber.addObserver((exit) => {
          res.off("close", onClose)
          if (Exit.isSuccess(exit)) {
            return sendJson(res, 200, exit.value.result, { "x-instance-id": exit.value.instanceId })
          }
          const failure = Cause.failureOption(exit.cause)
          if (Option.isSome(failure)) {
            const error = failure.value
            return sendError(
              res,
              dispatchErrorAnswer(error, requestId),
              error._tag === "BackendError" ? { "x-instance-id": error.instanceId } : undefined
            )
          }
          if (!Cause.isInterruptedOnly(exit.cause)) {
            run(Effect.logError("request failed", exit.cause) as any)
          }
          sendError(res, defectAnswer(exit.cause, requestId))
        })
      }
      if (operation.decodeBody === undefined) return dispatch(undefined)
      readJsonBody(req, requestId, maxBodyBytes, (body) => {
        if (!body.ok) return sendError(res, body.error)
        const params = operation.decodeBody!(body.value)
        if (params._tag === "Left") {
          return sendError(res, errorAnswer(400, "invalid_request", params.left.join("; "), requestId, { problems: params.left }))
        }
        dispatch(params.right)
      })
    }

    let inflight = 0
    const listener = (req: http.IncomingMessage, res: http.ServerResponse) => {
      inflight++
      res.once("close", () => inflight--)
      const given = req.headers["x-request-id"]
      const requestId = typeof given === "string" && REQUEST_ID.test(given) ? given : randomUUID()
      req.headers["x-request-id"] = requestId
      res.setHeader("x-request-id", requestId)
      const url = req.url ?? "/"
      const queryAt = url.indexOf("?")
      const path = queryAt === -1 ? url : url.slice(0, queryAt)

      if (path.startsWith("/mcp/")) {
        const slash = path.indexOf("/", 5)
        if (slash === -1 || slash === path.length - 1) {
          // /mcp/{template}: the MCP endpoint itself.
          let template: string
          try {
            template = decodeURIComponent(path.slice(5, slash === -1 ? undefined : slash))
          } catch {
            return sendError(res, errorAnswer(400, "invalid_request", "the template name in the path is not valid URL encoding", requestId))
          }
          return mcpEndpoint.handle(req, res, requestId, template)
        }
        if (slash !== -1) {
          const operationName = path.slice(slash + 1)
          if (operationName !== "health") {
            let template: string
            try {
              template = decodeURIComponent(path.slice(5, slash))
            } catch {
              return sendError(res, errorAnswer(400, "invalid_request", "the template name in the path is not valid URL encoding", requestId))
            }
            return handleOperation(req, res, requestId, template, operationName)
          }
        }
      } else if (path === "/redoc" || path === "/redoc/") {
        return redocPage(res)
      } else if (path === "/redoc/redoc.standalone.js") {
        return redocAsset(res)
      }
      const declared = Number(req.headers["content-length"])
      if (declared > maxBodyBytes) {
        req.resume()
        return sendError(res, errorAnswer(413, "payload_too_large", `the body is larger than ${maxBodyBytes} bytes`, requestId))
      }
      apiHandler(req, res)
    }

    const server = http.createServer({ keepAliveTimeout: 65_000 }, listener)
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
            const cut = setTimeout(() => server.closeAllConnections(), Duration.toMillis(drain))
            // A keep-alive connection whose request finishes during the drain turns idle; close it
            // then, rather than wait for the whole drain.
            const idle = setInterval(() => server.closeIdleConnections(), 100)
            server.close(() => {
              clearTimeout(cut)
              clearInterval(idle)
              resume(Effect.void)
            })
            server.closeIdleConnections()
          })
          yield* Effect.logInfo("HTTP server closed")
        })
    )
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : config.gateway.port
    return { url: `http://${formatHost(config.gateway.host)}:${port}` }
  })
)

const formatHost = (host: string) => (host.includes(":") ? `[${host}]` : host)
