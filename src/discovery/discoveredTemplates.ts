import { createHash } from "node:crypto"
import { resolvePaths } from "../config/GatewayConfig.js"
import { defineInstance, discoverySource, type InstanceDefinition, type InstanceSpec, MAX_NAME_LENGTH } from "../domain/Instance.js"
import { secretProblems } from "../domain/Secret.js"
import type { DiscoveredTemplate } from "../registry/Registry.js"
import type { DiscoveredDocument } from "./DiscoveryPlugin.js"

const shortHash = (text: string) => createHash("sha256").update(text).digest("hex").slice(0, 8)

/**
 * The id of a discovered instance its provider did not name: `{host}-{port}` for an endpoint
 * (what an operator recognises in `status`), a hash of the command line for stdio. Stable from
 * sync to sync, so an instance found again is left running.
 */
export const derivedId = (spec: InstanceSpec): string => {
  if (spec.transport === "stdio") return `cmd-${shortHash(JSON.stringify([spec.command, spec.working_dir ?? ""]))}`
  const url = new URL(spec.endpoint)
  const port = url.port !== "" ? url.port : url.protocol === "https:" ? "443" : "80"
  const host = url.hostname.replace(/^\[|\]$/g, "").replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[^A-Za-z0-9]+/, "")
  return `${host === "" ? "host" : host}-${port}`.slice(0, MAX_NAME_LENGTH)
}

/**
 * A provider's document as the registry takes it: every instance with an id (derived where
 * missing; two endpoints on one host and port get their path's hash too), paths resolved
 * against the config's directory, the provider's source. Problems that must stop the whole
 * sync (duplicate ids, a missing secret, a plugin named by path) are returned instead.
 */
export const discoveredTemplates = (
  provider: string,
  document: DiscoveredDocument,
  baseDir: string
): { readonly templates: ReadonlyArray<DiscoveredTemplate> } | { readonly problems: ReadonlyArray<string> } => {
  const problems: Array<string> = []
  const source = discoverySource(provider)
  const templates: Array<DiscoveredTemplate> = []
  for (const [name, entry] of Object.entries(document.templates)) {
    for (const setting of ["strategy", "health_probe"] as const) {
      const plugin = entry.load_balancer?.[setting]
      if (plugin !== undefined && /^[./]|^file:|\.(m?js|ts)$/.test(plugin)) {
        problems.push(`templates.${name}.load_balancer.${setting}: a discovered template may name only built-in plugins (a plugin by path belongs in the config file)`)
      }
    }
    const derived = entry.instances.map((spec) => spec.id ?? derivedId(spec))
    const instances: Array<InstanceDefinition> = []
    const seen = new Set<string>()
    entry.instances.forEach((spec, index) => {
      let id = derived[index]!
      if (spec.id === undefined && derived.filter((d) => d === id).length > 1 && spec.transport !== "stdio") {
        id = `${id}-${shortHash(spec.endpoint)}`
      }
      if (seen.has(id)) {
        problems.push(`templates.${name}.instances[${index}].id: duplicate instance id ${JSON.stringify(id)}`)
        return
      }
      seen.add(id)
      if (spec.transport !== "stdio") problems.push(...secretProblems(spec.headers, `templates.${name}.instances[${index}]`))
      instances.push(defineInstance(name, id, resolvePaths({ ...spec, id }, baseDir), source))
    })
    templates.push({ name, loadBalancer: entry.load_balancer, instances })
  }
  return problems.length > 0 ? { problems } : { templates }
}
