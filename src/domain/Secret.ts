import { Schema } from "effect"

/**
 * A secret as users write it in a config or registration: the value itself, or
 * `{"env": "NAME"}` to read it from the gateway's environment, so that the file (and the
 * registry file, which persists the reference, never the value) holds no secret.
 */
export const SecretInput = Schema.Union(
  Schema.String,
  Schema.Struct({ env: Schema.String.pipe(Schema.pattern(/^[A-Za-z_][A-Za-z0-9_]*$/, { message: () => "expected an environment variable name" })) })
)
export type SecretInput = typeof SecretInput.Type

/** The value of a secret, or why it has none (an unset environment variable). */
export const resolveSecret = (secret: SecretInput, env: NodeJS.ProcessEnv = process.env): string | { readonly missing: string } => {
  if (typeof secret === "string") return secret
  const value = env[secret.env]
  return value === undefined || value === "" ? { missing: `environment variable ${secret.env} is not set` } : value
}

/** Header values with their secrets read (unset variables leave the header out: loading checked them). */
export const resolveHeaders = (
  headers: Readonly<Record<string, SecretInput>> | undefined,
  env: NodeJS.ProcessEnv = process.env
): Record<string, string> => {
  const out: Record<string, string> = {}
  if (headers === undefined) return out
  for (const [name, value] of Object.entries(headers)) {
    const resolved = resolveSecret(value, env)
    if (typeof resolved === "string") out[name] = resolved
  }
  return out
}

/** The problems with a set of headers' secrets, by header name (for config and registration errors). */
export const missingSecrets = (
  headers: Readonly<Record<string, SecretInput>> | undefined,
  env: NodeJS.ProcessEnv = process.env
): ReadonlyArray<readonly [string, string]> =>
  headers === undefined
    ? []
    : Object.entries(headers).flatMap(([name, value]) => {
      const resolved = resolveSecret(value, env)
      return typeof resolved === "string" ? [] : [[name, resolved.missing] as const]
    })

/** The same problems as lines naming where the headers are (`templates.x.instances[0]` → `...headers["Authorization"]: ...`). */
export const secretProblems = (headers: Readonly<Record<string, SecretInput>> | undefined, at: string): Array<string> =>
  missingSecrets(headers).map(([header, problem]) => `${at}.headers[${JSON.stringify(header)}]: ${problem}`)
