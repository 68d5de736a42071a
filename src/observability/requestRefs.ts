import { FiberRef, FiberRefs, HashMap, Option } from "effect"

/**
 * What a request's fiber starts with (as `updateRefs` of a fork): its request id on every log
 * line, set as the fiber is forked rather than with `Effect.annotateLogs` (the same annotation,
 * at a tenth of the cost on every request); and its failures not logged by the runtime as
 * "unhandled" (a request that fails is answered, counted and given its request line).
 */
export const requestRefs = (requestId: string) =>
(refs: FiberRefs.FiberRefs, fiberId: Parameters<typeof FiberRefs.updateAs>[1]["fiberId"]): FiberRefs.FiberRefs =>
  FiberRefs.updateManyAs(refs, {
    entries: [
      [FiberRef.currentLogAnnotations, [[fiberId, HashMap.set(FiberRefs.getOrDefault(refs, FiberRef.currentLogAnnotations), "request_id", requestId as unknown)]]],
      [FiberRef.unhandledErrorLogLevel, [[fiberId, Option.none()]]]
    ]
  })
