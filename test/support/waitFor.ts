/**
 * Waits until `condition` holds, checking every `interval` ms, and fails after `timeout` ms
 * saying what it waited for: what a test waits for instead of a fixed sleep. (For e2e tests,
 * processes.ts's waitUntil does the same at a pace fit for HTTP requests.)
 */
export const waitFor = async (
  condition: () => boolean | Promise<boolean>,
  { timeout = 10_000, interval = 10, what = "a condition" }: { timeout?: number; interval?: number; what?: string } = {}
) => {
  const deadline = Date.now() + timeout
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, interval))
  }
}
