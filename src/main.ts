#!/usr/bin/env node
// First: a heap setting that must precede the loading of everything else (heapPolicy.ts says why).
import "./heapPolicy.js"
import { CliConfig, ValidationError } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Effect, Exit, Layer, Option } from "effect"
import { cli, withDefaultCommand } from "./cli/Cli.js"
import { CommandFailed } from "./cli/CommandFailed.js"
import { flushLogs } from "./observability/logging.js"

const program = Effect.suspend(() => cli(withDefaultCommand(process.argv))).pipe(
  Effect.tapErrorCause((cause) =>
    Effect.sync(() => {
      flushLogs()
      const failure = Cause.failureOption(cause)
      if (Option.isSome(failure) && failure.value instanceof CommandFailed) {
        // A problem for the user to fix: the message alone, no stack trace.
        process.stderr.write(`mcp-gateway: ${failure.value.message}\n`)
      } else if (Option.isSome(failure) && ValidationError.isValidationError(failure.value)) {
        // @effect/cli has already printed the usage error.
      } else if (!Cause.isInterruptedOnly(cause)) {
        process.stderr.write(`mcp-gateway: unexpected failure\n${Cause.pretty(cause)}\n`)
      }
    })
  ),
  // @effect/cli's own options (--wizard, its --log-level) stay out of every command's help: they
  // read as ours and are not (start has its own --log-level); --help, --version, --completions are in docs/cli.md.
  Effect.provide(Layer.mergeAll(NodeContext.layer, CliConfig.layer({ showBuiltIns: false })))
)

NodeRuntime.runMain(program, {
  disableErrorReporting: true,
  // Our own logger (stderr) is installed by the start command; the default pretty one would print to stdout.
  disablePrettyLogger: true,
  teardown: (exit, onExit) => {
    if (Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause)) return onExit(0)
    const failure = Cause.failureOption(exit.cause)
    onExit(
      Option.isSome(failure) && failure.value instanceof CommandFailed
        ? failure.value.exitCode
        : Option.isSome(failure) && ValidationError.isValidationError(failure.value)
        ? 2
        : 1
    )
  }
})
