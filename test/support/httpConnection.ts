import { Effect } from "effect"
import type { InstanceDefinition } from "../../src/domain/Instance.js"
import { makeHttpConnection } from "../../src/transport/http.js"

/**
 * An HTTP transport connection to `endpoint`, of the old protocol revision, logging nothing,
 * closed with the test's scope: what the unit suites of the HTTP transport talk through.
 */
export const connectHttp = (endpoint: string, id = "m") =>
  Effect.gen(function*() {
    const instance = { id, template: "t", transport: "http", endpoint, weight: 1, headers: {}, metadata: {} } as unknown as Extract<InstanceDefinition, { transport: "http" }>
    const quiet = { debug: () => {}, info: () => {}, warn: () => {} }
    const connection = makeHttpConnection(instance, { log: quiet, scope: yield* Effect.scope, runtime: yield* Effect.runtime<never>() }, {
      era: { get: () => "legacy", set: () => {} }
    })
    yield* Effect.addFinalizer(() => connection.close)
    return connection
  })
