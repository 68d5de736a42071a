import { Deferred, type Duration, Effect, Either, FiberId, type Scope } from "effect"
import { BackendError, type DispatchError, type SessionLimitReached } from "../domain/GatewayError.js"
import { ErrorCode, isObject, isRequest, type JsonRpcErrorObject } from "../domain/JsonRpc.js"
import type { Identity } from "../domain/Identity.js"
import type { InstanceState } from "../instance/InstanceState.js"
import type { Connection } from "../transport/Connection.js"
import type { ClientSession } from "../sessions/ClientSession.js"
import { EndpointSession, type RequestRelay, type SessionAnswer } from "../sessions/EndpointSession.js"
import type { ServerNotice } from "../domain/JsonRpc.js"
import type { ExposureShape, View } from "../exposure/Exposure.js"
import type { Admission } from "../limits/RateLimiter.js"

/** One template behind an aggregate, with the prefix its tool and prompt names get. */
export interface AggregateMember {
  readonly template: string
  /** "" for none (a single template, or a template configured so). */
  readonly prefix: string
}

/** What an aggregate session needs of the gateway (AggregateSessions gives it). */
export interface AggregateDeps {
  /** The templates behind it now, in order (they follow the registry and the caller's scopes). */
  readonly members: () => ReadonlyArray<AggregateMember>
  /** Whether the session's caller may call a template now (its credential as the config stands). */
  readonly allowed: (template: string) => boolean
  /** Opens the session of one template for this client (as its own `initialize` would), with what its server can do. */
  readonly openMember: (template: string) => Effect.Effect<{ readonly session: ClientSession; readonly capabilities: unknown }, DispatchError | SessionLimitReached>
  readonly memberAlive: (session: ClientSession) => boolean
  readonly closeMember: (session: ClientSession) => Effect.Effect<void>
  /** The virtual server's own filters and transforms, over prefixed names. */
  readonly view: View | undefined
  readonly exposure: ExposureShape
  readonly separator: string
  readonly pageSize: number
  readonly listTimeout: Duration.Duration
  readonly maxListPages: number
  /** A template's rate limit, for this caller's requests to it. */
  readonly admit: (template: string) => Admission
  /** Of the client headers the endpoint passed on, those this template forwards (and the request id). */
  readonly headersFor: (template: string, headers: Readonly<Record<string, string>> | undefined) => Readonly<Record<string, string>> | undefined
  /** Logged once per distinct collision: the same prefixed name (or URI) from two templates. */
  readonly collision: (kind: string, name: string, kept: string, dropped: string) => void
  /** A template left out of a merged list (dead, slow, refusing). */
  readonly leftOut: (template: string, method: string, reason: string) => void
}

/** The lists an aggregate merges: the result's array, what an item is known by, and whether that is prefixed. */
const LISTS: Readonly<Record<string, { readonly key: string; readonly field: string; readonly prefixed: boolean; readonly filter: "tools" | "prompts" | "resources" }>> = {
  "tools/list": { key: "tools", field: "name", prefixed: true, filter: "tools" },
  "prompts/list": { key: "prompts", field: "name", prefixed: true, filter: "prompts" },
  "resources/list": { key: "resources", field: "uri", prefixed: false, filter: "resources" },
  "resources/templates/list": { key: "resourceTemplates", field: "uriTemplate", prefixed: false, filter: "resources" }
}

const LIST_OF_CHANGE: Readonly<Record<string, ReadonlyArray<string>>> = {
  "notifications/tools/list_changed": ["tools/list"],
  "notifications/prompts/list_changed": ["prompts/list"],
  "notifications/resources/list_changed": ["resources/list", "resources/templates/list"]
}

/** The levels of `logging/setLevel` (RFC 5424's, as MCP names them). */
const LOG_LEVELS: ReadonlySet<string> = new Set(["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"])

