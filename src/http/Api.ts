import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as OpenApi from "@effect/platform/OpenApi"
import { Schema } from "effect"
import { InstanceSpec, TemplateName } from "../domain/Instance.js"
import { LoadBalancerInput } from "../domain/LoadBalancer.js"
import { GATEWAY_VERSION } from "../domain/Protocol.js"
import { ToolLockFile } from "../domain/ToolLock.js"
import {
  BadGateway,
  BadRequest,
  Conflict,
  Forbidden,
  GatewayTimeout,
  InternalError,
  NotFound,
  PayloadTooLarge,
  ServiceUnavailable
} from "./ApiError.js"
import { PromptGetBody, ResourceReadBody, ToolCallBody } from "./RestOperations.js"

/**
 * The REST face as HttpApi definitions: `/openapi.json`, `/docs` and `/redoc` come from here.
 * The MCP operations are served by the lean handler in HttpServer.ts (the hot path) with the
 * same body schemas; their entries here document them and serve as a fallback.
 */

const TemplatePath = Schema.Struct({ template: Schema.String })
const Json = Schema.Record({ key: Schema.String, value: Schema.Unknown })
const listOf = (key: string) =>
  Schema.Struct({ [key]: Schema.Array(Json), count: Schema.Number }).annotations({
    description: `Every page of ${key}, from one instance, following nextCursor`
  })

export const ToolsList = listOf("tools")
export const ResourcesList = listOf("resources")
export const ResourceTemplatesList = listOf("resourceTemplates")
export const PromptsList = listOf("prompts")
const McpResult = Json.annotations({ description: "The MCP result, as the instance answered it" })

export class McpGroup extends HttpApiGroup.make("mcp")
  .add(HttpApiEndpoint.get("toolsList", "/mcp/:template/tools/list").setPath(TemplatePath).addSuccess(ToolsList))
  .add(
    HttpApiEndpoint.post("toolsCall", "/mcp/:template/tools/call").setPath(TemplatePath).setPayload(ToolCallBody)
      .addSuccess(McpResult.annotations({ description: "The MCP CallToolResult (content, isError, structuredContent)" }))
  )
  .add(HttpApiEndpoint.get("resourcesList", "/mcp/:template/resources/list").setPath(TemplatePath).addSuccess(ResourcesList))
  .add(
    HttpApiEndpoint.get("resourceTemplatesList", "/mcp/:template/resources/templates/list").setPath(TemplatePath)
      .addSuccess(ResourceTemplatesList)
  )
  .add(
    HttpApiEndpoint.post("resourcesRead", "/mcp/:template/resources/read").setPath(TemplatePath).setPayload(ResourceReadBody)
      .addSuccess(McpResult.annotations({ description: "The MCP ReadResourceResult (contents)" }))
  )
  .add(HttpApiEndpoint.get("promptsList", "/mcp/:template/prompts/list").setPath(TemplatePath).addSuccess(PromptsList))
  .add(
    HttpApiEndpoint.post("promptsGet", "/mcp/:template/prompts/get").setPath(TemplatePath).setPayload(PromptGetBody)
      .addSuccess(McpResult.annotations({ description: "The MCP GetPromptResult" }))
  )
  .add(
    HttpApiEndpoint.get("templateHealth", "/mcp/:template/health").setPath(TemplatePath).addSuccess(
      Schema.Struct({
        template_name: Schema.String,
        strategy: Schema.String,
        total_instances: Schema.Number,
        healthy_instances: Schema.Number,
        health_percentage: Schema.Number,
        /** A new session found every process slot of the template busy lately (a 503). */
        saturated: Schema.Boolean,
        instances: Schema.Record({ key: Schema.String, value: Json })
      })
    )
  )
  .annotate(OpenApi.Title, "MCP operations")
  .annotate(OpenApi.Description, "MCP operations on a template, balanced across its healthy instances")
{}

export const RegisterBody = Schema.Struct({
  template_name: TemplateName,
  instance: InstanceSpec,
  load_balancer: Schema.optional(LoadBalancerInput)
})

export const RegisterResult = Schema.Struct({
  template_name: Schema.String,
  instance_id: Schema.String,
  instance: Json,
  /** Whether it was written to the registry file (false: the gateway has none, and forgets it at its next start). */
  persisted: Schema.Boolean
})

