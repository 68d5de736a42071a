import { Cause, Effect, Exit, FiberId, Option } from "effect"
import type * as http from "node:http"
import type { GatewaySettings } from "../config/GatewayConfig.js"
import type { DispatchError } from "../domain/GatewayError.js"
import type { DispatcherShape } from "../dispatch/Dispatcher.js"
import type { ExposureShape } from "../exposure/Exposure.js"
import type { RegistryShape } from "../registry/Registry.js"
import { defectAnswer, dispatchErrorAnswer, errorAnswer } from "./ApiError.js"
import { forwardedHeaders } from "./forwardedHeaders.js"
import { readJsonBody, type RunEffect, sendError, sendJson } from "./raw.js"
import type { makeRequestTelemetry } from "./requestTelemetry.js"
import { type RestResult, restOperations, runRestOperation, withIsError } from "./RestOperations.js"

/**
 * The lean handler of the REST MCP operations (`/mcp/{template}/{operation}`, a hot path): the
 * body is read within the limits and checked by the operation's schema, then the Dispatcher runs
 * in a runtime built once. A client that hangs up cancels its request, down to the backend.
 */
export const makeRestHandler = (deps: {
  readonly dispatcher: DispatcherShape
  readonly registry: RegistryShape
  readonly settings: GatewaySettings
  readonly run: RunEffect
  readonly telemetry: ReturnType<typeof makeRequestTelemetry>
  readonly exposure: ExposureShape
  /** Auth is on: each caller's requests go to its own process of each instance (CallOptions.caller). */
  readonly processPerCaller: boolean
}) => {
  const { dispatcher, exposure, registry, run, settings, telemetry } = deps
  const limits = { maxBytes: settings.maxBodyBytes, maxDepth: settings.maxJsonDepth }

  return (req: http.IncomingMessage, res: http.ServerResponse, requestId: string, template: string, operationName: string, caller: string) => {
    const operation = Object.hasOwn(restOperations, operationName) ? restOperations[operationName] : undefined
    if (operation === undefined && registry.template(template) === undefined) {
      // (`/mcp/tools/list` is no template's: say so, rather than name an operation "list".)
      req.resume()
      return sendError(res, errorAnswer(404, "template_not_found", `unknown template "${template}"`, requestId))
    }
    if (operation === undefined) {
      req.resume()
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
    // The request id goes on to HTTP backends, with the headers the template forwards.
    const headers = forwardedHeaders(req, registry.template(template)?.forwardHeaders ?? [], requestId)
    const respond = (exit: Exit.Exit<RestResult, DispatchError>) => {
      if (Exit.isSuccess(exit)) {
        const served = exit.value.instanceId
        const result = operation.mcpMethod === "tools/call" ? withIsError(exit.value.result) : exit.value.result
        return sendJson(res, 200, result, served === undefined ? { "x-cache": "hit" } : { "x-instance-id": served })
      }
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure)) {
        const error = failure.value
        return sendError(
          res,
          dispatchErrorAnswer(error, requestId),
          error._tag === "BackendError" && error.instanceId !== "" ? { "x-instance-id": error.instanceId } : undefined
        )
      }
      if (!Cause.isInterruptedOnly(exit.cause)) run(Effect.logError("request failed", exit.cause))
      sendError(res, defectAnswer(exit.cause, requestId))
    }
    const dispatch = (params: Record<string, unknown> | undefined) => {
      // One request that the template's exposure has nothing to do with, traced or not: the
      // request path without a fiber (Dispatcher.callNow). Lists (every page) and the rest: in a fiber.
      if (operation.listKey === undefined && !exposure.involved(template, operation.mcpMethod, params)) {
        let over = false
        const traced = telemetry.spanNow(req, requestId, () => ({ "url.path": `/mcp/${template}/${operationName}`, "mcp.template": template, "mcp.method": operation.mcpMethod }))
        const onClose = () => {
          if (over || res.writableFinished) return
          over = true
          cancel()
          traced?.end(Exit.interrupt(FiberId.none))
        }
        const cancel = dispatcher.callNow(template, operation.mcpMethod, params, { headers, caller: deps.processPerCaller ? caller : undefined, span: traced?.span }, requestId, (exit) => {
          over = true
          res.off("close", onClose)
          traced?.end(exit)
          respond(Exit.map(exit, (r) => ({ result: r.result, instanceId: r.instanceId })))
        })
        if (!over) res.once("close", onClose)
        return
      }
      const fork = telemetry(run, req, requestId, () => ({ "url.path": `/mcp/${template}/${operationName}`, "mcp.template": template, "mcp.method": operation.mcpMethod }))
      const fiber = fork(runRestOperation(dispatcher, template, operation, params, { maxPages: settings.maxListPages, headers, exposure, caller, processPerCaller: deps.processPerCaller }))
      // A client that hangs up cancels its request, down to the backend.
      const onClose = () => {
        if (!res.writableFinished) fiber.unsafeInterruptAsFork(FiberId.none)
      }
      res.once("close", onClose)
      fiber.addObserver((exit) => {
        res.off("close", onClose)
        respond(exit)
      })
    }
    if (operation.decodeBody === undefined) return dispatch(undefined)
    readJsonBody(req, requestId, limits, (body) => {
      if (!body.ok) return sendError(res, body.error)
      const params = operation.decodeBody!(body.value)
      if (params._tag === "Left") {
        return sendError(res, errorAnswer(400, "invalid_request", params.left.join("; "), requestId, { problems: params.left }))
      }
      dispatch(params.right)
    })
  }
}