/** Where a merged list leaves out a template, in `_meta` (the list is whole otherwise). */
export const UNAVAILABLE_META = "mcp-gateway/unavailable"

/** How many merged lists a session keeps for paging (a client pages one list at a time). */
const SNAPSHOTS_KEPT = 8

interface Snapshot {
  readonly id: number
  readonly method: string
  readonly items: ReadonlyArray<unknown>
  /** Public name (or URI, or URI template) → the template that has it, and its own name there. */
  readonly index: ReadonlyMap<string, { readonly template: string; readonly name: string }>
  readonly unavailable: ReadonlyArray<{ readonly template: string; readonly error: string }>
  /** The templates it was merged from (a page of it is served only while the caller may call them all). */
  readonly templates: ReadonlyArray<string>
}

/** A member's answer that is not a result, carried to the client as it is. */
class Answered {
  constructor(readonly answer: SessionAnswer) {}
}

const refusal = (code: number, message: string) => new Answered({ _tag: "Answer", message: { error: { code, message } } })

const encodeCursor = (snapshot: number, offset: number) => Buffer.from(JSON.stringify([snapshot, offset])).toString("base64url")
const decodeCursor = (cursor: string): { readonly snapshot: number; readonly offset: number } | undefined => {
  try {
    const [snapshot, offset] = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"))
    return Number.isInteger(snapshot) && Number.isInteger(offset) && offset >= 0 ? { snapshot, offset } : undefined
  } catch {
    return undefined
  }
}

/** The literal start of a URI template (`file:///{path}` → `file:///`): what a URI must begin with to be one of its. */
const literalPrefix = (uriTemplate: string) => {
  const brace = uriTemplate.indexOf("{")
  return brace === -1 ? uriTemplate : uriTemplate.slice(0, brace)
}

/**
 * An MCP client's session with several templates at once (`/mcp`, `/mcp/v/{name}`). Behind it,
 * one ClientSession per template, opened on first need as the client's own `initialize` would
 * (so each server sees the client's capabilities, and its questions reach the client), each a
 * Dispatcher call like any other. Lists are fetched from every template at once (following
 * their pages), prefixed, filtered, merged and paged with cursors of the gateway's own; a
 * template that fails or is slow is left out and named in `_meta`. Calls go to the template
 * that owns the name (or URI). What servers say outside requests (list changes, resource
 * updates, log messages, their questions) reaches the client on its standing stream, or its
 * listen streams for a modern client.
 */
export class AggregateSession extends EndpointSession {
  private readonly opened = new Map<string, Deferred.Deferred<ClientSession, DispatchError | SessionLimitReached>>()
  private readonly snapshots = new Map<number, Snapshot>()
  private readonly latest = new Map<string, Snapshot>()
  private nextSnapshot = 1
  private readonly changedSoon = new Set<string>()
  /** The member sessions opened (to close with the aggregate). */
  readonly memberSessions = new Set<ClientSession>()
  /** The credential of the session's latest request (AggregateSessions.resolve): what it may call decides what it is served. */
  caller!: Identity
  /** `grantOf(caller)`: what the session was last authorized with. */
  grant!: string
  /** What each member's server said it can do (its `initialize` answer): a list it does not offer is not asked for. */
  private readonly capabilities = new Map<string, Record<string, unknown>>()

  constructor(
    id: string,
    key: string,
    protocolVersion: string,
    scope: Scope.CloseableScope,
    owner: string,
    now: number,
    /** What the client declared (capabilities, name), canonical. */
    private readonly declaration: string,
    private readonly deps: AggregateDeps
  ) {
    super(id, key, protocolVersion, scope, owner, now)
  }

  get instance(): InstanceState | undefined {
    return undefined
  }
  get backend(): Connection | undefined {
    return undefined
  }
  get backendDiscover(): Record<string, unknown> | undefined {
    return undefined
  }
  get backendLost(): boolean {
    return false
  }
  get canListen(): boolean {
    return true
  }


