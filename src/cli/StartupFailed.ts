import { Data } from "effect"

/** Start-up stopped for a reason the user must fix: printed as is (no stack), with this exit code. */
export class StartupFailed extends Data.TaggedError("StartupFailed")<{
  readonly message: string
  /** 2: invalid configuration (config, plugin, registry file); 1: the environment (port taken, ...). */
  readonly exitCode: number
}> {}
