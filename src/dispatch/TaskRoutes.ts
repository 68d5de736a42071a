import { isObject } from "../domain/JsonRpc.js"
import type { InstanceState } from "../instance/InstanceState.js"

/** Methods that name a task by `params.taskId` (both revisions' task methods). */
const TASK_METHODS: ReadonlySet<string> = new Set(["tasks/get", "tasks/update", "tasks/cancel", "tasks/result"])

/** How many task ids are remembered per gateway; the oldest go first (a task outlives its route only past this many). */
const MAX_ROUTES = 10_000

/** How long a task's route is kept when the server gives no ttl of its own. */
const DEFAULT_TTL_MS = 60 * 60 * 1000

/**
 * Where each task lives: a task exists on the instance that created it only, so its later
 * requests (`tasks/get`, `tasks/update`, `tasks/cancel`, and the old revision's `tasks/result`)
 * go there, whatever the template's strategy would pick. Learnt from the answers that create
 * tasks: the old revision's `{task: {taskId, ttl}}` and the new one's `{resultType: "task",
 * taskId, ttlMs}`. Per template, bounded, expiring with the task.
 */
export class TaskRoutes {
  private readonly routes = new Map<string, { readonly instance: InstanceState; readonly expiresAt: number }>()

  /** Remembers the task an answer created, if it created one. */
  learn(template: string, instance: InstanceState, result: unknown, now: number) {
    if (!isObject(result)) return
    const task = isObject(result.task) ? result.task : result.resultType === "task" ? result : undefined
    if (task === undefined || typeof task.taskId !== "string") return
    const ttl = typeof task.ttlMs === "number" ? task.ttlMs : typeof task.ttl === "number" ? task.ttl : DEFAULT_TTL_MS
    const key = `${template}\u0000${task.taskId}`
    this.routes.delete(key)
    this.routes.set(key, { instance, expiresAt: now + Math.max(ttl, 60_000) })
    if (this.routes.size > MAX_ROUTES) this.routes.delete(this.routes.keys().next().value!)
  }

  /** The instance a task request must go to, if it names a task the gateway saw created. */
  instanceFor(template: string, method: string, params: Record<string, unknown> | undefined, now: number): InstanceState | undefined {
    if (!TASK_METHODS.has(method) || typeof params?.taskId !== "string") return undefined
    const key = `${template}\u0000${params.taskId}`
    const route = this.routes.get(key)
    if (route === undefined) return undefined
    if (route.expiresAt <= now) {
      this.routes.delete(key)
      return undefined
    }
    return route.instance
  }
}
