import { Args, Command } from "@effect/cli"
import { Console, Effect, Option } from "effect"
import { hashApiKey, newApiKey } from "../domain/apiKey.js"

/**
 * `mcp-gateway hash-key [KEY]`: prints a new API key (or hashes the one given) and the hash to
 * put in the config's `auth.api_keys`. The key itself is shown once, here: the gateway keeps
 * only its hash.
 */
export const hashKeyCommand = Command.make(
  "hash-key",
  {
    key: Args.text({ name: "KEY" }).pipe(
      Args.withDescription("An existing key to hash (default: generate a new random key)"),
      Args.optional
    )
  },
  ({ key }) =>
    Effect.gen(function*() {
      const value = Option.getOrElse(key, newApiKey)
      const hash = hashApiKey(value)
      if (Option.isNone(key)) yield* Console.log(`key:  ${value}`)
      yield* Console.log(`hash: ${hash}`)
      yield* Console.log(
        `\nIn the config:  "auth": { "api_keys": [ { "id": "my-client", "hash": "${hash}", "scopes": ["mcp:call"] } ] }` +
          (Option.isNone(key) ? `\nGive the key to the client (Authorization: Bearer <key>, or X-API-Key); it is not stored anywhere.` : "")
      )
    })
).pipe(Command.withDescription("Print a new API key and its hash for auth.api_keys (or the hash of a key given)"))
