import { Effect, Schema } from "effect"
import { spawn } from "node:child_process"
import * as path from "node:path"
import { CommandLine, DiscoveryError, DiscoveryPlugin } from "mcp-gateway/plugin"

/** More output than any list of instances needs: a runaway command is stopped, not buffered. */
const MAX_OUTPUT_BYTES = 4 * 1024 * 1024
/** How long a stopped command gets between SIGTERM and SIGKILL. */
const KILL_GRACE_MS = 2_000

/**
 * The escape hatch for Docker, Nomad, a CMDB: runs a command (no shell) every interval and reads
 * the instances from its standard output, a JSON document `{"templates": {"name": {"instances":
 * [...]}}}`. A non-zero exit, output that is not such a document, or a run past the provider's
 * `timeout` fails the run (its stderr's last lines in the log) and changes nothing. The process
 * group is killed if the run is cut short.
 */
export default DiscoveryPlugin.make({
  name: "command",
  description: "Instances printed as JSON by a command run on an interval",
  defaultIntervalSeconds: 30,
  options: Schema.Struct({
    /** argv, or one line split like a shell would (no shell runs it); a relative path is relative to the config's directory. */
    command: CommandLine,
    working_dir: Schema.optional(Schema.String),
    env: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String }))
  }),
  make: (options, context) =>
    Effect.sync(() => {
      const [program, ...args] = options.command
      const executable = program!.includes("/") ? path.resolve(context.baseDir, program!) : program!
      const cwd = path.resolve(context.baseDir, options.working_dir ?? ".")

      const run = Effect.async<string, DiscoveryError>((resume) => {
        const child = spawn(executable, args, {
          cwd,
          env: { ...process.env, ...options.env },
          stdio: ["ignore", "pipe", "pipe"],
          detached: true
        })
        const out: Array<Buffer> = []
        let size = 0
        let stderr = ""
        let done = false
        const finish = (effect: Effect.Effect<string, DiscoveryError>) => {
          if (done) return
          done = true
          resume(effect)
        }
        const killGroup = (signal: NodeJS.Signals) => {
          try {
            if (child.pid !== undefined) process.kill(-child.pid, signal)
          } catch {
            // already gone
          }
        }
        child.stdout.on("data", (chunk: Buffer) => {
          size += chunk.length
          if (size > MAX_OUTPUT_BYTES) {
            killGroup("SIGKILL")
            finish(Effect.fail(new DiscoveryError({ message: `${program}: printed more than ${MAX_OUTPUT_BYTES} bytes; stopped` })))
          } else out.push(chunk)
        })
        child.stderr.on("data", (chunk: Buffer) => {
          stderr = (stderr + chunk.toString("utf8")).slice(-2_000)
        })
        child.on("error", (e) => finish(Effect.fail(new DiscoveryError({ message: `cannot run ${program}: ${e.message}` }))))
        child.on("close", (code, signal) => {
          const tail = stderr.trim().split("\n").slice(-5).join(" | ")
          if (code === 0) finish(Effect.succeed(Buffer.concat(out).toString("utf8")))
          else {
            finish(Effect.fail(new DiscoveryError({
              message: `${program} ${signal === null ? `exited with code ${code}` : `was killed (${signal})`}${tail === "" ? "" : `: ${tail}`}`
            })))
          }
        })
        // Cut short (the provider's timeout, shutdown): the whole process group goes.
        return Effect.sync(() => {
          done = true
          killGroup("SIGTERM")
          setTimeout(() => killGroup("SIGKILL"), KILL_GRACE_MS).unref()
        })
      })

      const discover = Effect.gen(function*() {
        const text = yield* run
        const json = yield* Effect.try({
          try: () => JSON.parse(text) as unknown,
          catch: (e) => new DiscoveryError({ message: `${program}: its output is not JSON (${(e as Error).message})` })
        })
        return yield* DiscoveryPlugin.decodeDocument(json, `${program} output`)
      })

      return { discover }
    })
})
