import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, Exit, Schema } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { DEFAULT_REGISTRATION, loadGatewayConfig } from "../../src/config/GatewayConfig.js"
import { DEFAULT_REGISTRATION_DENY, endpointHost, knownAddresses, makeEndpointPolicy, parseEntry } from "../../src/domain/EndpointPolicy.js"
import { derivedInstanceId, InstanceSpec, MAX_NAME_LENGTH, TemplateName } from "../../src/domain/Instance.js"
import { DEFAULT_LOAD_BALANCER } from "../../src/domain/LoadBalancer.js"
import { makeRegistry } from "../../src/registry/Registry.js"
import { testConfig } from "../support/testConfig.js"

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-bounds-"))
let n = 0
const configFile = (content: unknown) => {
  const f = path.join(dir, `c${n++}.json`)
  fs.writeFileSync(f, JSON.stringify(content))
  return f
}
const problemsOf = (content: unknown) =>
  Effect.map(
    Effect.exit(loadGatewayConfig({ configFile: configFile(content) }).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map())))),
    (exit) => (Exit.isFailure(exit) ? ((exit.cause as any).error.problems as ReadonlyArray<string>) : [])
  )

/** The default policy's verdict for an endpoint URL whose host needs no DNS. */
const verdict = (url: string, policy = makeEndpointPolicy(DEFAULT_REGISTRATION)) => {
  const host = endpointHost(new URL(url))
  return policy.check(host, knownAddresses(host))
}