  request(method: string, params: Record<string, unknown> | undefined, relay: RequestRelay, headers?: Readonly<Record<string, string>>): Effect.Effect<SessionAnswer> {
    const routed = (sent: Record<string, unknown> | undefined) => this.route(method, sent, relay, headers)
    const caller = { id: this.owner, declaration: this.declaration }
    const work = this.deps.view === undefined ? routed(params) : this.deps.exposure.through(this.deps.view, method, params, caller, routed)
    return this.asking(relay, work).pipe(
      Effect.match({
        onSuccess: (result): SessionAnswer => ({ _tag: "Answer", message: { result } }),
        onFailure: (e): SessionAnswer => {
          if (e instanceof Answered) return e.answer
          switch (e._tag) {
            case "TransformFailed":
              return { _tag: "Failed", status: e.httpStatus, error: { code: e.rpcCode, message: e.message } }
            case "BackendError":
              return { _tag: "Answer", message: { error: e.error } }
            case "SessionLimitReached":
              // Every process slot of the template busy (or the gateway's cap): a 503, as a session of the template alone gets.
              return e.scope === "client"
                ? { _tag: "Failed", status: 429, error: { code: e.rpcCode, message: e.message }, headers: { "retry-after": "60" } }
                : { _tag: "Unavailable", message: e.message, retryAfterSeconds: e.retryAfterSeconds }
            case "NoHealthyInstance":
              return { _tag: "Unavailable", message: e.message, retryAfterSeconds: e.retryAfterSeconds }
            default:
              return { _tag: "Answer", message: { error: { code: e.rpcCode, message: e.message } } }
          }
        }
      })
    )
  }

  /** A client notification: every member that may care hears it (its roots changed, say). */
  notify(method: string, params: Record<string, unknown> | undefined): Effect.Effect<void> {
    return Effect.forEach(this.memberSessions, (member) => member.notify(method, params), { discard: true })
  }

  /**
   * What the caller's credential allows changed (a key narrowed or widened by a reload): lists
   * and pages made under the old grant are forgotten, and the client is told to list again.
   */
  grantChanged() {
    this.snapshots.clear()
    this.membershipChanged()
  }

  /** The templates behind the aggregate changed (a registration, a reload): the client's lists are stale. */
  membershipChanged() {
    for (const method of Object.keys(LISTS)) this.latest.delete(method)
    for (const change of Object.keys(LIST_OF_CHANGE)) this.emitSoon(change)
  }

