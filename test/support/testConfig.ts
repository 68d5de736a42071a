import { DEFAULT_LIMITS, type GatewayConfigShape } from "../../src/config/GatewayConfig.js"
import type { ExposureInput } from "../../src/domain/Exposure.js"
import { defineInstance, type InstanceSpec } from "../../src/domain/Instance.js"
import { DEFAULT_LOAD_BALANCER, type LoadBalancerInput, resolveLoadBalancer } from "../../src/domain/LoadBalancer.js"

/** A config value for unit tests: HTTP instances by id (their endpoint is never dialled with a fake transport). */
export const testConfig = (
  templates: Record<string, {
    readonly instances: ReadonlyArray<string | (Partial<InstanceSpec> & { id: string })>
    readonly load_balancer?: LoadBalancerInput
    readonly exposure?: ExposureInput
  }>,
  options: { readonly registryFile?: string } = {}
): GatewayConfigShape => ({
  gateway: {
    host: "127.0.0.1",
    port: 0,
    registryFile: options.registryFile,
    allowStdioRegistration: false,
    allowedOrigins: [],
    allowedHosts: [],
    registrationEnv: [],
    maxBodyBytes: 4 * 1024 * 1024,
    maxHeaderBytes: DEFAULT_LIMITS.maxHeaderBytes,
    maxJsonDepth: DEFAULT_LIMITS.maxJsonDepth,
    maxSessions: DEFAULT_LIMITS.maxSessions,
    maxSessionsPerClient: DEFAULT_LIMITS.maxSessionsPerClient,
    maxListPages: DEFAULT_LIMITS.maxListPages,
    rateLimits: { perClient: undefined, perTemplate: undefined },
    auth: undefined,
    logLevel: "none",
    defaults: DEFAULT_LOAD_BALANCER,
    baseDir: process.cwd()
  },
  templates: Object.entries(templates).map(([name, t]) => ({
    name,
    loadBalancerInput: t.load_balancer,
    loadBalancer: resolveLoadBalancer(DEFAULT_LOAD_BALANCER, t.load_balancer),
    forwardHeaders: [],
    rateLimit: undefined,
    exposure: t.exposure,
    instances: t.instances.map((i) => {
      const spec = typeof i === "string" ? { id: i } : i
      return defineInstance(
        name,
        spec.id,
        { transport: "http", endpoint: `http://127.0.0.1:1/${spec.id}`, ...spec } as InstanceSpec,
        "config"
      )
    })
  }))
})
