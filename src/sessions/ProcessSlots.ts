import type { InstanceState } from "../instance/InstanceState.js"
import type { ClientSession } from "./ClientSession.js"

/**
 * One of an instance's process slots (`max_sessions_per_instance`): a process (legacy SSE
 * session) of a client session's own, or one being started for a session being opened. It is
 * taken before the process starts, so concurrent opens cannot overshoot the bound, and given
 * back once the process has stopped (not when its session ends: the bound counts processes).
 */
export interface ProcessSlot {
  readonly instance: InstanceState
  /** The session it serves, once opened. */
  session: ClientSession | undefined
  /** Given to a newcomer while its session ends (see ProcessSlots.handOver): its end frees nothing. */
  handedOver: boolean
}

/**
 * The process slots of every instance, with what the lifecycle of sessions with a process of
 * their own needs: how many are taken, the least recently used idle session to end when a
 * newcomer finds none free, and every slot for the idle reaper.
 */
export class ProcessSlots {
  private readonly byInstance = new Map<InstanceState, Set<ProcessSlot>>()

  used(instance: InstanceState): number {
    return this.byInstance.get(instance)?.size ?? 0
  }

  /** A free slot of the instance, taken; undefined when all `max` are. */
  take(instance: InstanceState, max: number): ProcessSlot | undefined {
    let slots = this.byInstance.get(instance)
    if ((slots?.size ?? 0) >= max) return undefined
    if (slots === undefined) this.byInstance.set(instance, slots = new Set())
    const slot: ProcessSlot = { instance, session: undefined, handedOver: false }
    slots.add(slot)
    return slot
  }

  /** The slot's process stopped (or never started): it is free, unless it was handed over. */
  release(slot: ProcessSlot) {
    if (slot.handedOver) return
    const slots = this.byInstance.get(slot.instance)
    if (slots === undefined) return
    slots.delete(slot)
    if (slots.size === 0) this.byInstance.delete(slot.instance)
  }

  /**
   * A slot whose session is being ended to make room goes to a newcomer at once: the count
   * does not change, and no other opener can take it meanwhile. The newcomer starts its process
   * after the old one stopped, so the instance never runs more than its bound.
   */
  handOver(slot: ProcessSlot): ProcessSlot {
    slot.handedOver = true
    const slots = this.byInstance.get(slot.instance)!
    slots.delete(slot)
    const taken: ProcessSlot = { instance: slot.instance, session: undefined, handedOver: false }
    slots.add(taken)
    return taken
  }

  /**
   * The slot whose session to end for a newcomer: among the sessions `rank` lets go (undefined:
   * not to be ended), the lowest rank (the least recently used, clients that left first).
   */
  evictionCandidate(instance: InstanceState, rank: (session: ClientSession) => number | undefined): ProcessSlot | undefined {
    let found: ProcessSlot | undefined
    let lowest = Infinity
    for (const slot of this.byInstance.get(instance) ?? []) {
      const session = slot.session
      if (session === undefined) continue
      const r = rank(session)
      if (r !== undefined && r < lowest) {
        lowest = r
        found = slot
      }
    }
    return found
  }

  /** Every slot that serves an open session. */
  *all(): Iterable<ProcessSlot> {
    for (const slots of this.byInstance.values()) {
      for (const slot of slots) if (slot.session !== undefined) yield slot
    }
  }
}
