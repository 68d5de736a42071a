// What the bench scripts share: free ports, and child processes started, awaited and stopped.
import { spawn } from "node:child_process"
import * as net from "node:net"

const children = []
const cleanup = () => {
  for (const child of children) if (child.exitCode === null) child.kill("SIGTERM")
}
process.on("exit", cleanup)
process.on("SIGINT", () => process.exit(130))

/** Stops every process started here (also done on exit). */
export const stopAll = cleanup

export const freePort = () =>
  new Promise((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })

/** Starts a process and waits until `ready(output)` says it is up (it is asked once before any output). */
export const start = (command, args, ready, options = {}) =>
  new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...options })
    children.push(child)
    let output = ""
    const timer = setTimeout(() => reject(new Error(`${command} did not start:\n${output}`)), 30_000)
    const check = (chunk) => {
      output += chunk
      const value = ready(output)
      if (value !== undefined) {
        clearTimeout(timer)
        resolve({ child, value })
      }
    }
    child.stdout.setEncoding("utf8").on("data", check)
    child.stderr.setEncoding("utf8").on("data", check)
    child.on("exit", (code) => reject(new Error(`${command} exited (${code}):\n${output}`)))
    check("")
  })

/** Registers a process started elsewhere, so that it is stopped with the others. */
export const own = (child) => {
  children.push(child)
  return child
}
