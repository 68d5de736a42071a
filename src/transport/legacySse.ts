import { Effect } from "effect"
import * as http from "node:http"
import * as https from "node:https"
import type { InstanceDefinition } from "../domain/Instance.js"
import { parseServerMessage, tooDeepMessage } from "../domain/jsonText.js"
import { resolveHeaders } from "../domain/Secret.js"
import type { ConnectionEnv, ConnectionLog } from "./Connection.js"
import { type ChannelListener, Multiplexer } from "./Multiplexer.js"
import { makeSharedChannelConnection, type SessionChannelOptions, type SharedChannelConnection } from "./SharedChannel.js"
import { makeSseParser } from "./sse.js"
import { NEVER_SENT_ERRORS, reasonOfCode, TransportError, type TransportErrorReason } from "./TransportError.js"

type SseInstance = Extract<InstanceDefinition, { transport: "sse" }>


/**
 * One legacy HTTP+SSE session (protocol 2024-11-05): the server's messages arrive on a GET
 * stream, whose first `endpoint` event names the URL every client message is POSTed to.
 */
class SseChannel extends Multiplexer {
  initializeResult: Record<string, unknown> = {}
  postUrl: URL | undefined
  stream: http.ClientRequest | undefined

  constructor(
    instanceId: string,
    log: ConnectionLog,
    listeners: ReadonlySet<ChannelListener>,
    private readonly client: typeof http | typeof https,
    private readonly agent: http.Agent,
    private readonly headers: Record<string, string>,
    exclusive: boolean
  ) {
    super(instanceId, log, listeners, exclusive)
  }

  protected send(text: string, failed: (error: TransportError) => void): boolean {
    if (this.postUrl === undefined) return false
    const req = this.client.request(
      this.postUrl,
      { method: "POST", agent: this.agent, headers: { ...this.headers, "content-type": "application/json" } },
      (res) => {
        res.resume()
        const status = res.statusCode ?? 0
        if (status < 200 || status >= 300) {
          failed(new TransportError({ instanceId: this.instanceId, reason: "http_status", message: `HTTP ${status} on POST ${this.postUrl}`, reachedBackend: true }))
        }
      }
    )
    req.on("error", (e: NodeJS.ErrnoException) =>
      failed(new TransportError({ instanceId: this.instanceId, reason: reasonOfCode(e.code), message: `${e.code ?? "error"}: ${e.message}`, reachedBackend: !NEVER_SENT_ERRORS.has(e.code ?? "") })))
    req.end(text)
    return true
  }
}

/**
 * The backend transport `"sse"`, for servers that only speak the legacy HTTP+SSE transport.
 * `endpoint` is the SSE URL (e.g. `http://host:3001/sse`). Like stdio, one channel per instance
 * is shared by every caller, with ids and progress tokens rewritten per request.
 */
export const makeLegacySseConnection = (
  instance: SseInstance,
  env: ConnectionEnv,
  options: SessionChannelOptions = {}
): SharedChannelConnection => {
  const log = env.log
  const url = new URL(instance.endpoint)
  const client = url.protocol === "https:" ? https : http
  const agent = new client.Agent({ keepAlive: true, maxSockets: 64 })
  // The instance's own headers, secrets read from the environment once.
  const headers = resolveHeaders(instance.headers)

  const open = (listeners: ReadonlySet<ChannelListener>) =>
    Effect.async<SseChannel, TransportError>((resume) => {
      const channel = new SseChannel(instance.id, log, listeners, client, agent, headers, options.forSession !== undefined)
      let opened = false
      const fail = (reason: TransportErrorReason, message: string, reachedBackend: boolean) => {
        channel.failAll(message)
        if (!opened) {
          opened = true
          resume(Effect.fail(new TransportError({ instanceId: instance.id, reason, message, reachedBackend })))
        }
      }
      // The stream lives as long as the channel: it gets a connection of its own, outside the pool.
      const req = client.request(url, { method: "GET", headers: { ...headers, accept: "text/event-stream" } }, (res) => {
        if (res.statusCode !== 200) {
          res.resume()
          return fail("http_status", `HTTP ${res.statusCode} on GET ${url}`, false)
        }
        res.setEncoding("utf8")
        res.on("data", makeSseParser((event) => {
          if (event.event === "endpoint") {
            // Only on the SSE URL's origin, as the official SDK's SSE client insists: an endpoint
            // elsewhere would have the gateway POST (with this instance's headers, its credentials)
            // to any address the backend names, past registration_deny.
            const postUrl = URL.canParse(event.data, url.href) ? new URL(event.data, url) : undefined
            if (postUrl === undefined || postUrl.origin !== url.origin) {
              req.destroy()
              return fail("protocol", `the endpoint event names ${postUrl === undefined ? "no valid URL" : `another origin (${postUrl.origin})`} than the SSE stream's (${url.origin})`, true)
            }
            channel.postUrl = postUrl
            if (!opened) {
              opened = true
              resume(Effect.succeed(channel))
            }
            return
          }
          if (event.event !== "message") return
          const parsed = parseServerMessage(event.data)
          if (parsed.ok) channel.receive(parsed.value)
          else if (parsed.reason === "not JSON") log.debug("ignoring an SSE event that is not JSON")
          else log.warn(`dropped a message: ${tooDeepMessage}`)
        }))
        res.on("end", () => fail("reset", "the SSE stream ended", true))
        res.on("error", (e) => fail("reset", `the SSE stream failed: ${e.message}`, true))
      })
      req.on("error", (e: NodeJS.ErrnoException) => fail(opened ? "reset" : reasonOfCode(e.code), `${e.code ?? "error"}: ${e.message}`, opened || !NEVER_SENT_ERRORS.has(e.code ?? "")))
      req.end()
      channel.stream = req
      return Effect.sync(() => req.destroy())
    })

  const connection = makeSharedChannelConnection(env, {
    instanceId: instance.id,
    start: open,
    initializeParams: options.forSession?.initializeParams,
    stop: async (channel) => {
      channel.failAll("connection closed")
      channel.stream?.destroy()
    }
  })
  return {
    ...connection,
    close: connection.close.pipe(Effect.ensuring(Effect.sync(() => agent.destroy())))
  }
}
