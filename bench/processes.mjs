// What the bench scripts share: free ports, and child processes started, awaited and stopped.
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"

const children = []
const cleanup = () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM")
}
process.on("exit", cleanup)
process.on("SIGINT", () => process.exit(130))
process.on("SIGTERM", () => process.exit(143))

/** Stops every process started here (also done on exit). */
export const stopAll = cleanup

export const freePort = () =>
  new Promise((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })

const logDir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-bench-logs-"))
process.on("exit", () => fs.rmSync(logDir, { recursive: true, force: true }))
let logs = 0

/**
 * Starts a process and waits until `ready(output)` says it is up (asked once before any output,
 * then as output comes). Its stdout and stderr go to a file, not to a pipe: the bench blocks in
 * wrk for seconds at a time, and a gateway logging a line per request into a pipe nobody reads
 * buffers the lines in its own memory (stderr is asynchronous on pipes), which the RSS rows would
 * then measure. The file is removed when the bench exits.
 */
export const start = (command, args, ready, options = {}) =>
  new Promise((resolve, reject) => {
    const file = path.join(logDir, `${logs++}-${path.basename(args[0] ?? command)}.log`)
    const fd = fs.openSync(file, "w")
    const child = spawn(command, args, { stdio: ["ignore", fd, fd], ...options })
    fs.closeSync(fd)
    children.push(child)
    let settled = false
    const output = () => fs.readFileSync(file, "utf8")
    const finish = (outcome) => {
      settled = true
      clearInterval(poll)
      clearTimeout(timer)
      outcome()
    }
    const check = () => {
      if (settled) return
      const value = ready(output())
      if (value !== undefined) finish(() => resolve({ child, value, log: file }))
    }
    const poll = setInterval(check, 25)
    const timer = setTimeout(() => finish(() => reject(new Error(`${command} did not start:\n${output()}`))), 60_000)
    child.on("exit", (code) => {
      if (!settled) finish(() => reject(new Error(`${command} exited (${code}):\n${output()}`)))
    })
    check()
  })

/** Stops one process and waits for it to exit (SIGKILL after `graceMs`). */
export const stop = (child, graceMs = 10_000) =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    const kill = setTimeout(() => child.kill("SIGKILL"), graceMs)
    child.once("exit", () => {
      clearTimeout(kill)
      resolve()
    })
    child.kill("SIGTERM")
  })

/** Registers a process started elsewhere, so that it is stopped with the others. */
export const own = (child) => {
  children.push(child)
  return child
}