  private route(method: string, params: Record<string, unknown> | undefined, relay: RequestRelay, headers: Readonly<Record<string, string>> | undefined): Effect.Effect<unknown, Answered | DispatchError | SessionLimitReached> {
    switch (method) {
      case "ping":
        return Effect.succeed({})
      case "tools/list":
      case "prompts/list":
      case "resources/list":
      case "resources/templates/list":
        return this.list(method, params)
      case "tools/call":
      case "prompts/get": {
        const kind = method === "tools/call" ? "tools/list" : "prompts/list"
        const unknown = method === "tools/call" ? "Unknown tool" : "Unknown prompt"
        if (typeof params?.name !== "string" || params.name === "") return Effect.fail(refusal(ErrorCode.InvalidParams, "Invalid params: name must be a non-empty string"))
        const name = params.name
        return Effect.flatMap(this.resolveName(kind, name), (target) =>
          target === undefined
            ? Effect.fail(refusal(ErrorCode.InvalidParams, `${unknown}: ${name}`))
            : this.call(target.template, method, { ...params, name: target.name }, relay, headers).pipe(
              // A template's refusal names its own name; the client knows the aggregate's.
              Effect.mapError((e) =>
                !(e instanceof Answered) && e._tag === "BackendError" && e.unknownName === target.name
                  ? new BackendError({ ...e, error: { ...e.error, message: `${unknown}: ${name}` }, unknownName: name })
                  : e
              )
            ))
      }
      case "resources/read":
      case "resources/subscribe":
      case "resources/unsubscribe": {
        if (typeof params?.uri !== "string" || params.uri === "") return Effect.fail(refusal(ErrorCode.InvalidParams, "Invalid params: uri must be a non-empty string"))
        const uri = params.uri
        return Effect.flatMap(this.resolveUri(uri), (template) =>
          template === undefined
            ? Effect.fail(refusal(ErrorCode.ResourceNotFound, `Resource not found: ${uri}`))
            : this.call(template, method, params, relay, headers))
      }
      case "completion/complete": {
        if (!isObject(params?.ref) || (params.ref.type !== "ref/prompt" && params.ref.type !== "ref/resource")) {
          return Effect.fail(refusal(ErrorCode.InvalidParams, "Invalid params: ref must be a ref/prompt or a ref/resource"))
        }
        const ref = params.ref
        if (ref.type === "ref/prompt") {
          const name = typeof ref.name === "string" ? ref.name : ""
          return Effect.flatMap(this.resolveName("prompts/list", name), (target) =>
            target === undefined
              ? Effect.fail(refusal(ErrorCode.InvalidParams, `Unknown prompt: ${name}`))
              : this.call(target.template, method, { ...params, ref: { ...ref, name: target.name } }, relay, headers))
        }
        const uri = typeof ref.uri === "string" ? ref.uri : ""
        return Effect.flatMap(this.resolveUri(uri), (template) =>
          template === undefined ? Effect.fail(refusal(ErrorCode.ResourceNotFound, `Resource not found: ${uri}`)) : this.call(template, method, params, relay, headers))
      }
      case "logging/setLevel": {
        if (!LOG_LEVELS.has(String(params?.level))) {
          return Effect.fail(refusal(ErrorCode.InvalidParams, `Invalid params: level must be one of ${Array.from(LOG_LEVELS).join(", ")}`))
        }
        // Every template's server that logs does so at the level asked.
        return Effect.as(
          Effect.forEach(this.deps.members(), (m) =>
            Effect.either(Effect.flatMap(this.member(m.template), () => this.offers(m.template, method) ? this.call(m.template, method, params, {}, headers) : Effect.void)), { concurrency: "unbounded", discard: true }),
          {}
        )
      }
      default:
        return Effect.fail(refusal(ErrorCode.MethodNotFound, `Method not found: ${method} (not served by an aggregate of templates)`))
    }
  }

  /** One request to one template's session, within its rate limit; a session that ended is opened again next time. */
  private call(template: string, method: string, params: Record<string, unknown> | undefined, relay: RequestRelay, headers: Readonly<Record<string, string>> | undefined) {
    return Effect.gen(this, function*() {
      // Checked at every call, whatever a list said before: the credential may have lost the template since.
      if (!this.deps.allowed(template)) {
        return yield* Effect.fail(refusal(ErrorCode.InvalidParams, `template "${template}" is not served to this credential`))
      }
      const admission = this.deps.admit(template)
      const decision = admission instanceof Promise ? yield* Effect.promise(() => admission) : admission
      if (!decision.allowed) {
        return yield* Effect.fail(new Answered({
          _tag: "Failed",
          status: 429,
          // As the front gate answers a limited request: -32000 and the RateLimit headers.
          error: { code: -32000, message: `Too Many Requests: the rate limit of template "${template}" is reached; retry after ${decision.retryAfterSeconds}s` },
          headers: {
            "retry-after": String(decision.retryAfterSeconds),
            ...(decision.limit === undefined ? {} : {
              "ratelimit-limit": String(decision.limit),
              "ratelimit-remaining": String(decision.remaining),
              "ratelimit-reset": String(decision.resetSeconds)
            })
          }
        }))
      }
      const session = yield* this.member(template)
      const answer = yield* session.request(method, params, relay, this.deps.headersFor(template, headers))
      if (answer._tag === "Gone") {
        this.opened.delete(template)
        this.memberSessions.delete(session)
        yield* this.deps.closeMember(session)
        return yield* Effect.fail(refusal(ErrorCode.InternalError, `template "${template}": ${answer.message}; try again`))
      }
      if (answer._tag !== "Answer") return yield* Effect.fail(new Answered(answer))
      if ("error" in answer.message) return yield* new BackendError({ template, instanceId: "", error: answer.message.error })
      return answer.message.result
    })
  }

