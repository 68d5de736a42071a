// What the bench scripts share: free ports, and child processes started, awaited and stopped.
import { spawn } from "node:child_process"
import * as net from "node:net"

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

/**
 * Starts a process and waits until `ready(output)` says it is up (it is asked once before any
 * output). Output after that is read and dropped: a gateway logs a line per request, and keeping
 * (or even decoding) it would cost the bench process CPU on the machine being measured.
 */
export const start = (command, args, ready, options = {}) =>
  new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...options })
    children.push(child)
    let output = ""
    let up = false
    const timer = setTimeout(() => reject(new Error(`${command} did not start:\n${output}`)), 60_000)
    const check = (chunk) => {
      if (up) return
      output += chunk.toString()
      const value = ready(output)
      if (value !== undefined) {
        up = true
        clearTimeout(timer)
        output = ""
        resolve({ child, value })
      }
    }
    // Buffers, decoded only until ready (a chunk split inside a character only matters to the ready test).
    child.stdout.on("data", check)
    child.stderr.on("data", check)
    child.on("exit", (code) => {
      clearTimeout(timer)
      if (!up) reject(new Error(`${command} exited (${code}):\n${output}`))
    })
    check("")
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
