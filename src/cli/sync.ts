import { Command, Options } from "@effect/cli"
import { Console, Effect } from "effect"
import type { RegistryDiff } from "../registry/RegistryDiff.js"
import { CommandFailed } from "./CommandFailed.js"
import { callGateway, describeFailure, resolveGatewayUrl, targetOptions } from "./gatewayClient.js"

type Diff = RegistryDiff

/** The lines of one source's changes: `+ a/1`, `- b/2`, `~ c/3 (replaced)`, `! why`. */
const diffLines = (diff: Diff | undefined): Array<string> => {
  if (diff === undefined) return []
  return [
    ...diff.templatesAdded.map((t) => `  + template ${t}`),
    ...diff.templatesRemoved.map((t) => `  - template ${t}`),
    ...diff.templatesChanged.map((t) => `  ~ template ${t} (settings)`),
    ...diff.added.map((i) => `  + ${i}`),
    ...diff.removed.map((i) => `  - ${i} (draining)`),
    ...diff.replaced.map((i) => `  ~ ${i} (replaced)`),
    ...diff.skipped.map((s) => `  ! skipped ${s}`)
  ]
}

export const syncCommand = Command.make(
  "sync",
  { ...targetOptions, json: Options.boolean("json").pipe(Options.withDescription("Print the gateway's answer as JSON")) },
  (flags) =>
    Effect.gen(function*() {
      const url = yield* resolveGatewayUrl(flags)
      const answer = yield* callGateway(url, "POST", "/gateway/sync", {})
      if (answer.status !== 200) return yield* new CommandFailed({ message: `sync: ${describeFailure(answer)}`, exitCode: 1 })
      const report = answer.body as {
        config: { file: string; ok: boolean; problems?: ReadonlyArray<string>; diff: Diff; needs_restart: ReadonlyArray<string> } | null
        providers: ReadonlyArray<{ provider: string; plugin: string; ok: boolean; error?: string; diff?: Diff }>
      }
      const failures = [
        ...(report.config !== null && !report.config.ok ? [`config ${report.config.file}`] : []),
        ...report.providers.filter((p) => !p.ok).map((p) => `discovery ${p.provider}`)
      ]
      if (flags.json) yield* Console.log(JSON.stringify(report, null, 2))
      else {
        const lines: Array<string> = []
        if (report.config !== null) {
          const c = report.config
          const changes = diffLines(c.diff)
          lines.push(`config ${c.file}: ${!c.ok ? "refused, the running config stays" : changes.length === 0 ? "no change" : "applied"}`)
          lines.push(...(c.ok ? changes : (c.problems ?? []).map((p) => `  ${p}`)))
          if (c.needs_restart.length > 0) lines.push(`  (${c.needs_restart.join(", ")} changed: takes effect at the next start)`)
        }
        for (const p of report.providers) {
          const changes = diffLines(p.diff)
          lines.push(`discovery ${p.provider} (${p.plugin}): ${!p.ok ? `failed, its instances stay as they were: ${p.error}` : changes.length === 0 ? "no change" : "applied"}`)
          lines.push(...changes)
        }
        if (lines.length === 0) lines.push(`${url}: no config file and no discovery providers: nothing to sync`)
        yield* Console.log(lines.join("\n"))
      }
      if (failures.length > 0) {
        return yield* new CommandFailed({ message: `sync: ${failures.join(" and ")} failed (see above)`, exitCode: 1 })
      }
    })
).pipe(
  Command.withDescription(
    "Read the running gateway's config file again and run every discovery provider now; prints what was added, removed and changed " +
      "(instances registered by hand are never removed). Exit 1 if a source failed (the running state stays)"
  )
)
