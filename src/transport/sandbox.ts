import * as path from "node:path"
import type { SandboxSettings } from "../domain/Sandbox.js"

/**
 * What a runtime needs to start at all (the dynamic loader, libraries, interpreters, /etc for
 * users, DNS and certificates), bound read-only; the `-try` ones may be absent. Home directories
 * (/root, /home), /var, /srv, /opt, /mnt and the rest of the root are not there at all.
 */
const SYSTEM_DIRS = ["/usr", "/etc"] as const
const SYSTEM_DIRS_IF_PRESENT = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] as const

/** The unprivileged user a server runs as when the gateway is root (root ignores RLIMIT_NPROC): nobody. */
export const SANDBOX_UID = 65534

/** A root gateway's drop to SANDBOX_UID before the server runs: no groups, no capabilities, no new privileges. */
export const DROP_TO_SANDBOX_USER = [
  "setpriv",
  `--reuid=${SANDBOX_UID}`,
  `--regid=${SANDBOX_UID}`,
  "--clear-groups",
  "--inh-caps=-all",
  "--bounding-set=-all",
  "--no-new-privs",
  "--"
] as const

/**
 * A user namespace of the server's own, made after the drop: the kernel counts RLIMIT_NPROC per
 * user and user namespace, so each server's `processes` limit counts its own processes only,
 * not every process of SANDBOX_UID on the machine (a non-root gateway's bwrap makes one anyway).
 * No uid is mapped in it: the server stays SANDBOX_UID to the files it touches.
 */
export const OWN_USER_NAMESPACE = ["unshare", "--user", "--"] as const

export interface SandboxCommand {
  readonly command: string
  readonly args: ReadonlyArray<string>
  /** The server's working directory (absolute). */
  readonly cwd: string
  /** Its environment, as childEnvironment.ts made it. */
  readonly env: Readonly<Record<string, string>>
  /** The directory of the executable `command` resolves to (a node or a venv outside /usr), bound read-only if present. */
  readonly commandDir?: string | undefined
  /** Whether the gateway runs as root: the server then runs as SANDBOX_UID (setpriv), so that its process limit holds. */
  readonly asRoot: boolean
  /**
   * With `asRoot`: whether the server gets a user namespace of its own (OWN_USER_NAMESPACE), so
   * that its process limit is its own; false where SANDBOX_UID cannot make one (the probe says:
   * sandboxProbe.ts), and then every sandboxed server's processes count against one budget.
   */
  readonly ownUserNamespace?: boolean | undefined
  /** The bubblewrap executable (default "bwrap", found on PATH). */
  readonly bwrap?: string | undefined
}

/** What to spawn: bwrap, its arguments, and the environment it passes on to the server. */
export interface SandboxedSpawn {
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly env: Record<string, string>
}

const under = (dir: string, p: string) => p === dir || p.startsWith(dir.endsWith("/") ? dir : dir + "/")

/**
 * The bubblewrap command line that runs `command` in `sandbox`. Pure: it reads no file; paths
 * that may be absent use bwrap's `-try` forms, the ones the user gave must exist (bwrap then
 * fails the start with its own message naming the path).
 *
 * No `--new-session`: the gateway stops a server by signalling its process group (stdio.ts),
 * and the server must stay in bwrap's group for that (there is no terminal to protect).
 */
