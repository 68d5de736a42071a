import { Args, Command, Options } from "@effect/cli"
import { Console, Effect, Either, Option } from "effect"
import * as path from "node:path"
import { loadGatewayConfig } from "../config/GatewayConfig.js"
import { parseToolLock, toolLockText } from "../domain/ToolLock.js"
import { writeFileAtomic } from "../registry/atomicWrite.js"
import { CommandFailed } from "./CommandFailed.js"
import { callGateway, describeFailure, type GatewayAnswer, resolveGatewayUrl, type Target, targetOptions } from "./gatewayClient.js"

/**
 * `mcp-gateway tools diff|approve|lock`: tool integrity (docs/security.md) managed from the
 * command line, through the running gateway's admin API (gateway:admin).
 */

/** Exit code of `tools diff` when changes are pending: not 1, which says the gateway could not be asked. */
export const PENDING_EXIT_CODE = 3

const failed = (what: string, answer: GatewayAnswer) =>
  new CommandFailed({ message: `${what}: ${describeFailure(answer)}`, exitCode: answer.status === 400 ? 2 : 1 })

const templatePath = (template: string) => `/gateway/templates/${encodeURIComponent(template)}/tools`

const template = Args.text({ name: "TEMPLATE" }).pipe(Args.withDescription("The template (see `mcp-gateway status`)"))

interface ChangeView {
  readonly kind: string
  readonly name: string
  readonly change: string
  readonly action: string
  readonly diff: string
  readonly instances: ReadonlyArray<string>
}

/** A template's pending changes as a reader takes them in: what the policy did, then the diff. */
export const formatPending = (view: { readonly template_name: string; readonly policy: Record<string, string>; readonly pins: number; readonly changes: ReadonlyArray<ChangeView> }): string => {
  const { changes } = view
  if (changes.length === 0) return `${view.template_name}: no pending changes (${view.pins} definition${view.pins === 1 ? "" : "s"} pinned)`
  const head = `${view.template_name}: ${changes.length} pending change${changes.length === 1 ? "" : "s"} ` +
    `(policy: pin ${view.policy.pin}, on change ${view.policy.on_change})`
  const blocks = changes.map((c) =>
    `${c.action}: ${c.diff}` + (c.instances.length === 0 ? "" : `\n  (offered by ${c.instances.join(", ")})`)
  )
  return [head, ...blocks].join("\n\n")
}

const diffCommand = Command.make(
  "diff",
  { ...targetOptions, template, json: Options.boolean("json").pipe(Options.withDescription("Print the pins and changes as JSON")) },
  (flags) =>
    Effect.gen(function*() {
      const url = yield* resolveGatewayUrl(flags)
      const answer = yield* callGateway(url, "GET", templatePath(flags.template))
      if (answer.status !== 200) return yield* failed(`tools diff ${flags.template}`, answer)
      yield* Console.log(flags.json ? JSON.stringify(answer.body, null, 2) : formatPending(answer.body))
      const pending = (answer.body.changes as ReadonlyArray<ChangeView>).length
      if (pending > 0) {
        return yield* new CommandFailed({
          message: `${pending} pending change${pending === 1 ? "" : "s"} in ${flags.template}: approve with \`mcp-gateway tools approve ${flags.template} [TOOL...]\``,
          exitCode: PENDING_EXIT_CODE
        })
      }
    })
).pipe(Command.withDescription(
  `Show what a template's instances offer that differs from its pinned definitions, as readable diffs (exit 0: nothing pending; ${PENDING_EXIT_CODE}: changes pending; 1: the gateway could not be asked)`
))

