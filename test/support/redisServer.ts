import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { freePort, tempDir } from "./processes.js"

/**
 * A real redis-server (Debian's, which .ci/run installs) on a free loopback port, its data in a
 * temp directory (append-only file, so a restart keeps it unless `fresh`). `stop` kills it as a
 * crash would; `start` brings it back on the same port; `pause`/`resume` freeze and thaw it.
 */
export const startRedis = async () => {
  const port = await freePort()
  const dir = tempDir("gw-redis-")
  let child: ChildProcess | undefined
  const start = async (options: { readonly fresh?: boolean } = {}) => {
    if (options.fresh === true) for (const f of fs.readdirSync(dir)) fs.rmSync(path.join(dir, f), { recursive: true, force: true })
    child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no"], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (output += d))
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${output}`)), 10_000)
      const check = () => {
        if (/Ready to accept connections/.test(output)) {
          clearTimeout(timer)
          resolve()
        }
      }
      child!.stdout!.on("data", check)
      child!.once("exit", (code) => reject(new Error(`redis-server exited (${code}):\n${output}`)))
    })
  }
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child === undefined || child.exitCode !== null) return resolve()
      child.once("exit", () => resolve())
      child.kill("SIGKILL")
      // (A paused one is killed all the same; SIGCONT in case.)
      child.kill("SIGCONT")
    })
  /** SIGSTOP / SIGCONT: a Redis that keeps its connections and answers nothing (paused, swapping, failing over). */
  const pause = () => void child?.kill("SIGSTOP")
  const resume = () => void child?.kill("SIGCONT")
  await start()
  return { url: `redis://127.0.0.1:${port}`, port, start, stop, pause, resume }
}
