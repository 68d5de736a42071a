import { Effect, type Scope } from "effect"
import { isNotification, isObject, type JsonRpcResponse } from "../domain/JsonRpc.js"
import { parseServerMessage } from "../domain/jsonText.js"
import { collectToolHeaders, isInputRequired, type ToolHeaders } from "../domain/ModernProtocol.js"
import type { Connection, ConnectionLog, RequestDeadline, RequestOptions } from "./Connection.js"
import type { Http1Exchange, Http1Handler } from "./Http1Exchange.js"
import type { ModernSession } from "./HttpSession.js"
import { acquireLean } from "./acquireLean.js"
import { asLegacyResponse, listenFilterOf, routingHeaders, untagged, withEnvelope } from "./modernBackend.js"
import { makeSseParser } from "./sse.js"
import type { RequestTimeout, TransportError } from "./TransportError.js"

const NO_TOOL_HEADERS: ToolHeaders = new Map()
const NO_RESOURCES: ReadonlySet<string> = new Set()

/** Rounds of input a modern server may ask for within one request of an old client (as the SDK's clients allow). */
const MAX_INPUT_ROUNDS = 10

/** What a ModernServer needs of its HTTP connection (http.ts). */
export interface ModernLink {
  readonly log: ConnectionLog
  /** One POST on the session, answered. */
  readonly send: (
    s: ModernSession,
    method: string,
    params: Record<string, unknown> | undefined,
    options: RequestOptions | undefined
  ) => Effect.Effect<JsonRpcResponse, TransportError | RequestTimeout>
  /** `effect`, failed with a RequestTimeout when the request's deadline passes first. */
  readonly withinDeadline: <A, E>(effect: Effect.Effect<A, E>, deadline: RequestDeadline | undefined) => Effect.Effect<A, E | RequestTimeout>
  /** POSTs `body` on the session with these routing headers, its answer read by `handler` (a standing stream). */
  readonly stream: (s: ModernSession, routing: Record<string, string>, body: string, handler: Http1Handler) => Http1Exchange
  readonly closed: () => boolean
  /** A request id of the connection's. */
  readonly nextId: () => number
}

/**
 * What an HTTP connection keeps for a server of the 2026-07-28 revision, which has no session:
 * what the revision moved out of the session (the log level an old client set, its resource
 * subscriptions, the tool arguments the server mirrors in headers), the requests of old-generation
 * callers done the revision's way, and the standing `subscriptions/listen` stream.
 */
export class ModernServer {
  /** The level an old client set with logging/setLevel, sent in every envelope (the revision's way). */
  logLevel: string | undefined = undefined
  /** Resources an old client subscribed to: the standing listen stream asks for their updates. */
  private subscribedResources: Set<string> | undefined = undefined
  /** Reopens the standing listen stream with the current filter (set while one runs); `ready` once the server acknowledged it. */
  private refilter: ((ready: () => void) => void) | undefined = undefined
  /** Tool arguments the server mirrors in headers; loaded before the first tools/call, reloaded when stale. */
  toolHeaders: Map<string, Array<{ readonly path: ReadonlyArray<string>; readonly header: string }>> | undefined = undefined
  private toolHeadersFresh = false

  constructor(private readonly link: ModernLink) {}

  /** A request to a modern server, its answer shaped for the caller's generation. */
  request(s: ModernSession, method: string, params: Record<string, unknown> | undefined, options: RequestOptions | undefined) {
    const sent = options?.onCacheHints === undefined ? this.modernRequest(s, method, params, options) : Effect.tap(this.modernRequest(s, method, params, options), (r) => this.reportCacheHints(r, options.onCacheHints!))
    return options?.passInputRequired === true ? sent : Effect.map(sent, asLegacyResponse)
  }

  private answered(result: Record<string, unknown>): JsonRpcResponse {
    return ({ jsonrpc: "2.0", id: 0, result })
  }

  /** A complete answer's caching hints, as the server gave them. */
  private reportCacheHints(response: JsonRpcResponse, report: NonNullable<RequestOptions["onCacheHints"]>) {
    const result = "result" in response ? response.result : undefined
    if (typeof result !== "object" || result === null) return
    const { cacheScope, resultType, ttlMs } = result as Record<string, unknown>
    if ((resultType === undefined || resultType === "complete") && typeof ttlMs === "number" && ttlMs > 0) {
      report({ ttlMs, cacheScope: cacheScope === "public" ? "public" : "private" })
    }
  }

  private refused(code: number, message: string): JsonRpcResponse {
    return ({ jsonrpc: "2.0", id: 0, error: { code, message } })
  }

