import { Deferred, Effect, FiberId } from "effect"
import { describe, expect, it } from "vitest"
import type { InstanceDefinition } from "../../src/domain/Instance.js"
import { CallerConnections } from "../../src/transport/CallerConnections.js"
import type { Connection } from "../../src/transport/Connection.js"

const instance = { id: "a", template: "t", transport: "stdio", command: ["server"] } as unknown as InstanceDefinition

/** Connections that answer when told to (a Deferred per request), and know whether they were closed. */
const setup = () => {
  let now = 0
  const made: Array<string> = []
  const closed: Array<string> = []
  const gate = Deferred.unsafeMake<void>(FiberId.none)
  const connections = new CallerConnections((_, caller) => {
    made.push(caller)
    const connection = {
      request: () => Effect.as(Deferred.await(gate), { jsonrpc: "2.0", id: 1, result: {} }),
      close: Effect.void
    } as unknown as Connection
    return { connection, close: Effect.sync(() => void closed.push(caller)) }
  }, () => now)
  return { connections, made, closed, gate, tick: (ms: number) => void (now += ms) }
}

describe("callers' own connections (a process shared only within one caller)", () => {
  it("one per caller; a new caller over the bound stops the least recently used idle one, and is refused when every one is busy", async () => {
    const { connections, made, gate, tick } = setup()
    const evicted: Array<string> = []
    const get = (caller: string) => connections.get(instance, caller, 2, (e) => void evicted.push(e.caller))
    const alice = get("alice")
    tick(10)
    const bob = get("bob")
    expect(get("alice")).toBe(alice)
    expect(made).toEqual(["alice", "bob"])
    // Both idle: carol takes alice's place (the least recently used).
    tick(10)
    get("carol")
    expect(evicted).toEqual(["alice"])
    // bob and carol each with a request in flight: dave is refused.
    const inFlight = [bob, connections.get(instance, "carol", 2, () => {})].map((entry) =>
      Effect.runPromise(typeof entry === "string" ? Effect.die(entry) : entry.connection.request("tools/call", {}))
    )
    await new Promise((r) => setTimeout(r, 10))
    expect(get("dave")).toMatch(/every one of its 2 callers' processes \(max_sessions_per_instance\) is busy/)
    Effect.runSync(Deferred.succeed(gate, undefined))
    await Promise.all(inFlight)
    // Their requests ended: dave gets one, in the place of the least recently used.
    expect(typeof get("dave")).toBe("object")
    expect(evicted).toHaveLength(2)
  })

  it("one nobody used for the idle time is taken out; one held by a session is not", () => {
    const { connections, tick } = setup()
    const alice = connections.get(instance, "alice", 4, () => {})
    const bob = connections.get(instance, "bob", 4, () => {})
    if (typeof bob === "string" || typeof alice === "string") throw new Error(String(bob))
    bob.holders++
    tick(61_000)
    expect(connections.takeIdle(() => 60_000).map((e) => e.caller)).toEqual(["alice"])
    expect(connections.size).toBe(1)
  })
})
