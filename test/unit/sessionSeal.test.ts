import { describe, expect, it } from "vitest"
import { type SessionClaims, SessionSeal } from "../../src/proxy/SessionSeal.js"

const claims: SessionClaims = {
  endpoint: "everything",
  owner: "key:ops",
  protocolVersion: "2025-11-25",
  kind: "pinned",
  instance: "e1",
  backendSession: "3f2c",
  client: { capabilities: { sampling: {} }, clientInfo: { name: "c", version: "1" } }
}
const key = (n: number) => `key-${n}-`.padEnd(44, "x")

describe("sealed session ids", () => {
  it("open to their claims on every replica with the key; each id is another (random IV); only visible ASCII", () => {
    const a = new SessionSeal([key(1)])
    const b = new SessionSeal([key(1)])
    const id = a.seal(claims)
    expect(id).toMatch(/^s1\.[0-9a-f]{8}\.[A-Za-z0-9_-]+$/)
    expect(b.open(id)).toEqual(claims)
    expect(a.seal(claims)).not.toBe(id)
  })

  it("rotate: the first key seals, every key opens; a key dropped from the list opens nothing more", () => {
    const old = new SessionSeal([key(1)])
    const rotated = new SessionSeal([key(2), key(1)])
    const retired = new SessionSeal([key(2)])
    const before = old.seal(claims)
    expect(rotated.open(before)).toEqual(claims)
    const after = rotated.seal(claims)
    expect(old.open(after)).toBeUndefined()
    expect(retired.open(after)).toEqual(claims)
    expect(retired.open(before)).toBeUndefined()
  })

  it("a tampered, truncated or forged id opens to nothing", () => {
    const seal = new SessionSeal([key(1)])
    const id = seal.seal(claims)
    const payload = id.split(".")[2]!
    for (let i = 0; i < payload.length; i += 7) {
      const flipped = payload.slice(0, i) + (payload[i] === "A" ? "B" : "A") + payload.slice(i + 1)
      expect(seal.open(`s1.${id.split(".")[1]}.${flipped}`)).toBeUndefined()
    }
    expect(seal.open(id.slice(0, -1))).toBeUndefined()
    expect(seal.open(`${id}.x`)).toBeUndefined()
    expect(seal.open("0123456789abcdef0123456789abcdef")).toBeUndefined()
    expect(new SessionSeal([key(3)]).open(id)).toBeUndefined()
  })

  it("without configured keys, a key of the process's own: ids open on this replica only", () => {
    const here = new SessionSeal([])
    expect(here.shared).toBe(false)
    expect(here.open(here.seal(claims))).toEqual(claims)
    expect(new SessionSeal([]).open(here.seal(claims))).toBeUndefined()
  })
})
