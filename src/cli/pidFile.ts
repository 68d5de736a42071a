import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { writeFileAtomicSync } from "../registry/atomicWrite.js"

/**
 * What `start --background` records about the gateway it started, for `stop` and for the
 * commands that talk to it: its pid, its URL and where it logs; and what tells that process
 * apart from another that later gets the same pid (after a crash, a reboot, or a long time):
 * its start time (in clock ticks after boot, from /proc/PID/stat) and its command line.
 */
export interface PidRecord {
  readonly pid: number
  readonly url: string
  readonly log_file: string
  readonly config: string | null
  readonly started_at: string
  /** /proc/PID/stat's starttime (field 22); absent where there is no /proc (then only the pid is checked). */
  readonly process_start?: string | undefined
  /** /proc/PID/cmdline, its arguments joined by spaces. */
  readonly command?: string | undefined
}

/** The state directory: $XDG_STATE_HOME/mcp-gateway, or ~/.local/state/mcp-gateway. */
const stateDir = () => path.join(process.env.XDG_STATE_HOME || path.join(os.homedir(), ".local", "state"), "mcp-gateway")

export const defaultPidFile = () => path.join(stateDir(), "gateway.pid")

/** The log file beside a pid file (`gateway.pid` → `gateway.log`). */
export const logFileFor = (pidFile: string) => path.join(path.dirname(pidFile), `${path.basename(pidFile, ".pid")}.log`)

export const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    // EPERM: it exists, but is someone else's.
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** What tells a process apart from a later one of the same pid; undefined without /proc, or when it is gone. */
export const processIdentity = (pid: number): { readonly process_start: string; readonly command: string } | undefined => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    const start = fields[19]
    // (A zombie, or dead: a gateway killed under an init that does not reap stays one.)
    if (fields[0] === "Z" || fields[0] === "X") return undefined
    if (start === undefined || !/^\d+$/.test(start)) return undefined
    const command = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((a) => a !== "").join(" ")
    return { process_start: start, command }
  } catch {
    return undefined
  }
}

/**
 * Whether the recorded process runs: `running` (the same process: same start time and command
 * line), `gone` (no process has the pid), or `reused` (another process has it now).
 */
export type RecordedState = "running" | "gone" | "reused"

export const recordedState = (record: PidRecord): RecordedState => {
  if (!isAlive(record.pid)) return "gone"
  // (A system without /proc: the pid is all there is.)
  if (!fs.existsSync("/proc/self/stat")) return "running"
  const now = processIdentity(record.pid)
  if (now === undefined) return "gone"
  if (record.process_start === undefined) {
    // A record from before identities were kept: the process must at least run this program.
    return now.command.includes(path.basename(process.argv[1] ?? "main.js")) ? "running" : "reused"
  }
  return now.process_start === record.process_start && (record.command === undefined || now.command === record.command) ? "running" : "reused"
}

/** The record, if the file holds one, and whether its process still runs (the same process, not another of its pid). */
export const readPidFile = (file: string): (PidRecord & { readonly alive: boolean; readonly state: RecordedState }) | undefined => {
  let record: PidRecord
  try {
    record = JSON.parse(fs.readFileSync(file, "utf8"))
  } catch {
    return undefined
  }
  if (typeof record?.pid !== "number" || !Number.isInteger(record.pid) || record.pid <= 0 || typeof record.url !== "string") return undefined
  const state = recordedState(record)
  return { ...record, alive: state === "running", state }
}

/** What a stale record says, for the messages that report it. */
export const describeStale = (record: PidRecord & { readonly state: RecordedState }) => {
  if (record.state !== "reused") return `pid ${record.pid} is not running`
  const now = processIdentity(record.pid)
  return `pid ${record.pid} is now another process${now === undefined ? "" : ` (${now.command.slice(0, 200)})`}, not the gateway started at ${record.started_at}`
}

/**
 * Written whole through an exclusively created temp file and a rename (registry/atomicWrite.ts):
 * a reader never sees half a record, and the pid file cannot be made to write elsewhere.
 */
export const writePidFile = (file: string, record: PidRecord) => {
  fs.mkdirSync(path.dirname(file), { recursive: true })
  writeFileAtomicSync(file, JSON.stringify(record, null, 2) + "\n", { mode: 0o644 })
}

export const removePidFile = (file: string) => fs.rmSync(file, { force: true })