export class GatewayGroup extends HttpApiGroup.make("gateway")
  .add(
    HttpApiEndpoint.get("health", "/gateway/health").addSuccess(
      Schema.Struct({
        status: Schema.String,
        version: Schema.String,
        uptime_seconds: Schema.Number,
        templates: Schema.Number,
        instances: Schema.Number,
        healthy_instances: Schema.Number,
        /** Templates where a new session found every process slot busy lately (answered 503): the gateway is then `degraded`. */
        saturated_templates: Schema.Array(Schema.String)
      })
    )
  )
  .add(HttpApiEndpoint.get("stats", "/gateway/stats").addSuccess(Json))
  .add(HttpApiEndpoint.get("registry", "/gateway/registry").addSuccess(Json))
  .add(
    HttpApiEndpoint.post("register", "/gateway/register").setPayload(RegisterBody).addSuccess(RegisterResult, { status: 201 })
  )
  .add(
    HttpApiEndpoint.post("sync", "/gateway/sync").addSuccess(
      Json.annotations({
        description: "What a reload of the config file and a run of every discovery provider changed: " +
          "{config: {file, ok, problems?, diff, needs_restart} | null, providers: [{provider, plugin, ok, error?, diff?, at}]}"
      })
    )
  )
  .add(
    HttpApiEndpoint.del("deregister", "/gateway/deregister/:template/:instanceId")
      .setPath(Schema.Struct({ template: Schema.String, instanceId: Schema.String }))
      .addSuccess(Schema.Struct({ template_name: Schema.String, instance_id: Schema.String, deregistered: Schema.Boolean }))
  )
  .annotate(OpenApi.Title, "Gateway")
  .annotate(OpenApi.Description, "Gateway status, statistics and instance registration")
{}

const PinView = Schema.Struct({
  kind: Schema.Literal("tool", "prompt", "resource_template"),
  name: Schema.String,
  digest: Schema.String,
  pinned_at: Schema.String,
  /** How it was pinned: `first sight`, `approved by {who}`, `lock file`, `allow`. */
  source: Schema.String
})

/** A template's tool integrity as /gateway/registry shows it (http/integrityView.ts), with the template's name. */
export const TemplateToolsView = Schema.Struct({
  template_name: Schema.String,
  policy: Schema.Struct({ pin: Schema.String, on_change: Schema.String, drift: Schema.String }),
  /** How many definitions are pinned. */
  pins: Schema.Number,
  pinned: Schema.Array(PinView),
  changes: Schema.Array(Schema.Struct({
    kind: Schema.String,
    name: Schema.String,
    change: Schema.Literal("changed", "new", "removed"),
    /** What the policy made of it: left out and refused, served with an alert, re-pinned. */
    action: Schema.Literal("blocked", "warned", "allowed"),
    pinned_digest: Schema.NullOr(Schema.String),
    offered_digest: Schema.NullOr(Schema.String),
    /** A readable line diff: `-` pinned, `+` offered. */
    diff: Schema.String,
    first_seen_at: Schema.String,
    instances: Schema.Array(Schema.String)
  }))
})

/** `{}` (or no body) approves every pending change; `tools` only those names. */
export const ApproveBody = Schema.Struct({
  tools: Schema.optional(Schema.Array(Schema.String.pipe(Schema.minLength(1))).pipe(Schema.minItems(1)))
})

export class ToolsGroup extends HttpApiGroup.make("tools")
  .add(
    HttpApiEndpoint.get("templateTools", "/gateway/templates/:template/tools").setPath(TemplatePath).addSuccess(
      TemplateToolsView.annotations({ description: "The template's pinned definitions and the pending changes of what its instances offer, with diffs" })
    )
  )
  .add(
    HttpApiEndpoint.post("approveTools", "/gateway/templates/:template/tools/approve").setPath(TemplatePath).setPayload(ApproveBody).addSuccess(
      Schema.Struct({ template_name: Schema.String, approved: Schema.Array(PinView), tool_integrity: Json }).annotations({
        description: "The definitions re-pinned (none: nothing was pending), and the template's tool integrity after it"
      })
    )
  )
  .add(
    HttpApiEndpoint.get("toolsLock", "/gateway/tools/lock").addSuccess(
      ToolLockFile.annotations({ description: "Every template's pinned definitions, as the tools lock file (`mcp-gateway tools lock` writes it)" })
    )
  )
  .annotate(OpenApi.Title, "Tool integrity")
  .annotate(OpenApi.Description, "Pinned tool, prompt and resource template definitions: pending changes, approval, the lock file (gateway:admin)")
{}

export class GatewayApi extends HttpApi.make("mcp-gateway")
  .add(McpGroup)
  .add(GatewayGroup)
  .add(ToolsGroup)
  // Every endpoint may answer any of these: one error shape, told apart by status.
  .addError(BadRequest)
  .addError(Forbidden)
  .addError(NotFound)
  .addError(Conflict)
  .addError(PayloadTooLarge)
  .addError(InternalError)
  .addError(BadGateway)
  .addError(ServiceUnavailable)
  .addError(GatewayTimeout)
  .annotate(OpenApi.Title, "MCP Gateway")
  .annotate(OpenApi.Version, GATEWAY_VERSION)
  .annotate(OpenApi.Description, "One URL for every MCP server: load balancing, health checks and failover.")
{}
