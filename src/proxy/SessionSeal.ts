import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto"
import type { Identity } from "../domain/Identity.js"

/**
 * What a session id carries, so that any replica of the gateway can serve the session's next
 * request without asking another replica or a shared store: which template and instance, the
 * backend's own session (a Streamable HTTP server's `Mcp-Session-Id`), and who the client is.
 */
export interface SessionClaims {
  /** The endpoint: a template's name, or an aggregate's key. */
  readonly endpoint: string
  /** Who opened it: only they may use it. */
  readonly owner: string
  readonly protocolVersion: string
  /** How it is served: one instance, balanced per request, or an aggregate of templates. */
  readonly kind: "pinned" | "balanced" | "aggregate"
  readonly instance?: string | undefined
  /** The backend's own session id (an old Streamable HTTP server's). */
  readonly backendSession?: string | undefined
  /** The client's own process on the instance: that lives on one replica only. */
  readonly ownProcess?: boolean | undefined
  /** What the client said in `initialize` (capabilities, client info, version): what a new backend session is opened with elsewhere. */
  readonly client: Record<string, unknown>
  /** An aggregate's caller, as far as it decides which templates it serves (its scopes). */
  readonly caller?: { readonly kind: Identity["kind"]; readonly scopes: ReadonlyArray<string>; readonly templates?: ReadonlyArray<string> | undefined } | undefined
}

const PREFIX = "s1"
const AAD = Buffer.from("mcp-gateway session v1")

interface Key {
  readonly id: string
  readonly key: Buffer
}

/** A key from an operator's secret (any string of 32 characters or more: `openssl rand -base64 32`). */
const keyOf = (secret: string): Key => ({
  id: createHash("sha256").update("mcp-gateway session key id\u0000").update(secret).digest("hex").slice(0, 8),
  key: createHash("sha256").update("mcp-gateway session key\u0000").update(secret).digest()
})

/**
 * Session ids sealed with AES-256-GCM (an authenticated cipher): the claims are secret and
 * cannot be changed or forged without the key, so a tampered id opens to nothing and is a 404.
 * The first key seals; every key of the list opens (rotation: add the new key first, keep the
 * old one until its sessions are gone). Without configured keys, a random key of this process:
 * ids work on this replica only, as before there were replicas.
 */
export class SessionSeal {
  private readonly keys: ReadonlyArray<Key>
  /** Whether the keys are the operator's (shared by replicas), or this process's own. */
  readonly shared: boolean

  constructor(secrets: ReadonlyArray<string>) {
    this.shared = secrets.length > 0
    this.keys = this.shared ? secrets.map(keyOf) : [keyOf(randomBytes(32).toString("base64"))]
  }

  seal(claims: SessionClaims): string {
    const key = this.keys[0]!
    const iv = randomBytes(12)
    const cipher = createCipheriv("aes-256-gcm", key.key, iv)
    cipher.setAAD(AAD)
    const body = Buffer.concat([cipher.update(JSON.stringify(claims), "utf8"), cipher.final()])
    return `${PREFIX}.${key.id}.${Buffer.concat([iv, body, cipher.getAuthTag()]).toString("base64url")}`
  }

  /** The claims of a sealed id, or undefined for anything that is not one of ours (forged, tampered, an unknown key). */
  open(id: string): SessionClaims | undefined {
    const [prefix, keyId, payload, extra] = id.split(".")
    if (prefix !== PREFIX || keyId === undefined || payload === undefined || extra !== undefined) return undefined
    const key = this.keys.find((k) => k.id === keyId)
    if (key === undefined) return undefined
    const bytes = Buffer.from(payload, "base64url")
    if (bytes.length < 12 + 16 + 2) return undefined
    try {
      const decipher = createDecipheriv("aes-256-gcm", key.key, bytes.subarray(0, 12))
      decipher.setAAD(AAD)
      decipher.setAuthTag(bytes.subarray(bytes.length - 16))
      const text = Buffer.concat([decipher.update(bytes.subarray(12, bytes.length - 16)), decipher.final()]).toString("utf8")
      const claims = JSON.parse(text) as SessionClaims
      return typeof claims === "object" && claims !== null && typeof claims.endpoint === "string" && typeof claims.owner === "string" ? claims : undefined
    } catch {
      return undefined
    }
  }
}
