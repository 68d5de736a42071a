import { Command, Options } from "@effect/cli"
import { Console, Effect } from "effect"
import { CommandFailed } from "./CommandFailed.js"
import { callGateway, describeFailure, resolveGatewayUrl, type Target, targetOptions } from "./gatewayClient.js"

const fetchOrFail = (command: string, url: string, path: string) =>
  Effect.flatMap(callGateway(url, "GET", path), (answer) =>
    answer.status === 200 ? Effect.succeed(answer.body) : Effect.fail(new CommandFailed({ message: `${command}: ${describeFailure(answer)}`, exitCode: 1 })))

/** One row per instance: its state from the registry, its traffic from the stats. */
const rowsOf = (registry: any, stats: any) =>
  Object.entries<any>(registry.templates ?? {}).flatMap(([template, t]) =>
    (t.instances as Array<any>).map((i) => {
      const traffic = stats.templates?.[template]?.instances?.[i.id] ?? {}
      // Drift between instances: its own lists differ from the template's pins (the registry's `drift` says how).
      const drifted = (t.drift?.instances as Array<any> | undefined)?.some((d) => d.id === i.id && d.matches_pins === false) === true
      return {
        template,
        strategy: t.load_balancer?.strategy ?? "",
        id: i.id as string,
        transport: i.transport as string,
        target: i.transport === "stdio"
          ? [i.command].flat().join(" ") + (i.sandbox === undefined || i.sandbox.preset === "off" ? "" : ` (sandbox: ${i.sandbox.preset}, network ${i.sandbox.network})`)
          : i.endpoint as string,
        // Saturated: a new session found every process slot busy lately (answered 503).
        status: i.draining
          ? "draining"
          : [i.status as string, ...(i.saturated === true ? ["saturated"] : []), ...(drifted ? ["drifted"] : [])].join(", "),
        saturated: i.saturated === true,
        drifted,
        session_processes: i.session_processes ?? null,
        breaker: i.circuit_breaker?.state ?? "",
        in_flight: i.active_requests ?? 0,
        requests: traffic.requests ?? 0,
        errors: traffic.errors ?? 0,
        p95_ms: traffic.latency_ms?.p95 ?? null,
        weight: i.weight,
        source: i.source as string
      }
    })
  )

/** Columns padded to their widest cell. */
const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>) => {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)))
  return [header, ...rows].map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join("  ").trimEnd()).join("\n")
}

export const statusCommand = Command.make(
  "status",
  { ...targetOptions, json: Options.boolean("json").pipe(Options.withDescription("Print JSON (for scripts) instead of a table")) },
  (flags) =>
    Effect.gen(function*() {
      const url = yield* resolveGatewayUrl(flags as Target)
      const [registry, stats] = yield* Effect.all([fetchOrFail("status", url, "/gateway/registry"), fetchOrFail("status", url, "/gateway/stats")], { concurrency: 2 })
      const rows = rowsOf(registry, stats)
      if (flags.json) {
        return yield* Console.log(JSON.stringify({ gateway: url, templates: Object.keys(registry.templates ?? {}).length, instances: rows }, null, 2))
      }
      if (rows.length === 0) return yield* Console.log(`${url}: no templates (register one with \`mcp-gateway register\`)`)
      const healthy = rows.filter((r) => r.status.split(",")[0] === "healthy").length
      const saturated = Array.from(new Set(rows.filter((r) => r.saturated).map((r) => r.template)))
      const drifted = rows.filter((r) => r.drifted).map((r) => `${r.template}/${r.id}`)
      yield* Console.log(
        `${url}: ${healthy} of ${rows.length} instances healthy in ${Object.keys(registry.templates).length} templates` +
          (saturated.length === 0 ? "" : `; saturated (every process slot busy, new sessions refused): ${saturated.join(", ")}`) +
          (drifted.length === 0 ? "" : `; drifted (their tools differ from the pins: \`mcp-gateway registry\` shows how): ${drifted.join(", ")}`) + "\n"
      )
      yield* Console.log(table(
        ["TEMPLATE", "INSTANCE", "TRANSPORT", "STATUS", "BREAKER", "IN-FLIGHT", "REQUESTS", "ERRORS", "P95 MS", "SOURCE", "TARGET"],
        rows.map((r) => [
          r.template, r.id, r.transport, r.status, r.breaker, String(r.in_flight), String(r.requests), String(r.errors),
          r.p95_ms === null ? "-" : String(Math.round(r.p95_ms * 10) / 10), r.source, r.target
        ])
      ))
    })
).pipe(Command.withDescription("Show the running gateway's templates and instances: health, breaker, load, traffic (--json for scripts)"))

export const registryCommand = Command.make("registry", targetOptions, (flags) =>
  Effect.gen(function*() {
    const url = yield* resolveGatewayUrl(flags)
    yield* Console.log(JSON.stringify(yield* fetchOrFail("registry", url, "/gateway/registry"), null, 2))
  })).pipe(Command.withDescription("Print the running gateway's registry as JSON (every template's settings and instances, with live state)"))