  /** The member session of a template, opened once (concurrent requests wait for the same opening). */
  private member(template: string): Effect.Effect<ClientSession, DispatchError | SessionLimitReached> {
    return Effect.suspend(() => {
      const known = this.opened.get(template)
      if (known !== undefined) {
        return Effect.flatMap(Deferred.await(known), (session) => {
          if (this.deps.memberAlive(session)) return Effect.succeed(session)
          this.memberSessions.delete(session)
          if (this.opened.get(template) === known) this.opened.delete(template)
          return this.member(template)
        })
      }
      const opening = Deferred.unsafeMake<ClientSession, DispatchError | SessionLimitReached>(FiberId.none)
      this.opened.set(template, opening)
      return this.deps.openMember(template).pipe(
        Effect.map(({ capabilities, session }) => {
          this.capabilities.set(template, isObject(capabilities) ? capabilities : {})
          this.follow(session)
          return session
        }),
        Effect.onExit((exit) =>
          Effect.suspend(() => {
            // A failed opening is not remembered: the next request tries again.
            if (exit._tag === "Failure" && this.opened.get(template) === opening) this.opened.delete(template)
            return Deferred.done(opening, exit)
          })
        )
      )
    })
  }

  /** What a member's server says outside requests reaches this session's client. */
  private follow(member: ClientSession) {
    member.heldByAggregate = true
    member.holder = this
    this.memberSessions.add(member)
    const fromServer = (message: ServerNotice & { readonly id?: unknown }) => {
      if (isRequest(message)) {
        // A question outside any request (roots/list on the standing stream): relayed under this session's ids.
        const relayedId = message.id
        return void this.relayServerRequest(message, (response) => void member.answerServerRequest({ ...response, id: relayedId as string }), (m) => this.outbox.push(m))
      }
      const stale = LIST_OF_CHANGE[message.method]
      if (stale !== undefined) {
        for (const method of stale) this.latest.delete(method)
        return this.emitSoon(message.method)
      }
      this.emit(message)
    }
    if (this.servesModernClient) member.listeners.add(fromServer)
    else member.outbox.attach((_, message) => fromServer(message as ServerNotice))
  }

  private emit(message: ServerNotice) {
    const notification = { jsonrpc: "2.0", method: message.method, ...(message.params === undefined ? {} : { params: message.params }) }
    if (this.servesModernClient) this.tellListeners(notification)
    else this.outbox.push(notification)
  }

  /** List changes of several templates at once reach the client once. */
  private emitSoon(method: string) {
    if (this.changedSoon.has(method)) return
    this.changedSoon.add(method)
    // raw timer: 20 ms that gather the list changes of several templates into one notification;
    // no state of the gateway's depends on it.
    setTimeout(() => {
      this.changedSoon.delete(method)
      this.emit({ method })
    }, 20).unref()
  }

  private list(method: string, params: Record<string, unknown> | undefined): Effect.Effect<unknown, Answered> {
    const spec = LISTS[method]!
    const cursor = params?.cursor
    if (cursor !== undefined) {
      const position = typeof cursor === "string" ? decodeCursor(cursor) : undefined
      const snapshot = position === undefined ? undefined : this.snapshots.get(position.snapshot)
      if (position === undefined || snapshot === undefined || snapshot.method !== method || snapshot.templates.some((t) => !this.deps.allowed(t))) {
        return Effect.fail(refusal(ErrorCode.InvalidParams, "Invalid params: unknown or expired cursor (list again from the start)"))
      }
      return Effect.succeed(this.page(spec.key, snapshot, position.offset))
    }
    return Effect.map(this.merge(method), (snapshot) => this.page(spec.key, snapshot, 0))
  }

