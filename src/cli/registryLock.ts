import { Effect } from "effect"
import * as fs from "node:fs"
import { writeFileAtomicSync } from "../registry/atomicWrite.js"
import { CommandFailed } from "./CommandFailed.js"
import { isAlive } from "./pidFile.js"

/**
 * A running gateway owns its registry file: it writes `{file}.lock` (its pid) while it runs, so
 * that an offline edit, or a second gateway on the same file, sees it whatever its port or pid
 * file (the running gateway would overwrite their changes with its own state).
 */
export const lockFileOf = (registryFile: string) => `${registryFile}.lock`

/** The pid of the running gateway that holds the file, if one does. */
export const registryHolder = (registryFile: string): number | undefined => {
  try {
    const pid = Number(fs.readFileSync(lockFileOf(registryFile), "utf8").trim())
    return Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid) ? pid : undefined
  } catch {
    return undefined
  }
}

/** Holds the registry file for the scope's life (refused if a live gateway holds it). */
export const holdRegistryFile = (registryFile: string) =>
  Effect.acquireRelease(
    Effect.suspend(() => {
      const holder = registryHolder(registryFile)
      if (holder !== undefined) {
        return Effect.fail(
          new CommandFailed({
            message: `registry file ${registryFile} is in use by another gateway (pid ${holder}); give this one another registry_file, or stop that one`,
            exitCode: 1
          })
        )
      }
      return Effect.sync(() => writeFileAtomicSync(lockFileOf(registryFile), `${process.pid}\n`, { mode: 0o644 }))
    }),
    () => Effect.sync(() => fs.rmSync(lockFileOf(registryFile), { force: true }))
  )
