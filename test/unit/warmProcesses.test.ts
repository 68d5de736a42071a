import { describe, expect, it } from "vitest"
import type { InstanceDefinition } from "../../src/domain/Instance.js"
import type { ConnectionLog } from "../../src/transport/Connection.js"
import { WarmProcesses } from "../../src/transport/WarmProcesses.js"
import { isAlive } from "../support/processes.js"

const quiet: ConnectionLog = { debug: () => {}, info: () => {}, warn: () => {} }
// A process that ignores its stdin closing: stopping it takes the grace period, then SIGTERM.
const instance = {
  id: "w",
  transport: "stdio",
  command: [process.execPath, "-e", "setInterval(() => {}, 1000)"]
} as unknown as InstanceDefinition

describe("warm processes at shutdown", () => {
  it("waits for one already being stopped (no longer wanted), and starts none after", async () => {
    const warm = new WarmProcesses(() => quiet, () => ["PATH"])
    warm.keep(instance, 1)
    const child = warm.take(instance)!
    warm.keep(instance, 1)
    expect(warm.count(instance)).toBe(1)
    // The session took one; the next is no longer wanted: it is stopping, within its grace period.
    const pid = (warm as unknown as { byInstance: Map<InstanceDefinition, Array<{ pid: number }>> }).byInstance.get(instance)![0]!.pid
    warm.keep(instance, 0)
    expect(warm.count(instance)).toBe(0)
    expect(isAlive(pid)).toBe(true)
    await warm.stop()
    // Shutdown returned only once it was gone: nothing is orphaned when the gateway exits.
    expect(isAlive(pid)).toBe(false)
    // A session ending during shutdown asks for another: none starts.
    warm.keep(instance, 1)
    expect(warm.count(instance)).toBe(0)
    child.kill("SIGKILL")
  }, 15_000)
})