export const sandboxedSpawn = (sandbox: SandboxSettings, spec: SandboxCommand): SandboxedSpawn => {
  const args: Array<string> = []
  for (const dir of SYSTEM_DIRS) args.push("--ro-bind", dir, dir)
  for (const dir of SYSTEM_DIRS_IF_PRESENT) args.push("--ro-bind-try", dir, dir)
  args.push("--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp")
  args.push("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try")
  if (sandbox.network === "none") args.push("--unshare-net")
  // With the network, DNS: /etc/resolv.conf often links to systemd-resolved's file under /run.
  else args.push("--ro-bind-try", "/run/systemd/resolve", "/run/systemd/resolve")
  args.push("--die-with-parent")
  // The command's own directory (a node or a venv outside /usr), if no other bind shows it.
  const systemDirs: ReadonlyArray<string> = [...SYSTEM_DIRS, ...SYSTEM_DIRS_IF_PRESENT]
  const readable = [...sandbox.read]
  const commandDir = spec.commandDir !== undefined && ![...systemDirs, ...readable, ...sandbox.write].some((d) => under(d, spec.commandDir!))
    ? spec.commandDir
    : undefined
  // The directories that lead to what is bound below, made by bwrap in its own root, 0755: as
  // root, bwrap makes them 0700, which the unprivileged user the server runs as cannot traverse.
  // (Never one inside a bound path: that would be made in the real file system.)
  const targets = [...readable, ...sandbox.write, ...(commandDir === undefined ? [] : [commandDir])]
  const leading = new Set<string>()
  for (const target of targets) {
    for (let dir = path.dirname(target); dir !== "/" && dir !== "/tmp"; dir = path.dirname(dir)) leading.add(dir)
  }
  for (const dir of [...leading].sort((x, y) => x.length - y.length)) {
    if (![...systemDirs, ...targets].some((b) => under(b, dir))) args.push("--perms", "0755", "--dir", dir)
  }
  // After /tmp's tmpfs, so that a path under /tmp shows through.
  if (commandDir !== undefined) args.push("--ro-bind-try", commandDir, commandDir)
  for (const p of readable) args.push("--ro-bind", p, p)
  for (const p of sandbox.write) args.push("--bind", p, p)
  // Visible paths that hold the gateway's own files: covered by /dev/null (on a nodev mount: it cannot even be opened).
  const visible = [...SYSTEM_DIRS, ...readable, ...sandbox.write]
  for (const file of sandbox.hide ?? []) {
    if (visible.some((dir) => under(dir, file))) args.push("--ro-bind-try", "/dev/null", file)
  }
  args.push("--chdir", spec.cwd)

  // HOME where it exists and the server may see it, else the private /tmp (npm, pip and the
  // like write caches there).
  const env = { ...spec.env }
  const home = env.HOME
  if (home === undefined || ![...readable, ...sandbox.write].some((dir) => under(dir, home))) env.HOME = "/tmp"

  args.push("--")
  if (spec.asRoot) {
    args.push(...DROP_TO_SANDBOX_USER)
    if (spec.ownUserNamespace === true) args.push(...OWN_USER_NAMESPACE)
  }
  // The limits last: a user namespace made under a process limit caps the user's processes in
  // all its namespaces together by that limit, which would make the budget shared again.
  const limits = prlimitArgs(sandbox)
  if (limits.length > 0) args.push("prlimit", ...limits, "--")
  args.push(spec.command, ...spec.args)
  return { command: spec.bwrap ?? "bwrap", args, env }
}

/** The limits as prlimit's options (soft and hard alike). */
const prlimitArgs = (sandbox: SandboxSettings): Array<string> => {
  const l = sandbox.limits
  const out: Array<string> = []
  if (l.memoryMb !== undefined) out.push(`--data=${l.memoryMb * 1024 * 1024}`)
  if (l.cpuSeconds !== undefined) out.push(`--cpu=${l.cpuSeconds}`)
  if (l.openFiles !== undefined) out.push(`--nofile=${l.openFiles}`)
  if (l.processes !== undefined) out.push(`--nproc=${l.processes}`)
  return out
}

/** The directory of the executable a command names: itself if it has a slash, else its first match on PATH. */
export const commandDirOf = (command: string, cwd: string, pathVar: string | undefined, exists: (p: string) => boolean): string | undefined => {
  if (command.includes("/")) return path.dirname(path.resolve(cwd, command))
  for (const dir of (pathVar ?? "").split(":")) {
    if (dir !== "" && exists(path.join(dir, command))) return dir
  }
  return undefined
}
