import { describe, expect, it } from "vitest"
import { MAX_SESSION_ID_LENGTH, ownerTag, type SessionClaims, SessionSeal } from "../../src/sessions/SessionSeal.js"

const given: SessionClaims = {
  endpoint: "everything",
  owner: "key:ops",
  protocolVersion: "2025-11-25",
  kind: "pinned",
  instance: "e1",
  backendSession: "3f2c",
  client: { capabilities: { sampling: {} }, clientInfo: { name: "c", version: "1" } },
  expiresAt: 1_900_000_000_000
}
/** What an id opens to: the owner as its tag, the rest as given. */
const claims = { ...given, owner: ownerTag(given.owner), ownProcess: undefined, grant: undefined, local: undefined }
const key = (n: number) => `key-${n}-`.padEnd(44, "x")

describe("sealed session ids", () => {
  it("open to their claims on every replica with the key; each id is another (random IV); only visible ASCII", () => {
    const a = new SessionSeal([key(1)])
    const b = new SessionSeal([key(1)])
    const id = a.seal(given)
    expect(id).toMatch(/^s2\.[0-9a-f]{8}\.[A-Za-z0-9_-]+$/)
    expect(b.open(id)).toEqual(claims)
    expect(a.seal(given)).not.toBe(id)
  })

  it("rotate: the first key seals, every key opens; a key dropped from the list opens nothing more", () => {
    const old = new SessionSeal([key(1)])
    const rotated = new SessionSeal([key(2), key(1)])
    const retired = new SessionSeal([key(2)])
    const before = old.seal(given)
    expect(rotated.open(before)).toEqual(claims)
    const after = rotated.seal(given)
    expect(old.open(after)).toBeUndefined()
    expect(retired.open(after)).toEqual(claims)
    expect(retired.open(before)).toBeUndefined()
  })

  it("a tampered, truncated or forged id opens to nothing", () => {
    const seal = new SessionSeal([key(1)])
    const id = seal.seal(given)
    const payload = id.split(".")[2]!
    for (let i = 0; i < payload.length; i += 7) {
      const flipped = payload.slice(0, i) + (payload[i] === "A" ? "B" : "A") + payload.slice(i + 1)
      expect(seal.open(`s2.${id.split(".")[1]}.${flipped}`)).toBeUndefined()
    }
    expect(seal.open(id.slice(0, -1))).toBeUndefined()
    expect(seal.open(`${id}.x`)).toBeUndefined()
    expect(seal.open("0123456789abcdef0123456789abcdef")).toBeUndefined()
    expect(new SessionSeal([key(3)]).open(id)).toBeUndefined()
  })

  it("without configured keys, a key of the process's own: ids open on this replica only", () => {
    const here = new SessionSeal([])
    expect(here.shared).toBe(false)
    expect(here.open(here.seal(given))).toEqual(claims)
    expect(new SessionSeal([]).open(here.seal(given))).toBeUndefined()
  })

  it("stay under 512 bytes whatever the client sends in initialize or its subject is; what serves the session is kept", () => {
    const seal = new SessionSeal([key(1)])
    const huge = "x".repeat(100_000)
    const capabilities: Record<string, unknown> = { sampling: {}, roots: { listChanged: true }, elicitation: { form: {}, url: {} } }
    for (let i = 0; i < 500; i++) capabilities[`experimental-${i}-${huge.slice(0, 200)}`] = { [huge.slice(0, 300)]: { deep: huge } }
    const client = { protocolVersion: "2025-11-25", capabilities, clientInfo: { name: huge, version: huge, title: huge }, extra: huge }
    for (const kind of ["pinned", "balanced", "aggregate"] as const) {
      const id = seal.seal({ ...given, kind, owner: `jwt:${huge}`, client, grant: "abcdefghijkl" })
      expect(id.length).toBeLessThan(512)
      const opened = seal.open(id)!
      expect(opened.owner).toBe(ownerTag(`jwt:${huge}`))
      expect(opened.instance).toBe("e1")
      expect(opened.backendSession).toBe("3f2c")
      expect(opened.local).toBeUndefined()
    }
    // The capabilities a server needs to know of survive, as far as they fit.
    const modest = seal.open(seal.seal({ ...given, client: { ...client, capabilities: { sampling: {}, roots: { listChanged: true } } } }))!
    expect(modest.client.capabilities).toEqual({ sampling: {}, roots: { listChanged: true } })
    // What serves it too large to seal (a backend's huge session id): this replica's alone, still small.
    const local = seal.seal({ ...given, backendSession: huge.slice(0, 2000) })
    expect(local.length).toBeLessThanOrEqual(MAX_SESSION_ID_LENGTH)
    expect(seal.open(local)!.local).toBe(true)
    // An id longer than any the gateway issues is not even opened.
    expect(seal.open(`s2.${local.split(".")[1]}.${"A".repeat(600)}`)).toBeUndefined()
  })
})
