import { DEFAULT_INHERITED_ENV_VARS } from "@modelcontextprotocol/sdk/client/stdio.js"
import { ConfigProvider, Effect, Exit } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { loadGatewayConfig } from "../../src/config/GatewayConfig.js"
import { childEnvironment, DEFAULT_INHERITED_ENV } from "../../src/transport/childEnvironment.js"

const parent = {
  PATH: "/usr/bin:/bin",
  HOME: "/home/gw",
  LANG: "C.UTF-8",
  LC_ALL: "C.UTF-8",
  LC_TIME: "en_GB.UTF-8",
  TERM: "xterm",
  TMPDIR: "/tmp/gw",
  USER: "gw",
  SHELL: "/bin/sh",
  MCP_GATEWAY_SESSION_KEYS: "a-session-key-of-at-least-32-characters!!",
  GW_JWT_SECRET: "jwt-secret",
  MCP_GATEWAY_REDIS_URL: "redis://:redis-password@127.0.0.1:6379",
  GITHUB_TOKEN: "ghp_backend",
  AWS_REGION: "eu-west-1",
  AWS_SECRET_ACCESS_KEY: "aws-secret",
  BASH_FUNC_x: "() { echo hi; }"
}

describe("a stdio server's environment", () => {
  it("is the default list only: none of the gateway's settings or secrets", () => {
    expect(childEnvironment(undefined, [], parent)).toEqual({
      PATH: "/usr/bin:/bin",
      HOME: "/home/gw",
      LANG: "C.UTF-8",
      LC_ALL: "C.UTF-8",
      LC_TIME: "en_GB.UTF-8",
      TERM: "xterm",
      TMPDIR: "/tmp/gw",
      USER: "gw",
      SHELL: "/bin/sh"
    })
  })

  it("adds what inherit_env names (names, and prefixes ending in *), then the instance's own env, which wins", () => {
    const env = childEnvironment({ GITHUB_TOKEN: "its-own", EXTRA: "1" }, ["GITHUB_TOKEN", "AWS_*", "NOT_SET"], parent)
    expect(env).toMatchObject({ PATH: "/usr/bin:/bin", GITHUB_TOKEN: "its-own", EXTRA: "1", AWS_REGION: "eu-west-1", AWS_SECRET_ACCESS_KEY: "aws-secret" })
    expect(Object.keys(env)).not.toContain("NOT_SET")
    expect(Object.keys(env)).not.toContain("MCP_GATEWAY_SESSION_KEYS")
    expect(Object.keys(env)).not.toContain("GW_JWT_SECRET")
  })

  it("leaves out a shell function on the default list, as the SDK does (named in inherit_env, it passes)", () => {
    const withFunction = { ...parent, TERM: "() { evil; }" }
    expect(childEnvironment(undefined, [], withFunction).TERM).toBeUndefined()
    expect(childEnvironment(undefined, ["BASH_FUNC_x"], parent).BASH_FUNC_x).toBe("() { echo hi; }")
  })

  it("holds the official SDK's default list", () => {
    for (const name of DEFAULT_INHERITED_ENV_VARS) expect(DEFAULT_INHERITED_ENV).toContain(name)
  })
})

describe("inherit_env in the config", () => {
  const configFile = (content: unknown) => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "gw-inherit-")), "gateway.json")
    fs.writeFileSync(file, JSON.stringify(content))
    return file
  }
  const load = (content: unknown) =>
    Effect.runPromiseExit(loadGatewayConfig({ configFile: configFile(content) }).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map()))))

  it("is read at each level (gateway default: none), names and prefixes only", async () => {
    const none = await load({})
    expect(Exit.isSuccess(none) && none.value.gateway.inheritEnv).toEqual([])
    const given = await load({
      gateway: { inherit_env: ["HTTP_PROXY"] },
      templates: { t: { inherit_env: ["AWS_*"], instances: [{ id: "a", transport: "stdio", command: "node s.js", inherit_env: ["GITHUB_TOKEN"] }] } }
    })
    expect(Exit.isSuccess(given)).toBe(true)
    if (Exit.isSuccess(given)) {
      expect(given.value.gateway.inheritEnv).toEqual(["HTTP_PROXY"])
      expect(given.value.templates[0]!.inheritEnv).toEqual(["AWS_*"])
      expect(given.value.templates[0]!.instances[0]).toMatchObject({ inherit_env: ["GITHUB_TOKEN"] })
    }
    const bad = await load({ gateway: { inherit_env: ["*"] }, templates: { t: { inherit_env: ["A-B"] } } })
    expect(Exit.isFailure(bad)).toBe(true)
    const problems: ReadonlyArray<string> = Exit.isFailure(bad) ? (bad.cause as any).error.problems : []
    expect(problems.join("\n")).toContain("gateway.inherit_env[0]: expected an environment variable name, or a prefix ending in *")
    expect(problems.join("\n")).toContain("templates.t.inherit_env[0]: expected an environment variable name, or a prefix ending in *")
  })
})