const approveCommand = Command.make(
  "approve",
  {
    ...targetOptions,
    template,
    tools: Args.text({ name: "TOOL" }).pipe(
      Args.withDescription("A tool, prompt or resource template to approve, by name or kind:name (default: every pending change)"),
      Args.repeated
    )
  },
  (flags) =>
    Effect.gen(function*() {
      const url = yield* resolveGatewayUrl(flags)
      const named = flags.tools.length > 0
      const answer = yield* callGateway(url, "POST", `${templatePath(flags.template)}/approve`, named ? { tools: flags.tools } : {})
      if (answer.status !== 200) return yield* failed(`tools approve ${flags.template}`, answer)
      const approved = answer.body.approved as ReadonlyArray<{ kind: string; name: string; digest: string }>
      yield* Console.log(
        approved.length === 0
          ? `${flags.template}: nothing to approve`
          : `${flags.template}: approved ${approved.map((p) => `${p.kind.replace("_", " ")} ${p.name}`).join(", ")}`
      )
      // (A name, or kind:name to tell a tool from a prompt of the same name.)
      const missed = flags.tools.filter((name) => !approved.some((p) => p.name === name || `${p.kind}:${p.name}` === name))
      if (missed.length > 0) {
        return yield* new CommandFailed({
          message: `tools approve ${flags.template}: nothing pending for ${missed.map((n) => JSON.stringify(n)).join(", ")} (see \`mcp-gateway tools diff ${flags.template}\`)`,
          exitCode: 1
        })
      }
    })
).pipe(Command.withDescription("Pin what a template's instances offer now: every pending change, or the named tools only (see `tools diff` first)"))

/** Where `tools lock` writes: --output, else the config's gateway.tools_lock_file, else stdout (undefined). */
const lockTarget = (output: Option.Option<string>, target: Target) =>
  Effect.gen(function*() {
    if (Option.isSome(output)) return output.value === "-" ? undefined : path.resolve(output.value)
    if (Option.isNone(target.config)) return undefined
    const config = yield* loadGatewayConfig({ configFile: target.config.value, skipToolsLock: true }).pipe(
      Effect.mapError((e) => new CommandFailed({ message: e.message, exitCode: 2 }))
    )
    return config.gateway.toolsLock?.file
  })

const lockCommand = Command.make(
  "lock",
  {
    ...targetOptions,
    output: Options.text("output").pipe(
      Options.withAlias("o"),
      Options.withPseudoName("FILE"),
      Options.withDescription("Where to write the lock file (default: --config's gateway.tools_lock_file, else stdout; - for stdout)"),
      Options.optional
    )
  },
  (flags) =>
    Effect.gen(function*() {
      const file = yield* lockTarget(flags.output, flags)
      const url = yield* resolveGatewayUrl(flags)
      const answer = yield* callGateway(url, "GET", "/gateway/tools/lock")
      if (answer.status !== 200) return yield* failed("tools lock", answer)
      const text = toolLockText(answer.body)
      // What is written must be what a gateway will read back: checked before anything is replaced.
      const parsed = parseToolLock(text, `the gateway's answer (${url})`)
      if (Either.isLeft(parsed)) return yield* new CommandFailed({ message: `tools lock: ${parsed.left.join("; ")}`, exitCode: 1 })
      if (file === undefined) return yield* Console.log(text.trimEnd())
      // Atomically (a flushed temp file, renamed): a gateway starting meanwhile reads the old file or the new one, never half of one.
      yield* Effect.tryPromise({
        try: () => writeFileAtomic(file, text, { mode: 0o644 }),
        catch: (e) => new CommandFailed({ message: `tools lock: cannot write ${file}: ${(e as Error).message}`, exitCode: 1 })
      })
      const templates = Array.from(parsed.right.templates.values())
      const count = templates.reduce((n, d) => n + d.length, 0)
      yield* Console.log(`wrote ${file}: ${count} definition${count === 1 ? "" : "s"} of ${templates.length} template${templates.length === 1 ? "" : "s"}`)
    })
).pipe(Command.withDescription(
  "Write the running gateway's pinned definitions to the tools lock file (to commit; `start --locked` then serves only what it holds)"
))

export const toolsCommand = Command.make("tools").pipe(
  Command.withDescription("Tool integrity: pending changes of pinned tool definitions, approval, the lock file"),
  Command.withSubcommands([diffCommand, approveCommand, lockCommand])
)
