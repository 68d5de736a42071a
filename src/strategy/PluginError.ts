import { Data } from "effect"

/** A strategy plugin that cannot be used: missing file, wrong export, options that fail its schema. */
export class PluginError extends Data.TaggedError("PluginError")<{
  readonly plugin: string
  readonly template?: string | undefined
  readonly reason: string
}> {
  get message() {
    const where = this.template === undefined ? "" : `templates.${this.template}.load_balancer.strategy: `
    return `${where}strategy plugin "${this.plugin}": ${this.reason}`
  }
}
