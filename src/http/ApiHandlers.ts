import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { Effect, Either, Layer, Schema } from "effect"
import { DEFAULT_REGISTRATION, GatewayConfig, resolvePaths } from "../config/GatewayConfig.js"
import { sandboxOf } from "../config/sandboxOf.js"
import { sandboxView } from "../domain/Sandbox.js"
import { addressesOf, endpointHost, makeEndpointPolicy } from "../domain/EndpointPolicy.js"
import { formatParseError } from "../domain/formatParseError.js"
import type { DispatchError } from "../domain/GatewayError.js"
import { loadBalancerJson } from "../domain/LoadBalancer.js"
import { allows, scopeNeeded } from "../domain/Identity.js"
import { secretProblems } from "../domain/Secret.js"
import { ClientSessions } from "../sessions/ClientSessions.js"
import { Dispatcher } from "../dispatch/Dispatcher.js"
import { Exposure } from "../exposure/Exposure.js"
import { FleetRedis } from "../fleet/FleetRedis.js"
import { Stats } from "../observability/Stats.js"
import { Timer } from "../clock/Timer.js"
import { Registry } from "../registry/Registry.js"
import { Strategies } from "../strategy/Strategies.js"
import { HealthProbes } from "../health/HealthProbes.js"
import { isModulePath } from "../loader/PluginLoader.js"
import { ConfigReload } from "../discovery/ConfigReload.js"
import { InstanceOffers } from "../integrity/InstanceOffers.js"
import { Discovery } from "../discovery/Discovery.js"
import { ToolPins } from "../integrity/ToolPins.js"
import { ApproveBody, GatewayApi, RegisterBody } from "./Api.js"
import { integrityView, pinOfJson, toolsLockJson } from "./toolIntegrityViews.js"
import { gatewayHealth, gatewayStats, templateHealth } from "./gatewayViews.js"
import { dispatchErrorAnswer, errorAnswer, toApiError } from "./ApiError.js"
import { parseJsonBody } from "./raw.js"
import { type RequestContext, requestContextOf } from "./requestContext.js"
import { RestOperation, restOperations, runRestOperation } from "./RestOperations.js"

/** The request id the front listener assigned (it echoes the client's X-Request-ID or makes one). */
const requestId = Effect.map(HttpServerRequest.HttpServerRequest, (r) => r.headers["x-request-id"] ?? "")

const fail = (status: number, type: string, message: string, extra?: Parameters<typeof errorAnswer>[4]) =>
  Effect.flatMap(requestId, (id) => Effect.fail(toApiError(errorAnswer(status, type, message, id, extra))))

const McpHandlers = HttpApiBuilder.group(GatewayApi, "mcp", (handlers) =>
  Effect.gen(function*() {
    const dispatcher = yield* Dispatcher
    const registry = yield* Registry
    const config = yield* GatewayConfig
    const exposure = yield* Exposure
    const timer = yield* Timer
    // The same code path as the lean handler, for requests that reach the HttpApi app.
    const run = (operation: RestOperation, template: string, params?: Record<string, unknown>) =>
      runRestOperation(dispatcher, template, operation, params, { maxPages: config.gateway.maxListPages, exposure }).pipe(
        Effect.map((r) => r.result as any),
        Effect.catchAll((e: DispatchError) => Effect.flatMap(requestId, (id) => Effect.fail(toApiError(dispatchErrorAnswer(e, id)))))
      )
    return handlers
      .handle("toolsList", ({ path }) => run(restOperations["tools/list"]!, path.template))
      .handle("toolsCall", ({ path, payload }) => run(restOperations["tools/call"]!, path.template, payload))
      .handle("resourcesList", ({ path }) => run(restOperations["resources/list"]!, path.template))
      .handle("resourceTemplatesList", ({ path }) => run(restOperations["resources/templates/list"]!, path.template))
      .handle("resourcesRead", ({ path, payload }) => run(restOperations["resources/read"]!, path.template, payload))
      .handle("promptsList", ({ path }) => run(restOperations["prompts/list"]!, path.template))
      .handle("promptsGet", ({ path, payload }) => run(restOperations["prompts/get"]!, path.template, payload))
      .handle("templateHealth", ({ path }) => {
        const template = registry.template(path.template)
        return template === undefined
          ? fail(404, "template_not_found", `unknown template "${path.template}"`)
          : Effect.succeed(templateHealth(template, timer.now()))
      })
  }))

