import { Context, Effect, Layer } from "effect"
import type { AuthSettings } from "./AuthConfig.js"
import { GatewayConfig } from "./GatewayConfig.js"

export interface LiveAuthShape {
  /** The auth settings as the config stands now (undefined: auth is off, for good until a restart). */
  readonly current: () => AuthSettings | undefined
  /**
   * A reload's `auth` (ConfigReload), applied from the next request on: keys added, removed,
   * narrowed, JWT settings changed. Turning auth on or off is not applied here: it decides
   * where the gateway may listen, so it takes a restart.
   */
  readonly apply: (settings: AuthSettings | undefined) => "applied" | "needs_restart"
}

/**
 * The `auth` section as it stands now, shared by the authenticator (which reads it on every
 * request: one reference compared) and the config reload (which replaces it). Every request is
 * authorized with the credential it carries against this, so an open session loses what its
 * key lost at its next request.
 */
export class LiveAuth extends Context.Tag("mcp-gateway/LiveAuth")<LiveAuth, LiveAuthShape>() {
  static readonly layer: Layer.Layer<LiveAuth, never, GatewayConfig> = Layer.effect(
    LiveAuth,
    Effect.map(GatewayConfig, (config) => LiveAuth.of(LiveAuth.make(config.gateway.auth)))
  )

  static make(initial: AuthSettings | undefined): LiveAuthShape {
    let settings = initial
    return {
      current: () => settings,
      apply: (next) => {
        if ((next === undefined) !== (settings === undefined)) return "needs_restart"
        settings = next
        return "applied"
      }
    }
  }
}