  /**
   * A request of an old-generation caller (an old client's session, the REST face, a health
   * probe) to a modern server, and a modern client's request passed on. What the revision
   * removed is done the revision's way: `ping` is a `server/discover`, `logging/setLevel` a
   * level in every later envelope, resource subscriptions a filter of the standing listen stream.
   * A server that asks for input gets it from whoever can answer (see fulfil).
   */
  private modernRequest(
    s: ModernSession,
    method: string,
    params: Record<string, unknown> | undefined,
    options: RequestOptions | undefined
  ): Effect.Effect<JsonRpcResponse, TransportError | RequestTimeout> {
    switch (method) {
      case "ping":
        return Effect.map(this.link.send(s, "server/discover", undefined, options), (r) => ("error" in r ? r : this.answered({})))
      case "logging/setLevel":
        return Effect.sync(() => {
          this.logLevel = typeof params?.level === "string" ? params.level : undefined
          return this.answered({})
        })
      case "resources/subscribe":
      case "resources/unsubscribe":
        return Effect.sync((): JsonRpcResponse | undefined => {
          const resources = isObject(s.initializeResult.capabilities) ? s.initializeResult.capabilities.resources : undefined
          if (!isObject(resources) || resources.subscribe !== true) return this.refused(-32601, "Method not found")
          if (typeof params?.uri !== "string") return this.refused(-32602, "Invalid params: uri is required")
          if (method === "resources/subscribe") (this.subscribedResources ??= new Set()).add(params.uri)
          else this.subscribedResources?.delete(params.uri)
          return undefined
        }).pipe(Effect.flatMap((refusal) =>
          refusal !== undefined
            ? Effect.succeed(refusal)
            // Answered once the stream that carries the resource's updates is acknowledged
            // (or could not be opened): an update published right after is not lost.
            : Effect.async<JsonRpcResponse>((resume) => {
              const done = () => resume(Effect.succeed(this.answered({})))
              if (this.refilter === undefined) done()
              else this.refilter(done)
            }).pipe(Effect.timeout("5 seconds"), Effect.orElseSucceed(() => this.answered({})))
        ))
      case "tools/call": {
        // A modern client's own headers go as they are: the server checks them, not the gateway.
        if (options?.clientParamHeaders !== undefined) {
          return Effect.flatMap(this.link.send(s, method, params, options), (r) => this.fulfil(s, method, params, r, options, 1))
        }
        // Its arguments may be mirrored in headers, which the server checks: know which first.
        const call = this.link.send(s, method, params, options).pipe(
          Effect.flatMap((r) =>
            "error" in r && r.error.code === -32020
              // The tool changed since the list was read (SEP-2243): read it again, once.
              ? Effect.zipRight(this.loadToolHeaders(s, options), this.link.send(s, method, params, options))
              : Effect.succeed(r)
          )
        )
        const ready = this.toolHeadersFresh ? call : Effect.zipRight(this.loadToolHeaders(s, options), call)
        return Effect.flatMap(ready, (r) => this.fulfil(s, method, params, r, options, 1))
      }
      default:
        return Effect.flatMap(this.link.send(s, method, params, options), (r) => {
          if (method === "tools/list" && "result" in r && isObject(r.result)) collectToolHeaders(r.result.tools, (this.toolHeaders ??= new Map()))
          return this.fulfil(s, method, params, r, options, 1)
        })
    }
  }

  /** Reads the server's whole tool list for the arguments it mirrors in headers (a failure leaves what is known). */
  private loadToolHeaders(s: ModernSession, options: RequestOptions | undefined) {
    const self = this
    return Effect.gen(function*() {
      let cursor: unknown = undefined
      for (let page = 0; page < 100; page++) {
        const r = yield* self.link.send(s, "tools/list", cursor === undefined ? undefined : { cursor }, { deadline: options?.deadline, headers: options?.headers })
        if (!("result" in r) || !isObject(r.result)) return
        collectToolHeaders(r.result.tools, (self.toolHeaders ??= new Map()))
        cursor = r.result.nextCursor
        if (typeof cursor !== "string") break
      }
      self.toolHeadersFresh = true
    }).pipe(Effect.catchAll(() => Effect.void))
  }

