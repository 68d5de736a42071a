import { Effect } from "effect"
import { BackendError } from "../domain/GatewayError.js"
import { ErrorCode, isObject } from "../domain/JsonRpc.js"
import { type Definition, type DefinitionKind, definitionsOfList, kindOfList, LIST_OF } from "../domain/ToolDefinitions.js"
import type { ToolPinsShape } from "../integrity/ToolPins.js"

/** A dispatch as Exposure runs it: the params to send, and where the answer's caching hints go. */
type Dispatch<E> = (params: Record<string, unknown> | undefined, onCacheHints: (hints: { readonly ttlMs: number; readonly cacheScope: "public" | "private" }) => void) => Effect.Effect<unknown, E>

/** The kind of item a call names (`tools/call`, `prompts/get`), for tool integrity. */
const calledKind = (method: string): DefinitionKind | undefined =>
  method === "tools/call" ? "tool" : method === "prompts/get" ? "prompt" : undefined

/** The change that blocks this call, if tool integrity blocks it. */
export const blockedCall = (pins: ToolPinsShape, template: string, method: string, params: Record<string, unknown> | undefined) => {
  const kind = calledKind(method)
  return kind === undefined || typeof params?.name !== "string" ? undefined : pins.blocked(template, kind, params.name)
}

/**
 * Tool integrity around a dispatch: a blocked item's call refused (naming the change), a list's
 * items observed against the template's pins and the blocked ones left out. Behind the cache,
 * so an approval shows at once in a cached list.
 */
export const makeIntegrityGuard = (pins: ToolPinsShape) => {
  /** Declarations seen (canonical JSON) → the capability names they declare, sorted: a list's audience. */
  const audiences = new Map<string, string>()
  const audienceOf = (declaration: string): string => {
    let audience = audiences.get(declaration)
    if (audience !== undefined) return audience
    audience = ""
    try {
      const parsed: unknown = JSON.parse(declaration)
      const capabilities = Array.isArray(parsed) ? parsed[0] : undefined
      if (isObject(capabilities)) audience = Object.keys(capabilities).sort().join(",")
    } catch {
      // Not a declaration of an MCP client (the REST face's): no capabilities.
    }
    if (audiences.size >= MAX_AUDIENCES_KEPT) audiences.clear()
    audiences.set(declaration, audience)
    return audience
  }
  /** A list's items as definitions, once per result object (a cached list is the same object at every hit). */
  const definitionsSeen = new WeakMap<object, Map<string, Definition>>()

  return <E>(template: string, method: string, declaration: string, dispatch: Dispatch<E>): Dispatch<E | BackendError> => (params, onHints) => {
    const change = blockedCall(pins, template, method, params)
    if (change !== undefined) {
      return Effect.fail(
        new BackendError({
          template,
          instanceId: "",
          error: {
            code: ErrorCode.InvalidParams,
            message: pins.describeRefusal(template, change),
            data: { reason: "tool_integrity", template, kind: change.kind, name: change.name, change: change.change, pinned: change.pinned?.digest ?? null, offered: change.offered?.digest ?? null }
          }
        })
      )
    }
    const kind = kindOfList(method)
    if (kind === undefined) return dispatch(params, onHints)
    return Effect.map(dispatch(params, onHints), (result) => {
      if (!isObject(result) || result.resultType === "input_required") return result
      let offered = definitionsSeen.get(result)
      if (offered === undefined) definitionsSeen.set(result, offered = definitionsOfList(kind, result))
      const lastPage = result.nextCursor === undefined || result.nextCursor === ""
      const hidden = pins.observeOffer(template, kind, offered, undefined, { complete: lastPage && params?.cursor === undefined, lastPage, audience: audienceOf(declaration) })
      if (hidden.size === 0) return result
      const field = LIST_OF[kind].field
      const items = result[field]
      if (!Array.isArray(items)) return result
      const nameField = kind === "resource_template" ? "uriTemplate" : "name"
      return { ...result, [field]: items.filter((item) => !(isObject(item) && typeof item[nameField] === "string" && hidden.has(item[nameField] as string))) }
    })
  }
}
const MAX_AUDIENCES_KEPT = 1_000
