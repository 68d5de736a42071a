import { Context, Effect, Layer } from "effect"
import { createHash } from "node:crypto"
import { DEFAULT_LIMITS, GatewayConfig } from "../config/GatewayConfig.js"
import { FleetRedis } from "./FleetRedis.js"

export interface EndedSessionsShape {
  /**
   * Whether a session id was ended (DELETE, idle timeout) here or on another replica, and its
   * seal not expired yet: such an id is never taken over again. Consulted only when a replica
   * is about to take over an id it does not hold (never on the request path of a session it holds).
   */
  readonly isEnded: (id: string, expiresAt: number) => boolean
  /**
   * Ends an id for good: remembered here until `expiresAt` (its seal's expiry, after which the
   * id opens to nothing anyway), and pushed to every other replica through the fleet's Redis.
   */
  readonly end: (id: string, expiresAt: number) => void
  /** Called with every id another replica ended: its copy here must go (without ending it at the backend). */
  readonly onEndedElsewhere: (handler: (id: string) => void) => void
  /**
   * Whether this replica should tell the others that a session it holds is in use (at most once
   * a quarter of its idle timeout, and only with a fleet): `touch` then does. So a copy another
   * replica holds, whose requests now come here, does not idle out there and end the session.
   */
  readonly shouldTouch: boolean
  readonly touch: (id: string) => void
  /** Called with every id another replica said is in use: this one's copy is not idle. */
  readonly onTouchedElsewhere: (handler: (id: string) => void) => void
  /** How many ended ids are remembered now. */
  readonly size: () => number
}

/** A fixed-size key for an id (an id is up to 511 bytes; 16 bytes of its digest are enough to tell ids apart). */
const digestOf = (id: string) => createHash("sha256").update(id).digest().subarray(0, 16).toString("base64url")

/**
 * The ids of ended sessions, so that an ended session stays ended on every replica: a sealed id
 * opens on any replica with the keys, so without this a DELETE or an idle timeout would be
 * undone by the next request that names the id (it would be taken over from its seal).
 *
 * Each replica keeps the ids itself (a map of digests to expiries, bounded by
 * `gateway.max_ended_sessions`); the fleet's Redis, when there is one, carries them to the
 * others as they end (pub/sub: pushed, never asked for on the request path) and keeps them in a
 * sorted set by expiry, which a replica reads when it (re)connects, to catch up. Full, the map
 * forgets the ids that expire first and refuses, from then on, every id that expires no later
 * than the last one forgotten (a replica may then refuse to take over some live sessions, whose
 * clients initialize again: it never serves an ended one).
 */
export class EndedSessions extends Context.Tag("mcp-gateway/EndedSessions")<EndedSessions, EndedSessionsShape>() {
  static readonly layer: Layer.Layer<EndedSessions, never, GatewayConfig | FleetRedis> = Layer.scoped(
    EndedSessions,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const fleet = yield* FleetRedis
      const clock = yield* Effect.clock
      const now = () => clock.unsafeCurrentTimeMillis()
      const max = config.gateway.maxEndedSessions ?? DEFAULT_LIMITS.maxEndedSessions
      const channel = `${fleet.prefix}sessions:ended`
      const key = `${fleet.prefix}sessions:ended`

      /** digest → expiry (epoch ms). */
      const ended = new Map<string, number>()
      /** Ids that expire no later than this are taken as ended (what a full map forgot). */
      let floor = 0
      const handlers: Array<(id: string) => void> = []
      const touchHandlers: Array<(id: string) => void> = []
      const touchChannel = `${fleet.prefix}sessions:touched`

      const prune = () => {
        const t = now()
        for (const [digest, expiresAt] of ended) if (expiresAt <= t) ended.delete(digest)
        if (ended.size < max) return
        // Still full: forget the earliest to expire, and refuse everything that expires before them.
        const byExpiry = Array.from(ended).sort((a, b) => a[1] - b[1])
        for (const [digest, expiresAt] of byExpiry.slice(0, Math.max(1, Math.ceil(max / 10)))) {
          ended.delete(digest)
          floor = Math.max(floor, expiresAt)
        }
      }

      const remember = (digest: string, expiresAt: number) => {
        if (expiresAt <= now() || expiresAt <= floor) return
        if (!ended.has(digest) && ended.size >= max) prune()
        ended.set(digest, expiresAt)
      }

      const isEnded = (id: string, expiresAt: number) => {
        if (expiresAt <= now() || expiresAt <= floor) return true
        return ended.size !== 0 && ended.has(digestOf(id))
      }

      /** A message on the channel: `{expiresAt} {id}` (the id, so that a replica holding it can close it). */
      const heard = (message: string) => {
        const space = message.indexOf(" ")
        const expiresAt = Number(message.slice(0, space))
        const id = message.slice(space + 1)
        if (space <= 0 || !Number.isFinite(expiresAt) || id === "") return
        const digest = digestOf(id)
        if (ended.has(digest)) return
        remember(digest, expiresAt)
        for (const handler of handlers) handler(id)
      }

      const end = (id: string, expiresAt: number) => {
        const digest = digestOf(id)
        remember(digest, expiresAt)
        if (fleet.status() !== "ok") return
        const redis = fleet.command!
        // (Best effort: a Redis that is down is not told; this replica remembers it all the same.)
        void redis.multi()
          .zadd(key, expiresAt, digest)
          // The set holds what has not expired, at most max_ended_sessions of it (the latest to expire).
          .zremrangebyscore(key, "-inf", now())
          .zremrangebyrank(key, 0, -(max + 1))
          .publish(channel, `${expiresAt} ${id}`)
          .exec()
          .catch(() => undefined)
      }

      if (fleet.command !== undefined) {
        fleet.subscribe(channel, heard)
        fleet.subscribe(touchChannel, (id) => {
          for (const handler of touchHandlers) handler(id)
        })
        const catchUp = () => {
          const redis = fleet.command!
          const t = now()
          void redis.zremrangebyscore(key, "-inf", t)
            .then(() => redis.zrangebyscore(key, t, "+inf", "WITHSCORES", "LIMIT", 0, max))
            .then((entries) => {
              // A full set was trimmed of the ids that expire first: refuse every id expiring before what it kept.
              if (entries.length / 2 >= max) floor = Math.max(floor, Number(entries[1]))
              for (let i = 0; i + 1 < entries.length; i += 2) remember(entries[i]!, Number(entries[i + 1]))
            })
            .catch(() => undefined)
        }
        fleet.onReady(catchUp)
        if (fleet.status() === "ok") catchUp()
      }

      return {
        isEnded,
        end,
        onEndedElsewhere: (handler) => void handlers.push(handler),
        shouldTouch: fleet.command !== undefined,
        touch: (id) => {
          if (fleet.status() === "ok") void fleet.command!.publish(touchChannel, id).catch(() => undefined)
        },
        onTouchedElsewhere: (handler) => void touchHandlers.push(handler),
        size: () => ended.size
      }
    })
  )
}

