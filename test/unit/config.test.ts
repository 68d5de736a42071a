import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Exit } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { type ConfigFlags, loadGatewayConfig } from "../../src/config/GatewayConfig.js"
import { loadBalancerJson } from "../../src/domain/LoadBalancer.js"
import { splitCommand } from "../../src/domain/splitCommand.js"

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-config-"))
let n = 0
const file = (content: unknown) => {
  const f = path.join(dir, `c${n++}.json`)
  fs.writeFileSync(f, typeof content === "string" ? content : JSON.stringify(content))
  return f
}

const load = (flags: ConfigFlags, env: Record<string, string> = {}) =>
  loadGatewayConfig(flags).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))

const problems = (flags: ConfigFlags, env: Record<string, string> = {}) =>
  Effect.map(Effect.exit(load(flags, env)), (exit) => {
    expect(Exit.isFailure(exit)).toBe(true)
    return Exit.isFailure(exit) ? ((exit.cause as any).error.problems as ReadonlyArray<string>) : []
  })

const seed = {
  gateway: { host: "127.0.0.1", port: 8080, registry_file: "./registry.json" },
  templates: {
    everything: {
      instances: [
        { id: "ev-1", transport: "stdio", command: ["node", "server.js", "stdio"], working_dir: "/srv", env: { KEY: "v" }, weight: 1 },
        { id: "ev-2", transport: "http", endpoint: "http://127.0.0.1:3001/mcp", weight: 3 }
      ],
      load_balancer: { strategy: "round_robin", health_check_interval: 30, health_check_timeout: 10, max_retries: 3, timeout: 60 }
    }
  }
}

