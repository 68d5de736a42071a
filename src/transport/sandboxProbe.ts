import { spawnSync } from "node:child_process"

/** What to install when the sandbox cannot be set up. */
export const INSTALL_HINT = "install bubblewrap (apt-get install bubblewrap; dnf install bubblewrap)"

const probed = new Map<string, string | undefined>()

/**
 * Whether bubblewrap can run a sandbox here, with this PATH: undefined if it can, else why not,
 * in one line that says what to do. Probed once per PATH (`bwrap --ro-bind / / true`, a few
 * milliseconds, run synchronously the first time a sandboxed process is to start) and remembered.
 */
export const sandboxUnavailable = (pathVar: string | undefined, bwrap = "bwrap"): string | undefined => {
  const key = `${bwrap}\0${pathVar ?? ""}`
  if (probed.has(key)) return probed.get(key)
  const probe = spawnSync(bwrap, ["--ro-bind", "/", "/", "true"], {
    env: pathVar === undefined ? {} : { PATH: pathVar },
    stdio: ["ignore", "ignore", "pipe"],
    encoding: "utf8",
    timeout: 5000
  })
  const code = (probe.error as NodeJS.ErrnoException | undefined)?.code
  const why = probe.error === undefined && probe.status === 0
    ? undefined
    : code === "ENOENT"
    ? `the sandbox cannot be set up: ${bwrap} (bubblewrap) is not on PATH; ${INSTALL_HINT}`
    : `the sandbox cannot be set up: ${bwrap} failed (${(probe.stderr ?? "").trim().split("\n")[0] || probe.error?.message || `exit ${probe.status}`}); ` +
      `unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1) or bubblewrap missing (${INSTALL_HINT})`
  probed.set(key, why)
  return why
}
