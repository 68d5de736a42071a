import { Duration, Effect, Exit, Runtime, type Scope } from "effect"
import { spawn } from "node:child_process"
import { DROP_TO_SANDBOX_USER, OWN_USER_NAMESPACE, SANDBOX_UID } from "./sandbox.js"

/** What to install when the sandbox cannot be set up. */
export const INSTALL_HINT = "install bubblewrap (apt-get install bubblewrap; dnf install bubblewrap)"

/** What a probe found out about sandboxes here, for one PATH. */
export interface SandboxVerdict {
  /** Why a sandbox cannot be set up, in one line that says what to do; undefined: it can. */
  readonly unavailable: string | undefined
  /**
   * A root gateway: whether each server can have a user namespace of its own (its processes
   * limit then counts its own processes only; see OWN_USER_NAMESPACE). Else why not (all
   * sandboxed servers then share one budget). Always true for a non-root gateway (bwrap makes one).
   */
  readonly ownUserNamespace: true | { readonly why: string }
}

const PROBE_TIMEOUT = Duration.seconds(5)

/** Runs a short command, without blocking: its exit code (null: it could not run, or timed out) and the first line of its stderr. */
const run = (command: string, args: ReadonlyArray<string>, pathVar: string | undefined) =>
  Effect.async<{ readonly code: number | null; readonly problem: string | undefined; readonly missing: boolean }>((resume) => {
    const child = spawn(command, args, { env: pathVar === undefined ? {} : { PATH: pathVar }, stdio: ["ignore", "ignore", "pipe"] })
    let stderr = ""
    let done = false
    child.stderr!.setEncoding("utf8").on("data", (d: string) => {
      if (stderr.length < 4096) stderr += d
    })
    const finish = (code: number | null, error?: NodeJS.ErrnoException) => {
      if (done) return
      done = true
      const line = stderr.trim().split("\n")[0]
      resume(Effect.succeed({ code, problem: line || error?.message || (code === null ? undefined : `exit ${code}`), missing: error?.code === "ENOENT" }))
    }
    child.once("error", (e) => finish(null, e))
    child.once("close", (code) => finish(code))
    return Effect.sync(() => void child.kill("SIGKILL"))
  }).pipe(
    Effect.timeoutTo({ duration: PROBE_TIMEOUT, onTimeout: () => ({ code: null, problem: "timed out", missing: false }), onSuccess: (r) => r })
  )

/**
 * Whether bubblewrap can run a sandbox here, with this PATH (`bwrap --ro-bind / / true`, a few
 * milliseconds) and, for a root gateway, whether SANDBOX_UID can make a user namespace in it
 * (as a server's start does). Asynchronous: it never holds the event loop.
 */
export const probeSandbox = (pathVar: string | undefined, options: { readonly asRoot: boolean; readonly bwrap?: string | undefined }) =>
  Effect.gen(function*() {
    const bwrap = options.bwrap ?? "bwrap"
    const plain = yield* run(bwrap, ["--ro-bind", "/", "/", "true"], pathVar)
    if (plain.code !== 0) {
      const unavailable = plain.missing
        ? `the sandbox cannot be set up: ${bwrap} (bubblewrap) is not on PATH; ${INSTALL_HINT}`
        : `the sandbox cannot be set up: ${bwrap} failed (${plain.problem ?? "no reason given"}); ` +
          `unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1) or bubblewrap missing (${INSTALL_HINT})`
      return { unavailable, ownUserNamespace: true } satisfies SandboxVerdict
    }
    if (!options.asRoot) return { unavailable: undefined, ownUserNamespace: true } satisfies SandboxVerdict
    const userns = yield* run(bwrap, ["--ro-bind", "/", "/", "--", ...DROP_TO_SANDBOX_USER, ...OWN_USER_NAMESPACE, "true"], pathVar)
    return {
      unavailable: undefined,
      ownUserNamespace: userns.code === 0 ? true : {
        why: `uid ${SANDBOX_UID} cannot make a user namespace here (${userns.problem ?? "no reason given"}): ` +
          `every sandboxed server's processes count against one "processes" limit; allow unprivileged user namespaces ` +
          `(sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1) to give each its own`
      }
    } satisfies SandboxVerdict
  })

/** The verdicts of one owner (the Transport's layer): each PATH probed once, asynchronously, then remembered. */
export interface SandboxProbes {
  /** The verdict for a PATH: at once if known, else after the one probe (shared by everyone asking meanwhile). */
  readonly verdict: (pathVar: string | undefined) => Effect.Effect<SandboxVerdict>
  /** The verdict if known; else undefined, and the probe starts (for callers that cannot wait: warm processes). */
  readonly known: (pathVar: string | undefined) => SandboxVerdict | undefined
}

/**
 * Probes run in `runtime`, owned by `scope` (one still running when it closes is interrupted,
 * its bwrap killed); what a probe finds is told once to `warn` where it is worth a warning.
 */
export const makeSandboxProbes = (options: {
  readonly runtime: Runtime.Runtime<never>
  readonly scope: Scope.Scope
  readonly asRoot: boolean
  readonly warn: (message: string) => void
  readonly bwrap?: string | undefined
}): SandboxProbes => {
  const known = new Map<string, SandboxVerdict>()
  const pending = new Map<string, Promise<SandboxVerdict>>()
  const start = (pathVar: string | undefined, key: string): Promise<SandboxVerdict> => {
    let settle!: (verdict: SandboxVerdict) => void
    const promise = new Promise<SandboxVerdict>((resolve) => (settle = resolve))
    pending.set(key, promise)
    Runtime.runFork(options.runtime)(
      probeSandbox(pathVar, options).pipe(
        Effect.tap((verdict) =>
          Effect.sync(() => {
            known.set(key, verdict)
            if (verdict.ownUserNamespace !== true) options.warn(verdict.ownUserNamespace.why)
          })
        ),
        Effect.forkIn(options.scope),
        Effect.flatMap((fiber) => fiber.await),
        // Interrupted (the owner stops): no verdict remembered, and nothing starts meanwhile.
        Effect.map((exit): SandboxVerdict =>
          Exit.isSuccess(exit) ? exit.value : { unavailable: "the sandbox was not probed: the gateway is stopping", ownUserNamespace: true }
        ),
        Effect.flatMap((verdict) =>
          Effect.sync(() => {
            pending.delete(key)
            settle(verdict)
          })
        )
      )
    )
    return promise
  }
  return {
    verdict: (pathVar) =>
      Effect.suspend(() => {
        const key = pathVar ?? ""
        const verdict = known.get(key)
        if (verdict !== undefined) return Effect.succeed(verdict)
        const promise = pending.get(key) ?? start(pathVar, key)
        return Effect.promise(() => promise)
      }),
    known: (pathVar) => {
      const key = pathVar ?? ""
      const verdict = known.get(key)
      if (verdict === undefined && !pending.has(key)) start(pathVar, key)
      return verdict
    }
  }
}