  private page(key: string, snapshot: Snapshot, offset: number) {
    const end = offset + this.deps.pageSize
    return {
      [key]: snapshot.items.slice(offset, end),
      ...(end < snapshot.items.length ? { nextCursor: encodeCursor(snapshot.id, end) } : {}),
      ...(snapshot.unavailable.length === 0 ? {} : { _meta: { [UNAVAILABLE_META]: snapshot.unavailable } })
    }
  }

  /** Every member's whole list, at once, prefixed and filtered; the first of two items of one name wins (and the collision is logged). */
  private merge(method: string): Effect.Effect<Snapshot> {
    const spec = LISTS[method]!
    const members = this.deps.members()
    return Effect.map(
      Effect.forEach(members, (m) =>
        this.fetchAll(m.template, method, spec.key).pipe(
          Effect.timeoutFail({ duration: this.deps.listTimeout, onTimeout: () => `no answer within the list timeout` }),
          Effect.either
        ), { concurrency: "unbounded" }),
      (results) => {
        const items: Array<unknown> = []
        const index = new Map<string, { template: string; name: string }>()
        const unavailable: Array<{ template: string; error: string }> = []
        const filter = this.deps.view?.[spec.filter]
        results.forEach((result, i) => {
          const member = members[i]!
          if (Either.isLeft(result)) {
            unavailable.push({ template: member.template, error: result.left })
            this.deps.leftOut(member.template, method, result.left)
            return
          }
          for (const item of result.right) {
            if (!isObject(item) || typeof item[spec.field] !== "string") continue
            const own = item[spec.field] as string
            const known = spec.prefixed && member.prefix !== "" ? `${member.prefix}${this.deps.separator}${own}` : own
            if (filter !== undefined && !filter.allows(known)) continue
            const taken = index.get(known)
            if (taken !== undefined) {
              this.deps.collision(spec.key, known, taken.template, member.template)
              continue
            }
            index.set(known, { template: member.template, name: own })
            items.push(known === own ? item : { ...item, [spec.field]: known })
          }
        })
        const snapshot: Snapshot = { id: this.nextSnapshot++, method, items, index, unavailable, templates: members.map((m) => m.template) }
        this.snapshots.set(snapshot.id, snapshot)
        if (this.snapshots.size > SNAPSHOTS_KEPT) this.snapshots.delete(this.snapshots.keys().next().value!)
        this.latest.set(method, snapshot)
        return snapshot
      }
    )
  }

  /** One member's list, every page. A failure is the reason it is left out. */
  private fetchAll(template: string, method: string, key: string): Effect.Effect<ReadonlyArray<unknown>, string> {
    return Effect.gen(this, function*() {
      // A server that does not offer the list has none: nothing to ask, nothing missing.
      yield* this.member(template)
      if (!this.offers(template, method)) return []
      const items: Array<unknown> = []
      let cursor: unknown = undefined
      for (let pages = 0;; pages++) {
        if (pages >= this.deps.maxListPages) return yield* Effect.fail(`more than ${this.deps.maxListPages} pages (max_list_pages)`)
        const page = yield* this.call(template, method, cursor === undefined ? undefined : { cursor }, {}, undefined)
        const list = isObject(page) ? page[key] : undefined
        if (Array.isArray(list)) items.push(...list)
        cursor = isObject(page) ? page.nextCursor : undefined
        if (typeof cursor !== "string" || cursor === "") return items
      }
    }).pipe(
      Effect.catchIf((e) => typeof e !== "string" && e instanceof Object && "_tag" in e && e._tag === "BackendError" && e.error.code === ErrorCode.MethodNotFound, () => Effect.succeed([])),
      Effect.mapError((e) => typeof e === "string" ? e : describeFailure(e))
    )
  }

