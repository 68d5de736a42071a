import { Data } from "effect"

/** A command stopped for a reason the user must fix: printed as is (no stack), with this exit code. */
export class CommandFailed extends Data.TaggedError("CommandFailed")<{
  readonly message: string
  /** 2: bad usage or invalid configuration (config, plugin, registry file); 1: the environment (port taken, gateway unreachable, ...). */
  readonly exitCode: number
}> {}