describe("config", () => {
  it.effect("reads the seed's format", () =>
    Effect.gen(function*() {
      const f = file(seed)
      const config = yield* load({ configFile: f })
      expect(config.gateway).toMatchObject({ host: "127.0.0.1", port: 8080, registryFile: path.join(dir, "registry.json") })
      const [t] = config.templates
      expect(t!.name).toBe("everything")
      expect(t!.instances.map((i) => [i.id, i.transport, i.weight])).toEqual([["ev-1", "stdio", 1], ["ev-2", "http", 3]])
      expect(t!.loadBalancer.strategy).toBe("round_robin")
    }))

  it.effect("reads the client limits, with their defaults, and names a bad one", () =>
    Effect.gen(function*() {
      const defaults = yield* load({ configFile: file(seed) })
      expect(defaults.gateway.clientLimits).toEqual({
        maxConnections: undefined,
        maxConnectionsPerAddress: undefined,
        firstRequestTimeoutMs: 10_000,
        writeTimeoutMs: 30_000,
        maxBufferedBytesPerResponse: 8 * 1024 * 1024,
        maxBufferedBytes: 32 * 1024 * 1024
      })
      const set = yield* load({
        configFile: file({
          gateway: {
            max_connections: 500,
            max_connections_per_address: 50,
            first_request_timeout: 2.5,
            write_timeout: 5,
            max_buffered_bytes_per_response: 65536,
            max_buffered_bytes: 1048576
          }
        })
      })
      expect(set.gateway.clientLimits).toEqual({
        maxConnections: 500,
        maxConnectionsPerAddress: 50,
        firstRequestTimeoutMs: 2500,
        writeTimeoutMs: 5000,
        maxBufferedBytesPerResponse: 65536,
        maxBufferedBytes: 1048576
      })
      const found = yield* problems({ configFile: file({ gateway: { write_timeout: 0, max_buffered_bytes: 100 } }) })
      expect(found).toContain("gateway.write_timeout: expected a positive number of seconds, got 0")
      expect(found).toContain("gateway.max_buffered_bytes: expected an integer of at least 65536, got 100")
    }))

  it.effect("names the path of every problem", () =>
    Effect.gen(function*() {
      const bad = structuredClone(seed) as any
      bad.templates.everything.instances[1].endpoint = "localhost"
      bad.templates.everything.instances[0].weight = 0
      bad.templates.everything.load_balancer.timeout = -1
      bad.templates.everything.load_balancer.stratgy = "weighted"
      const found = yield* problems({ configFile: file(bad) })
      expect(found).toContain(`templates.everything.instances[1].endpoint: expected an http(s) URL, got "localhost"`)
      expect(found).toContain(`templates.everything.instances[0].weight: expected an integer from 1 to 1000, got 0`)
      expect(found).toContain(`templates.everything.load_balancer.timeout: expected a positive number of seconds, got -1`)
      expect(found).toContain(`templates.everything.load_balancer.stratgy: is not a known field; did you mean "strategy"?`)
      // One line per problem: no echo of the objects around them, no subtree dumped.
      expect(found.length).toBe(4)
    }))

  it.effect("says what a wrong-kind section should be in a few words, not as its whole schema", () =>
    Effect.gen(function*() {
      expect(yield* problems({ configFile: file([]) })).toEqual(["(root): expected an object, got an array"])
      expect(yield* problems({ configFile: file({ templates: 5 }) })).toEqual(["templates: expected an object of named entries, got 5"])
      expect(yield* problems({ configFile: file({ gateway: [] }) })).toEqual(["gateway: expected an object, got an array"])
    }))

  it.effect("reports malformed JSON, a missing file, an unknown transport and duplicate ids", () =>
    Effect.gen(function*() {
      expect((yield* problems({ configFile: file("{ \"templates\": ") }))[0]).toMatch(/invalid JSON/)
      expect((yield* problems({ configFile: path.join(dir, "absent.json") }))[0]).toMatch(/cannot read config file .*absent\.json/)
      const tcp = yield* problems({ configFile: file({ templates: { t: { instances: [{ transport: "tcp", endpoint: "x" }] } } }) })
      expect(tcp.join("\n")).toContain("templates.t.instances[0].transport")
      const dup = yield* problems({
        configFile: file({
          templates: { t: { instances: [{ id: "a", transport: "http", endpoint: "http://h/" }, { id: "a", transport: "http", endpoint: "http://h/" }] } }
        })
      })
      expect(dup).toEqual([`templates.t.instances[1].id: duplicate instance id "a"`])
    }))

  it.effect("environment overrides the file, flags override both", () =>
    Effect.gen(function*() {
      const f = file(seed)
      const env = {
        MCP_GATEWAY_HOST: "0.0.0.0",
        MCP_GATEWAY_PORT: "9090",
        MCP_GATEWAY_REGISTRY_FILE: "/tmp/reg.json",
        MCP_GATEWAY_HEALTH_INTERVAL: "5",
        MCP_GATEWAY_HEALTH_TIMEOUT: "2",
        MCP_GATEWAY_DEFAULT_STRATEGY: "weighted",
        MCP_GATEWAY_MAX_RETRIES: "1"
      }
      const fromEnv = yield* load({ configFile: f }, env)
      expect(fromEnv.gateway).toMatchObject({ host: "0.0.0.0", port: 9090, registryFile: "/tmp/reg.json" })
      expect(loadBalancerJson(fromEnv.gateway.defaults)).toMatchObject({
        strategy: "weighted",
        health_check_interval: 5,
        health_check_timeout: 2,
        max_retries: 1
      })
      const flagged = yield* load({ configFile: f, host: "127.0.0.2", port: 0 }, env)
      expect(flagged.gateway).toMatchObject({ host: "127.0.0.2", port: 0 })
      expect((yield* problems({ configFile: f }, { MCP_GATEWAY_PORT: "eighty" }))).toEqual([
        `MCP_GATEWAY_PORT: expected an integer from 0 to 65535, got "eighty"`
      ])
    }))

  it.effect("tool_integrity: the default, the gateway's over it, a template's field by field; a bad value named", () =>
    Effect.gen(function*() {
      const plain = yield* load({ configFile: file(seed) })
      expect(plain.gateway.toolIntegrity).toEqual({ pin: "trust_on_first_use", on_change: "block", drift: "route_to_pinned" })
      expect(plain.templates[0]!.toolIntegrity).toBeUndefined()
      const config = yield* load({
        configFile: file({
          gateway: { tool_integrity: { on_change: "warn" } },
          templates: { a: { instances: [], tool_integrity: { pin: "off" } }, b: { instances: [] } }
        })
      })
      expect(config.gateway.toolIntegrity).toEqual({ pin: "trust_on_first_use", on_change: "warn", drift: "route_to_pinned" })
      expect(config.templates.find((t) => t.name === "a")!.toolIntegrity).toEqual({ pin: "off", on_change: "warn", drift: "route_to_pinned" })
      expect(config.templates.find((t) => t.name === "b")!.toolIntegrity).toBeUndefined()
      const bad = yield* problems({ configFile: file({ templates: { a: { instances: [], tool_integrity: { on_change: "deny", pinned: true } } } }) })
      expect(bad).toContain(`templates.a.tool_integrity.on_change: expected "block", got "deny"`)
      expect(bad).toContain(`templates.a.tool_integrity.on_change: expected "allow", got "deny"`)
      expect(bad).toContain("templates.a.tool_integrity.pinned: is not a known field (known: pin, on_change, drift)")
    }))

  it.effect("templates take unset load_balancer fields from the gateway-wide defaults", () =>
    Effect.gen(function*() {
      const f = file({
        gateway: { load_balancer: { strategy: "least_connections", timeout: 5 } },
        templates: { a: { instances: [] }, b: { instances: [], load_balancer: { timeout: 9 } } }
      })
      const config = yield* load({ configFile: f })
      expect(config.templates.map((t) => [t.name, t.loadBalancer.strategy, Duration.toSeconds(t.loadBalancer.timeout), t.loadBalancer.max_retries])).toEqual([
        ["a", "least_connections", 5, 3],
        ["b", "least_connections", 9, 3]
      ])
    }))

  it.effect("a command string is split like a shell would, and ids default to template-n", () =>
    Effect.gen(function*() {
      const f = file({ templates: { fs: { instances: [{ transport: "stdio", command: `node "my server.js" --root '/a b' x\\ y` }] } } })
      const config = yield* load({ configFile: f })
      const instance = config.templates[0]!.instances[0]!
      expect(instance.id).toBe("fs-1")
      expect(instance.transport === "stdio" && instance.command).toEqual(["node", "my server.js", "--root", "/a b", "x y"])
      expect(instance.transport === "stdio" && instance.working_dir).toBe(dir)
      expect(splitCommand(`echo "unclosed`)).toBe("unbalanced double quote in command")
    }))
})