describe("registration endpoint policy", () => {
  it("refuses link-local and cloud metadata addresses by default, in every spelling a URL allows", () => {
    for (
      const url of [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.170.2/v2/credentials",
        "http://2852039166/", // 169.254.169.254 as one number
        "http://0xa9.0xfe.0xa9.0xfe/",
        "http://169.254.169.254./",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]:8080/mcp",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://0.0.0.0:3001/mcp",
        "http://[::]:3001/mcp",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.GOOGLE.INTERNAL./"
      ]
    ) {
      const v = verdict(url)
      expect(v.allowed, url).toBe(false)
      if (!v.allowed) expect(v.message).toContain("gateway.registration_deny")
    }
  })

  it("allows loopback (the README's tour), localhost, private networks and public names by default", () => {
    for (const url of ["http://127.0.0.1:3001/mcp", "http://localhost:3001/mcp", "http://[::1]:3001/mcp", "http://10.0.0.5/mcp", "https://mcp.example.com/mcp"]) {
      expect(verdict(url).allowed, url).toBe(true)
    }
  })

  it("the allow list wins over the deny list, and when not empty admits only what it lists", () => {
    const policy = makeEndpointPolicy({ allow: ["169.254.10.0/24", "10.1.0.0/16", "*.internal.example"], deny: [...DEFAULT_REGISTRATION_DENY, "127.0.0.0/8", "::1", "localhost"] })
    expect(verdict("http://169.254.10.7/mcp", policy).allowed).toBe(true)
    expect(verdict("http://169.254.169.254/", policy).allowed).toBe(false)
    expect(verdict("http://10.1.2.3/mcp", policy).allowed).toBe(true)
    expect(verdict("http://10.2.0.1/mcp", policy)).toMatchObject({ allowed: false, message: expect.stringContaining("gateway.registration_allow") })
    expect(verdict("http://127.0.0.1:3001/mcp", policy)).toMatchObject({ allowed: false, message: expect.stringContaining("registration_deny") })
    expect(verdict("http://localhost:3001/mcp", policy).allowed).toBe(false)
    // A name on the allow list is accepted by name; resolved addresses of other names are checked one by one.
    expect(policy.check("mcp.internal.example", ["10.9.9.9"]).allowed).toBe(true)
    expect(policy.check("sneaky.example.com", ["10.1.0.1", "169.254.169.254"])).toMatchObject({ allowed: false, message: expect.stringContaining("169.254.169.254") })
  })

  it.effect("names a bad entry of the config's lists", () =>
    Effect.gen(function*() {
      expect(typeof parseEntry("10.0.0.0/33")).toBe("string")
      expect(typeof parseEntry("not a host")).toBe("string")
      expect(parseEntry("fd00:ec2::254")).toMatchObject({ kind: "address" })
      // A name that ends in a number is an IPv4 address to a URL: in the spelling a URL reads, or
      // refused; never a host name no endpoint can have (a deny entry that would refuse nothing).
      expect(parseEntry("0xa9fea9fe")).toMatchObject({ kind: "address", address: "169.254.169.254" })
      expect(parseEntry("2852039166")).toMatchObject({ kind: "address", address: "169.254.169.254" })
      expect(parseEntry("169.254.169.254.")).toMatchObject({ kind: "address", address: "169.254.169.254" })
      for (const typo of ["169.254.169.2540", "300.1.1.1", "10.0.0.0.1"]) expect(typeof parseEntry(typo), typo).toBe("string")
      expect(makeEndpointPolicy({ allow: [], deny: ["0xa9fea9fe"] }).check("169.254.169.254", ["169.254.169.254"]).allowed).toBe(false)
      expect(parseEntry("v1.example.com")).toMatchObject({ kind: "name" })
      const problems = yield* problemsOf({ gateway: { registration_deny: ["169.254.0.0/16", "10.0.0.0/40"], registration_allow: ["exa mple"] } })
      expect(problems).toEqual([
        `gateway.registration_allow[0]: expected an IP address, a CIDR block (169.254.0.0/16) or a host name, got "exa mple"`,
        `gateway.registration_deny[1]: expected an IP address, a CIDR block (169.254.0.0/16) or a host name, got "10.0.0.0/40"`
      ])
    }))

  it.effect("reads the settings, each with its default", () =>
    Effect.gen(function*() {
      const defaults = yield* loadGatewayConfig({ configFile: configFile({}) }).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map())))
      expect(defaults.gateway.registration).toEqual(DEFAULT_REGISTRATION)
      expect(DEFAULT_REGISTRATION).toMatchObject({ allow: [], maxPerTemplate: 100, maxTotal: 1000, maxMetadataBytes: 16384 })
      const given = yield* loadGatewayConfig({
        configFile: configFile({
          gateway: { registration_allow: ["10.0.0.0/8"], registration_deny: [], max_registrations_per_template: 2, max_registrations: 3, max_metadata_bytes: 100 }
        })
      }).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map())))
      expect(given.gateway.registration).toEqual({ allow: ["10.0.0.0/8"], deny: [], maxPerTemplate: 2, maxTotal: 3, maxMetadataBytes: 100 })
    }))
})

describe("instance headers", () => {
  it.effect("refuses framing, hop-by-hop and MCP protocol header names (any case) in the config, naming the path", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf({
        templates: {
          t: {
            instances: [{
              id: "a",
              transport: "http",
              endpoint: "http://127.0.0.1:1/mcp",
              headers: { "Transfer-Encoding": "chunked", "content-length": "5", Host: "evil", Connection: "close", "Mcp-Session-Id": "x", "X-Fine": "ok", Authorization: "Bearer backend" }
            }]
          }
        }
      })
      expect(problems).toHaveLength(1)
      expect(problems[0]).toMatch(/^templates\.t\.instances\[0\]\.headers: /)
      for (const name of ["Transfer-Encoding", "content-length", "Host", "Connection", "Mcp-Session-Id"]) {
        expect(problems[0]).toContain(`"${name}" cannot be an instance header: the gateway sets it itself`)
      }
      expect(problems[0]).not.toContain("X-Fine")
      // (Backend credentials are what instance headers are for.)
      expect(problems[0]).not.toContain(`"Authorization"`)
    }))

  it("refuses them in a registration's instance too (the API and the registry file decode the same schema)", () => {
    const decoded = Schema.decodeUnknownEither(InstanceSpec)({ transport: "sse", endpoint: "http://127.0.0.1:1/sse", headers: { "keep-alive": "1", "bad name": "x" } })
    expect(Either.isLeft(decoded)).toBe(true)
    const message = Either.isLeft(decoded) ? decoded.left.message : ""
    expect(message).toContain(`"keep-alive" cannot be an instance header`)
    expect(message).toContain(`"bad name" is not a header name`)
  })

  it("refuses a value no HTTP message may carry (CR, LF, NUL and other controls), which would otherwise be accepted and then fail every request", () => {
    for (const value of ["a\r\nTransfer-Encoding: chunked", "a\nb", "a\u0000b", "a\u007fb"]) {
      const decoded = Schema.decodeUnknownEither(InstanceSpec)({ transport: "http", endpoint: "http://127.0.0.1:1/mcp", headers: { "X-Token": value } })
      expect(Either.isLeft(decoded), JSON.stringify(value)).toBe(true)
      expect(Either.isLeft(decoded) ? decoded.left.message : "").toContain(`the value of "X-Token" has a character no header value may have`)
    }
    // Tabs, spaces and Latin-1 are header text; a value from the environment is checked when it is read.
    expect(Either.isRight(Schema.decodeUnknownEither(InstanceSpec)({ transport: "http", endpoint: "http://127.0.0.1:1/mcp", headers: { "X-A": "a\tb c\u00e9", "X-B": { env: "TOKEN" } } }))).toBe(true)
  })
})