const decodeRegisterBody = Schema.decodeUnknownEither(RegisterBody, { errors: "all", onExcessProperty: "error" })

/** The shared registry is down: a 503 with Retry-After (the error envelope, as HttpApi's errors have no headers). */
class Unavailable {
  constructor(readonly response: HttpServerResponse.HttpServerResponse) {}
}
const answerUnavailable = <A, E, R>(effect: Effect.Effect<A, E | Unavailable, R>) =>
  Effect.catchIf(effect, (e): e is Unavailable => e instanceof Unavailable, (e) => Effect.succeed(e.response))
const registryUnavailable = (message: string) =>
  Effect.flatMap(requestId, (id) =>
    Effect.fail(new Unavailable(HttpServerResponse.unsafeJson(errorAnswer(503, "registry_unavailable", message, id).body, { status: 503, headers: { "retry-after": "5" } }))))

/** An audit line for a change of the registry: who (credential or address), what, from where. */
const audit = (event: string, context: RequestContext | undefined, what: string) =>
  Effect.logInfo(`audit: ${event} ${what}`).pipe(
    Effect.annotateLogs({ audit: event, who: context?.identity.id ?? "(unknown)", what, from: context?.address ?? "(unknown)" })
  )

const GatewayHandlers = HttpApiBuilder.group(GatewayApi, "gateway", (handlers) =>
  Effect.gen(function*() {
    const registry = yield* Registry
    const stats = yield* Stats
    const sessions = yield* ClientSessions
    const strategies = yield* Strategies
    const probes = yield* HealthProbes
    const config = yield* GatewayConfig
    const discovery = yield* Discovery
    const reload = yield* ConfigReload
    const exposure = yield* Exposure
    const fleet = yield* FleetRedis
    const offers = yield* InstanceOffers
    const timer = yield* Timer
    const pins = yield* ToolPins
    const startedAt = timer.now()
    const registration = config.gateway.registration ?? DEFAULT_REGISTRATION
    const endpointPolicy = makeEndpointPolicy(registration)

    return handlers
      .handle("health", () => Effect.sync(() => gatewayHealth(registry, fleet.status(), startedAt, timer.now())))
      .handle("stats", () => Effect.map(pins.report(), (integrity) => gatewayStats({ stats, registry, sessions, exposure, integrity }, timer.now())))
      .handle("registry", () =>
        Effect.map(pins.report(), (reports) => ({
          registry_file: config.gateway.registryFile ?? null,
          config_file: reload.file ?? null,
          discovery: discovery.status(),
          templates: Object.fromEntries(registry.templates().map((t) => {
            // Drift between instances: which instances' own lists differ from the pins, and how (docs/api.md).
            const drift = offers.drift(t.name)
            return [t.name, {
              source: t.source,
              load_balancer: loadBalancerJson(t.settings),
              instances: Array.from(t.instances.values(), (i) =>
                i.definition.transport === "stdio"
                  ? { ...i.toJSON(timer.now()), sandbox: sandboxView(sandboxOf(i.definition, t.sandbox, config.gateway.sandbox)) }
                  : i.toJSON(timer.now())),
              tool_integrity: integrityView(reports.find((r) => r.template === t.name)),
              ...(drift === undefined ? {} : { drift })
            }]
          }))
        })))
      .handleRaw("register", ({ request }) =>
        Effect.gen(function*() {
          // The front listener read the body within the limits (auth/Guard.ts and HttpServer.ts).
          const context = requestContextOf(NodeHttpServerRequest.toIncomingMessage(request))
          const id = yield* requestId
          const body = parseJsonBody(context?.body ?? Buffer.alloc(0), id, config.gateway.maxJsonDepth)
          if (!body.ok) return yield* Effect.fail(toApiError(body.error))
          const decoded = decodeRegisterBody(body.value)
          if (Either.isLeft(decoded)) {
            const problems = formatParseError(decoded.left, "body")
            return yield* fail(400, "invalid_request", problems.join("; "), { problems })
          }
          const { instance, load_balancer, template_name } = decoded.right
          if (context !== undefined && !allows(context.identity, "gateway:admin", template_name)) {
            const needed = scopeNeeded("gateway:admin", template_name)
            return yield* fail(403, "forbidden", `Forbidden: this credential lacks the scope ${needed}`, { scope: needed })
          }
          if (instance.metadata !== undefined) {
            const bytes = Buffer.byteLength(JSON.stringify(instance.metadata))
            if (bytes > registration.maxMetadataBytes) {
              return yield* fail(
                400,
                "invalid_request",
                `body.instance.metadata: ${bytes} bytes of JSON, more than the limit of ${registration.maxMetadataBytes} (gateway.max_metadata_bytes)`
              )
            }
          }
          if (instance.transport !== "stdio") {
            // The gateway sends requests (with the instance's headers) wherever the endpoint says:
            // not to the cloud metadata service or whatever else the operator's lists refuse.
            const host = endpointHost(new URL(instance.endpoint))
            const verdict = endpointPolicy.check(host, yield* addressesOf(host))
            if (!verdict.allowed) return yield* fail(403, "forbidden", verdict.message)
          }
          if (instance.transport !== "stdio") {
            // A registration must not be a way to read the gateway's environment (another
            // template's token, the JWT secret) by sending it to an endpoint of one's choosing.
            const refused = Object.values(instance.headers ?? {}).flatMap((v) =>
              typeof v === "string" || config.gateway.registrationEnv.includes(v.env) ? [] : [v.env]
            )
            if (refused.length > 0) {
              return yield* fail(
                403,
                "forbidden",
                `a registration may name only the environment variables listed in gateway.registration_env; ` +
                  `not ${refused.map((n) => JSON.stringify(n)).join(", ")}`
              )
            }
            const problems = secretProblems(instance.headers, "body.instance")
            if (problems.length > 0) return yield* fail(400, "invalid_request", problems.join("; "), { problems })
          }
          if (instance.transport === "stdio" && !config.gateway.allowStdioRegistration) {
            return yield* fail(
              403,
              "forbidden",
              "registering a stdio instance starts a process on the gateway host, which this gateway does not allow; " +
                "set \"allow_stdio_registration\": true in the gateway section of the config to permit it"
            )
          }
          if (instance.transport === "stdio") {
            // The same rule as headers: a registration does not choose which of the gateway's variables a process sees.
            const refused = (instance.inherit_env ?? []).filter((name) => !config.gateway.registrationEnv.includes(name))
            if (refused.length > 0) {
              return yield* fail(
                403,
                "forbidden",
                `a registration may name only the environment variables listed in gateway.registration_env; ` +
                  `not ${refused.map((n) => JSON.stringify(n)).join(", ")} (in inherit_env)`
              )
            }
            // Nor where it runs: only a preset (no "off" under the gateway's sandbox, no paths of its choosing to read or write).
            if (instance.sandbox !== undefined && instance.sandbox !== "strict" && instance.sandbox !== "network") {
              return yield* fail(
                403,
                "forbidden",
                `a registration may set "sandbox" only to "strict" or "network" (the gateway's or the template's applies otherwise); ` +
                  `paths to read or write, and "off", are the config file's to give`
              )
            }
          }
          for (const plugin of [load_balancer?.strategy, load_balancer?.health_probe]) {
            if (plugin !== undefined && isModulePath(plugin)) {
              return yield* fail(
                403,
                "forbidden",
                "a plugin given by path runs code on the gateway host; name it in the config file, or use a built-in here"
              )
            }
          }
          if (registry.template(template_name) === undefined) {
            const settings = registry.settingsFor(load_balancer)
            const invalid = yield* Effect.flip(Effect.zipRight(strategies.validate(settings), probes.validate(settings))).pipe(Effect.option)
            if (invalid._tag === "Some") return yield* fail(400, "invalid_request", invalid.value.message)
          }
          const state = yield* registry.register({
            template: template_name,
            spec: resolvePaths(instance, config.gateway.baseDir),
            loadBalancer: load_balancer
          }).pipe(
            Effect.catchTags({
              RegistrationConflict: (e) => fail(409, "conflict", e.message),
              RegistryStorageError: (e) => fail(500, "storage_error", e.message),
              RegistryUnavailable: (e) => registryUnavailable(e.message)
            })
          )
          yield* audit("registered", context, `${template_name}/${state.id}`)
          return yield* HttpServerResponse.json(
            { template_name, instance_id: state.id, instance: state.toJSON(timer.now()), persisted: config.gateway.registryFile !== undefined },
            { status: 201 }
          ).pipe(Effect.orDie)
        }).pipe(answerUnavailable))
      .handleRaw("sync", ({ request }) =>
        Effect.gen(function*() {
          const context = requestContextOf(NodeHttpServerRequest.toIncomingMessage(request))
          const [configResult, providers] = yield* Effect.all([reload.reload("sync"), discovery.sync], { concurrency: 2 })
          yield* audit("synced", context, `config${providers.map((p) => `, ${p.provider}`).join("")}`)
          return yield* HttpServerResponse.json({
            config: reload.file === undefined ? null : {
              file: reload.file,
              ok: configResult.ok,
              ...(configResult.problems === undefined ? {} : { problems: configResult.problems }),
              diff: configResult.diff,
              needs_restart: configResult.needsRestart
            },
            providers
          }).pipe(Effect.orDie)
        }))
      .handleRaw("deregister", ({ path, request }) =>
        Effect.gen(function*() {
          const context = requestContextOf(NodeHttpServerRequest.toIncomingMessage(request))
          const { instanceId, template } = path
          yield* registry.deregister(template, instanceId).pipe(
            Effect.catchTags({
              InstanceNotFound: (e) => fail(404, "instance_not_found", e.message),
              RegistryStorageError: (e) => fail(500, "storage_error", e.message),
              RegistryUnavailable: (e) => registryUnavailable(e.message)
            })
          )
          yield* audit("deregistered", context, `${template}/${instanceId}`)
          return yield* HttpServerResponse.json({ template_name: template, instance_id: instanceId, deregistered: true }).pipe(Effect.orDie)
        }).pipe(answerUnavailable))
  }))

