import { Data } from "effect"

/** Start-up cannot go on: the config (file, environment or flags) or a plugin it names is wrong. */
export class ConfigInvalid extends Data.TaggedError("ConfigInvalid")<{
  readonly problems: ReadonlyArray<string>
}> {
  get message() {
    return this.problems.join("\n")
  }
}
