import { Duration, Effect } from "effect"
import * as dns from "node:dns"
import * as net from "node:net"

/**
 * Which endpoints a registration through the API may point the gateway at: without it, anyone
 * allowed to register could make the gateway send requests (with the instance's headers) to
 * any address it can reach, the cloud metadata service included.
 *
 * An entry is an IP address, a CIDR block (`169.254.0.0/16`, `fe80::/10`), or a host name
 * (`metadata.google.internal`; `*.example.com` for its subdomains). An endpoint is checked by
 * its host name and by each of its addresses: literal, `localhost` (127.0.0.1 and ::1), or
 * what the name resolves to at registration. An endpoint that matches `allow` is accepted;
 * else one that matches `deny` is refused; else, when `allow` is not empty, refused too.
 */
export interface EndpointPolicyInput {
  readonly allow: ReadonlyArray<string>
  readonly deny: ReadonlyArray<string>
}

/**
 * Refused by default: link-local addresses (where the cloud metadata services live:
 * 169.254.169.254 for AWS, GCP, Azure, OpenStack; 169.254.170.2 for ECS task credentials),
 * AWS's IPv6 metadata address, Alibaba Cloud's, the metadata host names, and the unspecified
 * addresses (which reach the local host). Loopback and private networks are allowed: local
 * servers and internal backends are what a gateway is for (the README's tour registers
 * http://127.0.0.1:3001/mcp); list them here to refuse them.
 */
export const DEFAULT_REGISTRATION_DENY: ReadonlyArray<string> = [
  "169.254.0.0/16",
  "fe80::/10",
  "fd00:ec2::254",
  "100.100.100.200",
  "0.0.0.0/8",
  "::",
  "metadata.google.internal",
  "metadata.goog"
]

/** A list, compiled: addresses and blocks in a BlockList, names apart. */
class EntryList {
  private readonly blocks = new net.BlockList()
  private readonly names = new Set<string>()
  private readonly suffixes: Array<string> = []
  readonly empty: boolean

  constructor(entries: ReadonlyArray<string>) {
    this.empty = entries.length === 0
    for (const entry of entries) {
      const parsed = parseEntry(entry)
      if (typeof parsed === "string") throw new Error(parsed)
      switch (parsed.kind) {
        case "address":
          this.blocks.addAddress(parsed.address, parsed.family)
          break
        case "block":
          this.blocks.addSubnet(parsed.address, parsed.prefix, parsed.family)
          break
        case "name":
          this.names.add(parsed.name)
          break
        case "suffix":
          this.suffixes.push(parsed.suffix)
      }
    }
  }

  matchesName(host: string) {
    return this.names.has(host) || this.suffixes.some((s) => host.endsWith(s))
  }

  matchesAddress(address: string) {
    const family = net.isIP(address)
    return family !== 0 && this.blocks.check(address, family === 4 ? "ipv4" : "ipv6")
  }
}

type Entry =
  | { readonly kind: "address"; readonly address: string; readonly family: "ipv4" | "ipv6" }
  | { readonly kind: "block"; readonly address: string; readonly prefix: number; readonly family: "ipv4" | "ipv6" }
  | { readonly kind: "name"; readonly name: string }
  | { readonly kind: "suffix"; readonly suffix: string }

const HOST_NAME = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*\.?$/

