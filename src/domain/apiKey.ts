import { createHash, randomBytes, timingSafeEqual } from "node:crypto"

/** A new API key: 256 random bits, with a prefix that says what it is (and that it is no JWT). */
export const newApiKey = (): string => `mgw_${randomBytes(32).toString("base64url")}`

/** What the config stores of a key: its SHA-256 (keys are random, so a fast hash is enough). */
export const hashApiKey = (key: string): string => `sha256:${digestOf(key).toString("hex")}`

export const digestOf = (key: string): Buffer => createHash("sha256").update(key, "utf8").digest()

/**
 * The entry whose digest matches `key`, compared in constant time against every entry (the
 * time taken says nothing of which key, or how much of one, matched).
 */
export const findKey = <K extends { readonly digest: Buffer }>(keys: ReadonlyArray<K>, key: string): K | undefined => {
  const digest = digestOf(key)
  let found: K | undefined
  for (const candidate of keys) {
    if (timingSafeEqual(candidate.digest, digest) && found === undefined) found = candidate
  }
  return found
}
