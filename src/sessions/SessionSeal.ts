import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto"

/**
 * What a session id carries, so that any replica of the gateway can serve the session's next
 * request without asking another replica or a shared store: which template and instance, the
 * backend's own session (a Streamable HTTP server's `Mcp-Session-Id`), whose it is and until when.
 * Everything in it is bounded, whatever the client sends: an id is under MAX_SESSION_ID_LENGTH.
 */
export interface SessionClaims {
  /** The endpoint: a template's name, or an aggregate's key. */
  readonly endpoint: string
  /** Who opened it (only they may use it): sealed as its tag (`ownerTag`), a digest of fixed size. */
  readonly owner: string
  readonly protocolVersion: string
  /** How it is served: one instance, balanced per request, or an aggregate of templates. */
  readonly kind: "pinned" | "balanced" | "aggregate"
  readonly instance?: string | undefined
  /** The backend's own session id (an old Streamable HTTP server's). */
  readonly backendSession?: string | undefined
  /** The client's own process on the instance: that lives on one replica only. */
  readonly ownProcess?: boolean | undefined
  /**
   * What the client said in `initialize`, as far as a new backend session elsewhere needs it:
   * its capabilities' names (and their flags) and its name and version, cut to size
   * (`compactClient`); never the client's whole parameters.
   */
  readonly client: Record<string, unknown>
  /** A digest of the credential's grant (its scopes and templates): a token of other scopes cannot take the session over. */
  readonly grant?: string | undefined
  /** When the session ends whatever happens (epoch ms, to the second): `gateway.session_max_lifetime` after it opened. */
  readonly expiresAt: number
  /** What serves it did not fit in an id: only the replica that opened it serves it. */
  readonly local?: boolean | undefined
}

/** The longest id the gateway issues: well under any header limit, whatever the client sent. */
export const MAX_SESSION_ID_LENGTH = 511

/** A fixed-size digest of an owner (`jwt:{sub}`, a key id, `ip:{address}`): a subject may be long. */
export const ownerTag = (owner: string): string =>
  createHash("sha256").update("mcp-gateway session owner\u0000").update(owner).digest().subarray(0, 12).toString("base64url")

/** A short digest of a credential's grant (domain/Identity.ts grantOf), for aggregates' ids. */
export const grantTag = (grant: string): string =>
  createHash("sha256").update("mcp-gateway session grant\u0000").update(grant).digest().subarray(0, 9).toString("base64url")

const cut = (value: unknown, max: number): string | undefined => (typeof value === "string" ? value.slice(0, max) : undefined)

/** An object's first `keys` keys (names cut short), each value as `inner` makes it. */
const pruned = (value: unknown, keys: number, inner: (v: unknown) => unknown): Record<string, unknown> => {
  const out: Record<string, unknown> = {}
  if (typeof value !== "object" || value === null || Array.isArray(value)) return out
  let n = 0
  for (const name in value as Record<string, unknown>) {
    if (n++ >= keys) break
    out[name.slice(0, 24)] = inner((value as Record<string, unknown>)[name])
  }
  return out
}

/**
 * What a session id keeps of a client's `initialize` params, at three sizes: the capabilities
 * (with their sub-flags), name and version; the capabilities' names; nothing. `seal` takes the
 * largest that fits.
 */
export const compactClient = (params: Record<string, unknown>, level: 0 | 1 | 2 = 0): Record<string, unknown> => {
  if (level === 2) return {}
  const flag = (v: unknown) => (typeof v === "boolean" ? v : {})
  const capabilities = pruned(params.capabilities, 6, level === 0 ? (v) => pruned(v, 4, flag) : () => ({}))
  const info = params.clientInfo as Record<string, unknown> | undefined
  const name = level === 0 ? cut(info?.name, 40) : undefined
  const version = level === 0 ? cut(info?.version, 16) : undefined
  return {
    ...(typeof params.protocolVersion === "string" ? { protocolVersion: params.protocolVersion.slice(0, 16) } : {}),
    capabilities,
    ...(name === undefined ? {} : { clientInfo: { name, version: version ?? "" } })
  }
}

/** The claims as sealed: short keys (an id travels on every request). */
const encode = (c: SessionClaims) =>
  JSON.stringify({
    e: c.endpoint,
    o: c.owner,
    v: c.protocolVersion,
    k: c.kind,
    i: c.instance,
    b: c.backendSession,
    p: c.ownProcess === true ? 1 : undefined,
    c: c.client,
    g: c.grant,
    x: Math.ceil(c.expiresAt / 1000),
    l: c.local === true ? 1 : undefined
  })

const decode = (text: string): SessionClaims | undefined => {
  const o = JSON.parse(text)
  if (typeof o !== "object" || o === null || typeof o.e !== "string" || typeof o.o !== "string" || typeof o.x !== "number") return undefined
  if (o.k !== "pinned" && o.k !== "balanced" && o.k !== "aggregate") return undefined
  return {
    endpoint: o.e,
    owner: o.o,
    protocolVersion: String(o.v),
    kind: o.k,
    instance: typeof o.i === "string" ? o.i : undefined,
    backendSession: typeof o.b === "string" ? o.b : undefined,
    ownProcess: o.p === 1 ? true : undefined,
    client: typeof o.c === "object" && o.c !== null ? o.c : {},
    grant: typeof o.g === "string" ? o.g : undefined,
    expiresAt: o.x * 1000,
    local: o.l === 1 ? true : undefined
  }
}

// (v2: the claims' short keys, the owner's tag, the expiry; an id of v1 opens to nothing.)
const PREFIX = "s2"
const AAD = Buffer.from("mcp-gateway session v2")

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

  /**
   * An id for a new session: `owner` is sealed as its tag, the client's params cut to what fits
   * (see compactClient). What serves the session must fit too: if it does not (a backend's
   * huge session id), the id is sealed `local` (this replica alone serves it).
   */
  seal(claims: SessionClaims): string {
    const base: SessionClaims = { ...claims, owner: ownerTag(claims.owner) }
    for (const level of [0, 1, 2] as const) {
      const id = this.sealExactly({ ...base, client: compactClient(claims.client, level) })
      if (id.length <= MAX_SESSION_ID_LENGTH) return id
    }
    return this.sealExactly({
      endpoint: base.endpoint.slice(0, 128),
      owner: base.owner,
      protocolVersion: base.protocolVersion.slice(0, 16),
      kind: base.kind,
      client: {},
      grant: base.grant,
      expiresAt: base.expiresAt,
      local: true
    })
  }

  private sealExactly(claims: SessionClaims): string {
    const key = this.keys[0]!
    const iv = randomBytes(12)
    const cipher = createCipheriv("aes-256-gcm", key.key, iv)
    cipher.setAAD(AAD)
    const body = Buffer.concat([cipher.update(encode(claims), "utf8"), cipher.final()])
    return `${PREFIX}.${key.id}.${Buffer.concat([iv, body, cipher.getAuthTag()]).toString("base64url")}`
  }

  /** The claims of a sealed id, or undefined for anything that is not one of ours (forged, tampered, an unknown key). */
  open(id: string): SessionClaims | undefined {
    if (id.length > MAX_SESSION_ID_LENGTH) return undefined
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
      return decode(text)
    } catch {
      return undefined
    }
  }
}
