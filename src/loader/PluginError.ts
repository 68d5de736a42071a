import { Data } from "effect"

/** A plugin that cannot be used: missing file, wrong export, options that fail its schema. */
export class PluginError extends Data.TaggedError("PluginError")<{
  /** What kind of plugin, as users name it: `strategy`, `health probe`. */
  readonly noun: string
  /** The load_balancer field that names it: `strategy`, `health_probe`. */
  readonly setting: string
  readonly plugin: string
  readonly template?: string | undefined
  /** Where in the config it is named, when not a template's load_balancer (`discovery.providers.k8s.provider`). */
  readonly at?: string | undefined
  readonly reason: string
}> {
  get message() {
    const where = this.at !== undefined
      ? `${this.at}: `
      : this.template === undefined
      ? ""
      : `templates.${this.template}.load_balancer.${this.setting}: `
    return `${where}${this.noun} plugin "${this.plugin}": ${this.reason}`
  }
}