describe("names", () => {
  it("one maximum length for templates and instance ids", () => {
    expect(MAX_NAME_LENGTH).toBe(128)
    expect(Either.isRight(Schema.decodeUnknownEither(TemplateName)("a".repeat(MAX_NAME_LENGTH)))).toBe(true)
    expect(Either.isLeft(Schema.decodeUnknownEither(TemplateName)("a".repeat(MAX_NAME_LENGTH + 1)))).toBe(true)
    expect(Either.isLeft(Schema.decodeUnknownEither(InstanceSpec)({ id: "i".repeat(MAX_NAME_LENGTH + 1), transport: "http", endpoint: "http://127.0.0.1:1/mcp" }))).toBe(true)
    // A template of the longest name still has ids that are names: {template}-{n}, shortened.
    expect(derivedInstanceId("t", 3)).toBe("t-3")
    for (const n of [1, 12, 1234]) {
      const id = derivedInstanceId("a".repeat(MAX_NAME_LENGTH), n)
      expect(id.length).toBe(MAX_NAME_LENGTH)
      expect(id.endsWith(`-${n}`)).toBe(true)
      expect(Either.isRight(Schema.decodeUnknownEither(TemplateName)(id))).toBe(true)
    }
  })
})

describe("registration limits", () => {
  const spec = (port: number) => ({ transport: "http" as const, endpoint: `http://127.0.0.1:${port}/mcp` })

  it.scoped("counts the API's instances per template and in all; the config's do not count", () =>
    Effect.gen(function*() {
      const registry = yield* makeRegistry({
        templates: testConfig({ cfg: { instances: ["c1", "c2", "c3"] } }).templates,
        defaults: DEFAULT_LOAD_BALANCER,
        limits: { perTemplate: 2, total: 3 }
      })
      yield* registry.register({ template: "cfg", spec: spec(1) })
      yield* registry.register({ template: "cfg", spec: spec(2) })
      const perTemplate = yield* Effect.flip(registry.register({ template: "cfg", spec: spec(3) }))
      expect(perTemplate._tag).toBe("RegistrationConflict")
      expect(perTemplate.message).toContain("gateway.max_registrations_per_template")
      yield* registry.register({ template: "other", spec: spec(4) })
      const total = yield* Effect.flip(registry.register({ template: "third", spec: spec(5) }))
      expect(total.message).toContain("gateway.max_registrations")
      // Refused registrations changed nothing; a deregistration makes room again.
      expect(registry.template("third")).toBeUndefined()
      expect(registry.template("cfg")!.instances.size).toBe(5)
      yield* registry.deregister("cfg", "cfg-4")
      yield* registry.register({ template: "third", spec: spec(5) })
    }))
})
