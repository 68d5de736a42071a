/**
 * When each watched instance is probed next: a binary min-heap of (time, key, generation).
 *
 * Why a heap and not a fiber per instance: a sleeping Effect fiber with its schedule holds about
 * 11 KB, which a gateway of 1,000 templates × 3 instances paid 3,000 times over for nothing but
 * waiting. Here an instance waits as one small entry and the HealthChecker's one scheduler fiber
 * sleeps until the earliest. An entry is never removed from the middle: rescheduling or
 * forgetting a key bumps its generation, and `popDue` skips entries of an older generation.
 */
interface Due {
  readonly at: number
  readonly key: string
  readonly generation: number
}

export class ProbeTimes {
  private readonly heap: Array<Due> = []
  private readonly generations = new Map<string, number>()
  // One counter for all keys: a key forgotten and watched again (an instance replaced under the
  // same id) must not take up a generation its old entries still carry.
  private lastGeneration = 0

  /** Sets (or moves) `key`'s next probe to `at`; true when it is now the earliest. */
  schedule(key: string, at: number): boolean {
    const generation = ++this.lastGeneration
    this.generations.set(key, generation)
    this.push({ at, key, generation })
    return this.heap[0]!.key === key && this.heap[0]!.generation === generation
  }

  /** `key` is no longer probed (its entries left in the heap are skipped). */
  forget(key: string): void {
    this.generations.delete(key)
  }

  /** Whether `key` is still watched at the generation a running probe started from. */
  isCurrent(key: string, generation: number): boolean {
    return this.generations.get(key) === generation
  }

  /** The earliest time of a live entry, or undefined when nothing is scheduled. */
  next(): number | undefined {
    this.dropStale()
    return this.heap[0]?.at
  }

  /** Removes and returns the live entries due at `now` (time ≤ now), earliest first. */
  popDue(now: number): Array<{ readonly key: string; readonly generation: number }> {
    const due: Array<{ key: string; generation: number }> = []
    for (;;) {
      this.dropStale()
      const top = this.heap[0]
      if (top === undefined || top.at > now) return due
      this.pop()
      due.push({ key: top.key, generation: top.generation })
    }
  }

  private dropStale(): void {
    while (this.heap.length > 0 && this.generations.get(this.heap[0]!.key) !== this.heap[0]!.generation) this.pop()
  }

  private push(entry: Due): void {
    const heap = this.heap
    heap.push(entry)
    let i = heap.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (heap[parent]!.at <= entry.at) break
      heap[i] = heap[parent]!
      i = parent
    }
    heap[i] = entry
  }

  private pop(): void {
    const heap = this.heap
    const last = heap.pop()!
    if (heap.length === 0) return
    let i = 0
    for (;;) {
      const left = 2 * i + 1
      if (left >= heap.length) break
      const right = left + 1
      const child = right < heap.length && heap[right]!.at < heap[left]!.at ? right : left
      if (heap[child]!.at >= last.at) break
      heap[i] = heap[child]!
      i = child
    }
    heap[i] = last
  }
}
