import { Schema } from "effect"

/**
 * A template's tool integrity policies (issue 23, docs/security.md): the `tool_integrity`
 * setting of a template, or `gateway.tool_integrity`, or the default. Here (not in integrity/)
 * because the config reads them; integrity/ToolPins.ts is where the rest of the contract lives.
 */
export interface IntegrityPolicy {
  /** What is pinned when nothing is yet: what the first healthy instance offers; only the lock file's; nothing (integrity off). */
  readonly pin: "trust_on_first_use" | "locked" | "off"
  /** An offered definition that differs from its pin (or is new): left out and refused; served with an alert; re-pinned. */
  readonly on_change: "block" | "warn" | "allow"
  /** Instances whose offer differs from the pins: take no requests; or are used anyway (shown as drift either way). */
  readonly drift: "route_to_pinned" | "off"
}

export const DEFAULT_INTEGRITY_POLICY: IntegrityPolicy = { pin: "trust_on_first_use", on_change: "block", drift: "route_to_pinned" }

/** `tool_integrity` as a config writes it: each field optional, the rest from the gateway's (then the default). */
export const IntegrityPolicyInput = Schema.Struct({
  pin: Schema.optional(Schema.Literal("trust_on_first_use", "locked", "off")),
  on_change: Schema.optional(Schema.Literal("block", "warn", "allow")),
  drift: Schema.optional(Schema.Literal("route_to_pinned", "off"))
})
export type IntegrityPolicyInput = typeof IntegrityPolicyInput.Type

/** A policy from its input over a base (the gateway's, or the default). */
export const resolveIntegrityPolicy = (base: IntegrityPolicy, input: IntegrityPolicyInput | undefined): IntegrityPolicy =>
  input === undefined ? base : { pin: input.pin ?? base.pin, on_change: input.on_change ?? base.on_change, drift: input.drift ?? base.drift }