  /**
   * A modern server's `input_required` result, for a caller that takes server requests (an
   * old client's session): each input request is asked as the old server→client request it
   * stands for, and the request is sent again with the answers (`inputResponses`) and the
   * server's `requestState`, untouched, until the server completes it. A modern client's own
   * request (`passInputRequired`), and a caller that cannot answer, get the result as it is.
   */
  private fulfil(
    s: ModernSession,
    method: string,
    params: Record<string, unknown> | undefined,
    response: JsonRpcResponse,
    options: RequestOptions | undefined,
    round: number
  ): Effect.Effect<JsonRpcResponse, TransportError | RequestTimeout> {
    const ask = options?.onServerRequest
    if (!("result" in response) || !isInputRequired(response.result) || ask === undefined || options?.passInputRequired === true) {
      return Effect.succeed(response)
    }
    if (round > MAX_INPUT_ROUNDS) return Effect.succeed(this.refused(-32603, `the server asked for input more than ${MAX_INPUT_ROUNDS} times`))
    const result = response.result
    const requests = isObject(result.inputRequests) ? Object.entries(result.inputRequests) : []
    const answers = Effect.forEach(
      requests,
      ([key, request]) =>
        Effect.async<readonly [string, JsonRpcResponse]>((resume) => {
          const r = isObject(request) ? request : {}
          ask(
            { jsonrpc: "2.0", id: key, method: String(r.method), ...(isObject(r.params) ? { params: r.params } : {}) },
            (answer) => resume(Effect.succeed([key, answer] as const))
          )
        }),
      { concurrency: "unbounded" }
    )
    return Effect.flatMap(this.link.withinDeadline(answers, options?.deadline), (pairs) => {
      const failed = pairs.find(([, answer]) => "error" in answer)
      if (failed !== undefined) return Effect.succeed(failed[1])
      const inputResponses: Record<string, unknown> = {}
      for (const [key, answer] of pairs) inputResponses[key] = "result" in answer ? answer.result : {}
      const retry: Record<string, unknown> = { ...params, inputResponses }
      if (typeof result.requestState === "string") retry.requestState = result.requestState
      else delete retry.requestState
      return Effect.flatMap(this.link.send(s, method, retry, options), (next) => this.fulfil(s, method, params, next, options, round + 1))
    })
  }

  /**
   * A modern server's standing stream: `subscriptions/listen` for every list it says changes and
   * the resources subscribed through this connection, its events passed on without the
   * subscription tag. Reopened when it ends (the server closed it, or the connection broke) and
   * when the subscribed resources change: the new stream replaces the old once acknowledged, so
   * nothing falls between them.
   */
  listen(
    s: ModernSession,
    onMessage: Parameters<Connection["listen"]>[0]
  ): Effect.Effect<void, never, Scope.Scope> {
    let stopped = false
    let current: Http1Exchange | undefined
    let reconnect: ReturnType<typeof setTimeout> | undefined
    const later = (exchange: Http1Exchange) => {
      if (stopped || current !== exchange) return
      if (reconnect !== undefined) clearTimeout(reconnect)
      // raw timer: a second before the socket of a dropped stream opens again (real time).
      reconnect = setTimeout(() => open(), 1000)
    }
    const open = (ready?: () => void) => {
      let readied = false
      const isReady = () => {
        if (!readied) {
          readied = true
          ready?.()
        }
      }
      if (stopped || this.link.closed()) return isReady()
      const previous = current
      const filter = listenFilterOf(s.initializeResult.capabilities, this.subscribedResources ?? NO_RESOURCES)
      if (Object.keys(filter).length === 0) {
        current = undefined
        previous?.abort()
        return isReady()
      }
      const params = withEnvelope({ notifications: filter }, s.envelope, this.logLevel)
      const body = JSON.stringify({ jsonrpc: "2.0", id: `gateway-listen-${this.link.nextId()}`, method: "subscriptions/listen", params })
      let feed: ((chunk: string) => void) | undefined
      let refused = false
      const exchange: Http1Exchange = this.link.stream(s, routingHeaders("subscriptions/listen", params, this.toolHeaders ?? NO_TOOL_HEADERS), body, {
        onHead: (head) => {
          if (head.status !== 200 || !(head.headers["content-type"] ?? "").startsWith("text/event-stream")) {
            refused = true
            this.link.log.debug(`subscriptions/listen refused: HTTP ${head.status}`)
            return isReady()
          }
          feed = makeSseParser((event) => {
            if (event.event !== "message" || event.data === "" || current !== exchange) return
            const parsed = parseServerMessage(event.data)
            if (!parsed.ok) return this.link.log.debug(`ignoring a listen-stream event: ${parsed.reason}`)
            const message = parsed.value
            if (!isNotification(message)) return
            if (message.method === "notifications/subscriptions/acknowledged") {
              // The new stream carries everything now: the one it replaces can go.
              if (previous !== undefined && previous !== exchange) previous.abort()
              return isReady()
            }
            if (message.method === "notifications/tools/list_changed") this.toolHeadersFresh = false
            const params = untagged(message.params)
            onMessage(params === undefined ? { jsonrpc: "2.0", method: message.method } : { jsonrpc: "2.0", method: message.method, params })
          })
        },
        onData: (chunk) => feed?.(chunk),
        // A stream the server ends, or one whose connection breaks: listen again.
        onEnd: () => {
          isReady()
          if (!refused) later(exchange)
        },
        onError: () => {
          isReady()
          if (!refused) later(exchange)
        }
      })
      current = exchange
    }
    return acquireLean(
      () => {
        this.refilter = open
        open()
      },
      () =>
        Effect.sync(() => {
          stopped = true
          if (this.refilter === open) this.refilter = undefined
          if (reconnect !== undefined) clearTimeout(reconnect)
          current?.abort()
        })
    ).pipe(Effect.asVoid)
  }
}