const decodeApproveBody = Schema.decodeUnknownEither(ApproveBody, { errors: "all", onExcessProperty: "error" })

/** Tool integrity's management routes (docs/api.md): pins and pending changes, approval, the lock file; all gateway:admin. */
const ToolsHandlers = HttpApiBuilder.group(GatewayApi, "tools", (handlers) =>
  Effect.gen(function*() {
    const registry = yield* Registry
    const config = yield* GatewayConfig
    const pins = yield* ToolPins
    const unknownTemplate = (template: string) => fail(404, "template_not_found", `unknown template "${template}"`)
    return handlers
      .handle("templateTools", ({ path }) =>
        Effect.gen(function*() {
          if (registry.template(path.template) === undefined) return yield* unknownTemplate(path.template)
          const [integrity] = yield* pins.report(path.template)
          if (integrity === undefined) return yield* unknownTemplate(path.template)
          // (The view /gateway/registry shows of each template, with its name.)
          return { template_name: path.template, ...integrityView(integrity)! }
        }))
      .handleRaw("approveTools", ({ path, request }) =>
        Effect.gen(function*() {
          const context = requestContextOf(NodeHttpServerRequest.toIncomingMessage(request))
          const id = yield* requestId
          // No body, or `{}`: every pending change; `{"tools": [...]}`: those names only.
          let names: ReadonlyArray<string> | undefined
          if (context?.body !== undefined && context.body.length > 0) {
            const body = parseJsonBody(context.body, id, config.gateway.maxJsonDepth)
            if (!body.ok) return yield* Effect.fail(toApiError(body.error))
            const decoded = decodeApproveBody(body.value)
            if (Either.isLeft(decoded)) {
              const problems = formatParseError(decoded.left, "body")
              return yield* fail(400, "invalid_request", problems.join("; "), { problems })
            }
            names = decoded.right.tools
          }
          if (registry.template(path.template) === undefined) return yield* unknownTemplate(path.template)
          const approved = yield* pins.approve(path.template, names, context?.identity.id ?? "(unknown)").pipe(
            Effect.catchTag("TemplateNotFound", () => unknownTemplate(path.template))
          )
          // (Audited by ToolPins.approve itself, `audit: tools_approved` with who and what: one line per approval.)
          const [report] = yield* pins.report(path.template)
          return yield* HttpServerResponse.json({
            template_name: path.template,
            approved: approved.map(pinOfJson),
            tool_integrity: integrityView(report)
          }).pipe(Effect.orDie)
        }))
      .handle("toolsLock", () => Effect.sync(() => toolsLockJson(pins, registry.templates().map((t) => t.name))))
  }))

export const ApiHandlers = HttpApiBuilder.api(GatewayApi).pipe(
  Layer.provide(McpHandlers),
  Layer.provide(GatewayHandlers),
  Layer.provide(ToolsHandlers)
)
