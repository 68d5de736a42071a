import { type Definition, describeChange, offerDigest } from "../domain/ToolDefinitions.js"
import type { Pin } from "./ToolPins.js"

/**
 * Drift between instances (docs/security.md, "Drift between instances"): which instances of a
 * template offer what the template's reference offers, and how the others differ. Pure: the
 * InstanceOffers service feeds it the offers it read and the pins, and writes the verdicts on
 * the instances.
 */

/** One instance's offer as last read from the instance itself (every page of its three lists). */
export interface InstanceOffer {
  /** Every tool, prompt and resource template it offers, by definitionKey. */
  readonly definitions: ReadonlyMap<string, Definition>
  /** offerDigest of the definitions. */
  readonly digest: string
  /** When it was read (epoch ms). */
  readonly readAt: number
  /** When its instance was registered (epoch ms): a tie of the majority goes to the longest-serving instance's offer. */
  readonly since: number
}

/** What every instance is compared with: the pins, or (nothing pinned) the offer most instances make. */
export interface Reference {
  readonly kind: "pins" | "majority"
  /** The reference offer's digest (of the expected definitions; undefined: no offer known yet, nothing pinned). */
  readonly digest: string | undefined
  /** Its definitions by definitionKey, for the comparisons and the differences. */
  readonly definitions: ReadonlyMap<string, Definition>
  /**
   * What every instance must offer: the majority's whole offer; of the pins, those some instance
   * offers when read by the gateway (a server may offer more to clients that declare more, and
   * what was pinned for them is not expected of the gateway's own read).
   */
  readonly expected: ReadonlySet<string>
}

/** The most differences listed per instance (the rest is counted): a view stays small whatever a server offers. */
export const MAX_DIFFERENCES_SHOWN = 20

/** The pins as a reference (undefined when nothing is pinned), given the offers known. */
export const pinsReference = (pins: ReadonlyMap<string, Pin> | undefined, offers: ReadonlyArray<InstanceOffer>): Reference | undefined => {
  if (pins === undefined) return undefined
  const definitions = new Map<string, Definition>()
  for (const [key, pin] of pins) definitions.set(key, pin.definition)
  const expected = new Set<string>()
  for (const offer of offers) for (const key of offer.definitions.keys()) if (definitions.has(key)) expected.add(key)
  return { kind: "pins", digest: offerDigest(Array.from(expected, (key) => definitions.get(key)!)), definitions, expected }
}

/**
 * Without pins: the offer most instances make; a tie goes to `current` (the reference so far, so
 * that a newcomer does not flip it), else to the offer of the longest-serving instance (the
 * earliest registered; of two registered together, the first given), which newcomers must match.
 */
export const majorityReference = (offers: ReadonlyArray<InstanceOffer>, current: string | undefined): Reference => {
  const byDigest = new Map<string, { count: number; first: number; offer: InstanceOffer }>()
  for (const offer of offers) {
    const seen = byDigest.get(offer.digest)
    if (seen === undefined) byDigest.set(offer.digest, { count: 1, first: offer.since, offer })
    else {
      seen.count++
      seen.first = Math.min(seen.first, offer.since)
    }
  }
  let best: { digest: string; count: number; first: number; offer: InstanceOffer } | undefined
  for (const [digest, entry] of byDigest) {
    const better = best === undefined || entry.count > best.count ||
      (entry.count === best.count && (digest === current || (best.digest !== current && entry.first < best.first)))
    if (better) best = { digest, ...entry }
  }
  return best === undefined
    ? { kind: "majority", digest: undefined, definitions: new Map(), expected: new Set() }
    : { kind: "majority", digest: best.digest, definitions: best.offer.definitions, expected: new Set(best.offer.definitions.keys()) }
}

/** The reference of a template: its pins when it has any, else the majority of the offers known. */
export const referenceOf = (offers: ReadonlyArray<InstanceOffer>, pins: ReadonlyMap<string, Pin> | undefined, current: string | undefined): Reference =>
  pinsReference(pins, offers) ?? majorityReference(offers, current)

/**
 * Whether an instance's offer matches the reference: every definition it offers is the
 * reference's, and it offers every one expected. An unknown offer, or no reference yet, matches:
 * it is not held back.
 */
export const matches = (offer: InstanceOffer | undefined, reference: Reference) => {
  if (offer === undefined || reference.digest === undefined) return true
  if (reference.kind === "majority") return offer.digest === reference.digest
  for (const [key, definition] of offer.definitions) if (reference.definitions.get(key)?.digest !== definition.digest) return false
  for (const key of reference.expected) if (!offer.definitions.has(key)) return false
  return true
}

/** How an offer differs from the reference: one describeChange text per definition that differs, at most MAX_DIFFERENCES_SHOWN. */
export const differencesOf = (offer: InstanceOffer, reference: Reference): Array<string> => {
  if (matches(offer, reference)) return []
  const keys = Array.from(new Set([...reference.expected, ...offer.definitions.keys()])).sort()
  const differing = keys.filter((key) => reference.definitions.get(key)?.digest !== offer.definitions.get(key)?.digest)
  const shown = differing.slice(0, MAX_DIFFERENCES_SHOWN).map((key) => describeChange(reference.definitions.get(key), offer.definitions.get(key)))
  if (differing.length > shown.length) shown.push(`… and ${differing.length - shown.length} more`)
  return shown
}
