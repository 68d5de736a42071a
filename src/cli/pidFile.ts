import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/**
 * What `start --background` records about the gateway it started, for `stop` and for the
 * commands that talk to it: its pid, its URL and where it logs.
 */
export interface PidRecord {
  readonly pid: number
  readonly url: string
  readonly log_file: string
  readonly config: string | null
  readonly started_at: string
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

/** The record, if the file holds one, and whether its process still runs. */
export const readPidFile = (file: string): (PidRecord & { readonly alive: boolean }) | undefined => {
  let record: PidRecord
  try {
    record = JSON.parse(fs.readFileSync(file, "utf8"))
  } catch {
    return undefined
  }
  if (typeof record?.pid !== "number" || typeof record.url !== "string") return undefined
  return { ...record, alive: isAlive(record.pid) }
}

/** Written whole, then renamed over the old one: a reader never sees half a record. */
export const writePidFile = (file: string, record: PidRecord) => {
  fs.mkdirSync(path.dirname(file), { recursive: true })
  const temporary = `${file}.${process.pid}.tmp`
  fs.writeFileSync(temporary, JSON.stringify(record, null, 2) + "\n")
  fs.renameSync(temporary, file)
}

export const removePidFile = (file: string) => fs.rmSync(file, { force: true })