  /** Whether a member's server offers what a method asks for (its capabilities; unknown ones are asked). */
  private offers(template: string, method: string): boolean {
    const capabilities = this.capabilities.get(template)
    if (capabilities === undefined) return true
    const needed = method.startsWith("tools/") ? "tools" : method.startsWith("prompts/") ? "prompts" : method.startsWith("resources/") ? "resources" : method === "logging/setLevel" ? "logging" : method === "completion/complete" ? "completions" : undefined
    return needed === undefined || needed in capabilities
  }

  /** The template and own name of a prefixed tool or prompt name: from the latest list, else by its prefix. */
  private resolveName(list: string, name: string): Effect.Effect<{ readonly template: string; readonly name: string } | undefined> {
    // Several templates without a prefix: only their lists can tell whose a bare name is.
    const bare = this.deps.members().filter((m) => m.prefix === "").length
    if (bare > 1 && this.latest.get(list)?.index.get(name) === undefined) {
      return Effect.flatMap(this.merge(list), () => this.resolveNameNow(list, name))
    }
    return this.resolveNameNow(list, name)
  }

  private resolveNameNow(list: string, name: string): Effect.Effect<{ readonly template: string; readonly name: string } | undefined> {
    return Effect.sync(() => {
      const known = this.latest.get(list)?.index.get(name)
      if (known !== undefined) return known
      const members = this.deps.members()
      const prefixed = members.filter((m) => m.prefix !== "").sort((a, b) => b.prefix.length - a.prefix.length)
      for (const m of prefixed) {
        const start = `${m.prefix}${this.deps.separator}`
        if (name.startsWith(start) && name.length > start.length) return { template: m.template, name: name.slice(start.length) }
      }
      const bare = members.filter((m) => m.prefix === "")
      return bare.length === 1 ? { template: bare[0]!.template, name } : undefined
    }).pipe(Effect.map((found) => {
      // A name the view hides is unknown, however it is spelt.
      const filter = this.deps.view?.[list === "tools/list" ? "tools" : "prompts"]
      return found !== undefined && filter !== undefined && !filter.allows(name) ? undefined : found
    }))
  }

  /** The template of a resource URI: from the latest lists (resources, then templates by their literal start), listing them first if need be. */
  private resolveUri(uri: string): Effect.Effect<string | undefined> {
    const lookup = () => {
      const direct = this.latest.get("resources/list")?.index.get(uri)
      if (direct !== undefined) return direct.template
      let best: { template: string; length: number } | undefined
      for (const [uriTemplate, owner] of this.latest.get("resources/templates/list")?.index ?? []) {
        const start = literalPrefix(uriTemplate)
        if (start !== "" && uri.startsWith(start) && (best === undefined || start.length > best.length)) best = { template: owner.template, length: start.length }
      }
      if (best !== undefined) return best.template
      const members = this.deps.members()
      return members.length === 1 ? members[0]!.template : undefined
    }
    return Effect.suspend(() => {
      const found = lookup()
      if (found !== undefined || (this.latest.has("resources/list") && this.latest.has("resources/templates/list"))) return Effect.succeed(found)
      return Effect.map(Effect.all([this.merge("resources/list"), this.merge("resources/templates/list")], { concurrency: 2 }), lookup)
    })
  }
}

const describeFailure = (e: Answered | DispatchError | SessionLimitReached): string => {
  if (e instanceof Answered) {
    const a = e.answer
    switch (a._tag) {
      case "Answer":
        return "error" in a.message ? a.message.error.message : "an unexpected answer"
      case "Failed":
        return a.error.message
      case "Gone":
      case "Unavailable":
        return a.message
    }
  }
  if (e._tag === "BackendError") return (e.error as JsonRpcErrorObject).message
  return e.message
}
