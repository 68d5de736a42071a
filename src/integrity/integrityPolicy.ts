import { DEFAULT_INTEGRITY_POLICY, type IntegrityPolicy } from "../domain/IntegrityPolicy.js"
import type { TemplateState } from "../registry/Registry.js"

/**
 * A template's tool integrity policy, as drift reads it: the template's own `tool_integrity`,
 * else the gateway's (`gateway.tool_integrity`), else the default (ToolPinsLive and drift read it alike).
 */
export const integrityPolicyOf = (template: TemplateState | undefined, gateway: IntegrityPolicy | undefined): IntegrityPolicy =>
  template?.toolIntegrity ?? gateway ?? DEFAULT_INTEGRITY_POLICY

/** Whether the instances' own offers are read at all: not when integrity is off altogether (no pins, drift off). */
export const watchesOffers = (policy: IntegrityPolicy) => policy.pin !== "off" || policy.drift !== "off"
