import type { TemplateState } from "../registry/Registry.js"
import { DEFAULT_INTEGRITY_POLICY, type IntegrityPolicy } from "./ToolPins.js"

/**
 * A template's tool integrity policy. (The one place drift reads it: the template's
 * `tool_integrity` setting once it exists; until then every template has the default.)
 */
export const integrityPolicyOf = (_template: TemplateState): IntegrityPolicy => DEFAULT_INTEGRITY_POLICY

/** Whether the instances' own offers are read at all: not when integrity is off altogether (no pins, drift off). */
export const watchesOffers = (policy: IntegrityPolicy) => policy.pin !== "off" || policy.drift !== "off"
