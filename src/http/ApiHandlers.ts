import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { Effect, Either, Layer, Schema } from "effect"
import { DEFAULT_REGISTRATION, GatewayConfig, resolvePaths } from "../config/GatewayConfig.js"
import { addressesOf, endpointHost, makeEndpointPolicy } from "../domain/EndpointPolicy.js"
import { formatParseError } from "../domain/formatParseError.js"
import type { DispatchError } from "../domain/GatewayError.js"
import { loadBalancerJson } from "../domain/LoadBalancer.js"
import { allows, scopeNeeded } from "../domain/Identity.js"
import { GATEWAY_VERSION } from "../domain/Protocol.js"
import { secretProblems } from "../domain/Secret.js"
import { ClientSessions } from "../proxy/ClientSessions.js"
import { Dispatcher } from "../proxy/Dispatcher.js"
import { Exposure } from "../proxy/Exposure.js"
import { FleetRedis } from "../fleet/FleetRedis.js"
import { Stats } from "../proxy/Stats.js"
import { Registry, type TemplateState } from "../registry/Registry.js"
import { Strategies } from "../strategy/Strategies.js"
import { HealthProbes } from "../health/HealthProbes.js"
import { isModulePath } from "../loader/PluginLoader.js"
import { ConfigReload } from "../discovery/ConfigReload.js"
import { Discovery } from "../discovery/Discovery.js"
import { GatewayApi, RegisterBody } from "./Api.js"
import { dispatchErrorAnswer, errorAnswer, toApiError } from "./ApiError.js"
import { parseJsonBody } from "./raw.js"
import { type RequestContext, requestContextOf } from "./requestContext.js"
import { RestOperation, restOperations, runRestOperation } from "./RestOperations.js"

/** The request id the front listener assigned (it echoes the client's X-Request-ID or makes one). */
const requestId = Effect.map(HttpServerRequest.HttpServerRequest, (r) => r.headers["x-request-id"] ?? "")

const fail = (status: number, type: string, message: string, extra?: Parameters<typeof errorAnswer>[4]) =>
  Effect.flatMap(requestId, (id) => Effect.fail(toApiError(errorAnswer(status, type, message, id, extra))))

/** Whether a new session of the template found every process slot busy lately (see InstanceState.saturated). */
const templateSaturated = (template: TemplateState, now = Date.now()) => {
  for (const i of template.instances.values()) if (i.saturated(now)) return true
  return false
}

export const templateHealth = (template: TemplateState) => {
  const instances = Array.from(template.instances.values())
  const healthy = instances.filter((i) => i.status === "healthy").length
  return {
    template_name: template.name,
    strategy: template.settings.strategy,
    total_instances: instances.length,
    healthy_instances: healthy,
    health_percentage: instances.length === 0 ? 0 : Math.round((healthy / instances.length) * 1000) / 10,
    saturated: templateSaturated(template),
    instances: Object.fromEntries(instances.map((i) => [i.id, i.toJSON()]))
  }
}

const McpHandlers = HttpApiBuilder.group(GatewayApi, "mcp", (handlers) =>
  Effect.gen(function*() {
    const dispatcher = yield* Dispatcher
    const registry = yield* Registry
    const config = yield* GatewayConfig
    const exposure = yield* Exposure
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
          : Effect.succeed(templateHealth(template))
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
    const startedAt = Date.now()
    const registration = config.gateway.registration ?? DEFAULT_REGISTRATION
    const endpointPolicy = makeEndpointPolicy(registration)

    return handlers
      .handle("health", () =>
        Effect.sync(() => {
          const instances = registry.instances()
          const saturated = registry.templates().filter((t) => templateSaturated(t)).map((t) => t.name)
          return {
            // Degraded: the Redis the replicas share is down or does not answer in time (serving from
            // the last known registry, rate limits per replica, registrations refused; read from the
            // fleet's state, never from Redis: health answers at once whatever Redis does), or a
            // template refused new sessions lately, every process slot busy.
            status: fleet.status() === "down" || fleet.status() === "slow" || saturated.length > 0 ? "degraded" : "healthy",
            version: GATEWAY_VERSION,
            uptime_seconds: Math.round((Date.now() - startedAt) / 1000),
            templates: registry.templates().length,
            instances: instances.length,
            healthy_instances: instances.filter((i) => i.status === "healthy").length,
            saturated_templates: saturated
          }
        }))
      .handle("stats", () =>
        Effect.sync(() => {
          const now = Date.now()
          const snapshot = stats.snapshot()
          const sessionCounts = sessions.counts()
          const templates: Record<string, unknown> = { ...snapshot.templates }
          for (const t of registry.templates()) {
            const counted = snapshot.templates[t.name]
            const instances = Array.from(t.instances.values())
            const totalWeight = instances.reduce((n, i) => n + i.weight, 0)
            const served = counted?.requests ?? 0
            templates[t.name] = {
              ...(counted ?? { requests: 0, errors: 0, error_rate: 0 }),
              strategy: t.settings.strategy,
              sessions: sessionCounts.filter((c) => c.template === t.name).reduce((n, c) => n + c.count, 0),
              instances: Object.fromEntries(instances.map((i) => {
                const d = counted?.distribution[i.id]
                const requests = d?.requests ?? 0
                const errors = d?.errors ?? 0
                return [i.id, {
                  requests,
                  errors,
                  error_rate: requests === 0 ? 0 : Math.round((errors / requests) * 10_000) / 10_000,
                  // Load distribution: the share of the template's requests it served, against its share of the weight.
                  share: served === 0 ? 0 : Math.round((requests / served) * 1000) / 1000,
                  weight: i.weight,
                  weight_share: totalWeight === 0 ? 0 : Math.round((i.weight / totalWeight) * 1000) / 1000,
                  latency_ms: {
                    moving_average: i.latencyMs === undefined ? null : Math.round(i.latencyMs * 100) / 100,
                    ...(d?.latency_ms ?? { p50: null, p95: null, p99: null })
                  },
                  healthy: i.status === "healthy",
                  status: i.status,
                  active_requests: i.activeRequests,
                  ejected: i.outlier.isEjected(now),
                  circuit_breaker: i.breaker.toJSON(now).state,
                  ...(i.channel === undefined ? {} : { process: i.channel.state, restarts: stats.restarts(t.name, i.id) })
                }]
              }))
            }
          }
          return { ...snapshot, templates, sessions: sessionCounts.reduce((n, c) => n + c.count, 0), cache: exposure.stats() }
        }))
      .handle("registry", () =>
        Effect.sync(() => ({
          registry_file: config.gateway.registryFile ?? null,
          config_file: reload.file ?? null,
          discovery: discovery.status(),
          templates: Object.fromEntries(registry.templates().map((t) => [t.name, {
            source: t.source,
            load_balancer: loadBalancerJson(t.settings),
            instances: Array.from(t.instances.values(), (i) => i.toJSON())
          }]))
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
            { template_name, instance_id: state.id, instance: state.toJSON(), persisted: config.gateway.registryFile !== undefined },
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

export const ApiHandlers = HttpApiBuilder.api(GatewayApi).pipe(
  Layer.provide(McpHandlers),
  Layer.provide(GatewayHandlers)
)