/** One entry of a list, or why it is not one (for config validation). */
export const parseEntry = (entry: string): Entry | string => {
  const text = entry.trim().toLowerCase()
  const slash = text.indexOf("/")
  if (slash !== -1) {
    const address = text.slice(0, slash)
    const family = net.isIP(address)
    const prefix = Number(text.slice(slash + 1))
    if (family === 0 || !/^\d{1,3}$/.test(text.slice(slash + 1)) || prefix > (family === 4 ? 32 : 128)) {
      return `expected an IP address, a CIDR block (169.254.0.0/16) or a host name, got ${JSON.stringify(entry)}`
    }
    return { kind: "block", address, prefix, family: family === 4 ? "ipv4" : "ipv6" }
  }
  const bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text
  const family = net.isIP(bare)
  if (family !== 0) return { kind: "address", address: bare, family: family === 4 ? "ipv4" : "ipv6" }
  // A name that ends in a number is an IPv4 address to a URL (2852039166, 0xa9fea9fe,
  // 169.254.169.254.), and endpoints are checked in the spelling a URL gives them: such an entry
  // is that address, or a mistake (169.254.169.2540) to report, never a name no endpoint can have.
  if (/^(\d+|0x[0-9a-f]*)$/.test(bare.replace(/\.$/, "").split(".").pop()!)) {
    const host = URL.canParse(`http://${bare}/`) ? new URL(`http://${bare}/`).hostname : ""
    if (net.isIPv4(host)) return { kind: "address", address: host, family: "ipv4" }
    return `expected an IP address, a CIDR block (169.254.0.0/16) or a host name, got ${JSON.stringify(entry)}`
  }
  if (text.startsWith("*.") && HOST_NAME.test(text.slice(2))) return { kind: "suffix", suffix: text.slice(1).replace(/\.$/, "") }
  if (HOST_NAME.test(text)) return { kind: "name", name: text.replace(/\.$/, "") }
  return `expected an IP address, a CIDR block (169.254.0.0/16) or a host name, got ${JSON.stringify(entry)}`
}

/** The endpoint's host as the policy sees it: lower-case, without brackets or a trailing dot. */
export const endpointHost = (url: URL): string => url.hostname.replace(/^\[|\]$/g, "").replace(/\.$/, "").toLowerCase()

/** Whether a host needs a DNS lookup for its addresses (not an IP address, not localhost). */
export const needsLookup = (host: string) => net.isIP(host) === 0 && host !== "localhost" && !host.endsWith(".localhost")

/** The addresses a host has without asking DNS: itself when an IP address, loopback for localhost (RFC 6761). */
export const knownAddresses = (host: string): ReadonlyArray<string> =>
  net.isIP(host) !== 0 ? [host] : needsLookup(host) ? [] : ["127.0.0.1", "::1"]

/**
 * The addresses of an endpoint's host for the policy: literal or localhost's at once, else what
 * DNS says within 2 s (nothing when it fails: the name's own entries still apply).
 */
export const addressesOf = (host: string): Effect.Effect<ReadonlyArray<string>> =>
  needsLookup(host)
    ? Effect.tryPromise(() => dns.promises.lookup(host, { all: true, verbatim: true })).pipe(
      Effect.map((found) => found.map((a) => a.address)),
      Effect.timeout(Duration.seconds(2)),
      Effect.orElseSucceed((): ReadonlyArray<string> => [])
    )
    : Effect.succeed(knownAddresses(host))

export type EndpointVerdict =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly message: string }

export interface EndpointPolicy {
  /** The verdict for a host and its addresses (literal, localhost's, or resolved). */
  readonly check: (host: string, addresses: ReadonlyArray<string>) => EndpointVerdict
}

/** Compiles the lists (the config validated every entry with parseEntry). */
export const makeEndpointPolicy = (input: EndpointPolicyInput): EndpointPolicy => {
  const allow = new EntryList(input.allow)
  const deny = new EntryList(input.deny)
  return {
    check: (host, addresses) => {
      const allowed = allow.matchesName(host) || (addresses.length > 0 && addresses.every((a) => allow.matchesAddress(a)))
      if (allowed) return { allowed: true }
      const deniedAddress = addresses.find((a) => deny.matchesAddress(a))
      if (deny.matchesName(host) || deniedAddress !== undefined) {
        const what = deniedAddress === undefined || deniedAddress === host ? host : `${host} (${deniedAddress})`
        return {
          allowed: false,
          message: `registrations may not point at ${what}: the address is refused by gateway.registration_deny ` +
            `(link-local and cloud metadata addresses by default)`
        }
      }
      if (!allow.empty) {
        return { allowed: false, message: `registrations may point only at the addresses of gateway.registration_allow; not ${host}` }
      }
      return { allowed: true }
    }
  }
}
