import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"

/**
 * Writing a state file (the registry file, the registry lock, the ready file) so that neither a
 * crash nor another user of the directory can make the gateway write somewhere else:
 *
 * - the text goes to a temp file in the target's directory (so the rename is atomic), under a
 *   random name (`.{name}.{16 hex}.tmp`: nobody can plant something there in advance);
 * - the temp file is created exclusively (`wx`: O_CREAT|O_EXCL, plus O_NOFOLLOW where there is
 *   one): if anything exists at that name, a symlink included, the open fails instead of
 *   following it, and another random name is tried;
 * - it is flushed (fsync) before the rename, so a crash leaves the old file or the new one,
 *   never half of one; the rename replaces a symlink at the target itself, never writes through it.
 */

/** How many random names are tried before giving up (each fails only if something is already there). */
const ATTEMPTS = 5

const EXCLUSIVE = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | (fs.constants.O_NOFOLLOW ?? 0)

export interface AtomicWriteOptions {
  /** The file's permissions when created (default 0o600: state files may hold secrets). */
  readonly mode?: number
  /** The temp file's name in the target's directory (tests; default a random one). */
  readonly tempName?: (file: string) => string
}

const randomTempName = (file: string) => `.${path.basename(file)}.${crypto.randomBytes(8).toString("hex")}.tmp`

const tempPathOf = (file: string, options: AtomicWriteOptions) => path.join(path.dirname(file), (options.tempName ?? randomTempName)(file))

const isTaken = (e: unknown) => {
  const code = (e as NodeJS.ErrnoException).code
  // EEXIST: something is there (O_EXCL); ELOOP: a symlink (O_NOFOLLOW without O_EXCL's check first).
  return code === "EEXIST" || code === "ELOOP"
}

/** Writes `text` to `file` through an exclusive, flushed temp file and a rename. The directory must exist. */
export const writeFileAtomic = async (file: string, text: string, options: AtomicWriteOptions = {}): Promise<void> => {
  for (let attempt = 1;; attempt++) {
    const temp = tempPathOf(file, options)
    let handle: fs.promises.FileHandle
    try {
      handle = await fs.promises.open(temp, EXCLUSIVE, options.mode ?? 0o600)
    } catch (e) {
      if (isTaken(e) && attempt < ATTEMPTS) continue
      throw e
    }
    try {
      try {
        await handle.writeFile(text, "utf8")
        await handle.sync()
      } finally {
        await handle.close()
      }
      await fs.promises.rename(temp, file)
    } catch (e) {
      // (Ours: created by this open, so removing it removes nobody else's file.)
      await fs.promises.rm(temp, { force: true })
      throw e
    }
    return
  }
}

/** writeFileAtomic for the CLI's synchronous code (lock and ready files). */
export const writeFileAtomicSync = (file: string, text: string, options: AtomicWriteOptions = {}): void => {
  for (let attempt = 1;; attempt++) {
    const temp = tempPathOf(file, options)
    let fd: number
    try {
      fd = fs.openSync(temp, EXCLUSIVE, options.mode ?? 0o600)
    } catch (e) {
      if (isTaken(e) && attempt < ATTEMPTS) continue
      throw e
    }
    try {
      try {
        fs.writeFileSync(fd, text, "utf8")
        fs.fsyncSync(fd)
      } finally {
        fs.closeSync(fd)
      }
      fs.renameSync(temp, file)
    } catch (e) {
      fs.rmSync(temp, { force: true })
      throw e
    }
    return
  }
}
