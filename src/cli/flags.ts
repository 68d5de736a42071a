import { HelpDoc, Options, ValidationError } from "@effect/cli"
import { Effect } from "effect"

/**
 * Flags whose errors name the flag: @effect/cli's own choice and integer flags say only
 * "Expected one of the following cases: ..." or "'abc' is not a integer", which does not tell
 * a user which of several flags was wrong.
 */
const invalid = (message: string) => Effect.fail(ValidationError.invalidValue(HelpDoc.p(message)))

/** `--name VALUE` where VALUE is one of `choices`. */
export const choiceFlag = <const C extends string>(name: string, choices: ReadonlyArray<C>) =>
  Options.text(name).pipe(
    Options.withPseudoName(choices.join("|")),
    Options.mapEffect((value): Effect.Effect<C, ValidationError.ValidationError> =>
      (choices as ReadonlyArray<string>).includes(value)
        ? Effect.succeed(value as C)
        : invalid(`--${name}: expected one of ${choices.join(", ")}, got "${value}"`))
  )

/** `--name N` with N an integer from `min` to `max`. */
export const integerFlag = (name: string, min: number, max: number) =>
  Options.text(name).pipe(
    Options.withPseudoName("integer"),
    Options.mapEffect((value): Effect.Effect<number, ValidationError.ValidationError> => {
      const n = Number(value)
      return /^-?\d+$/.test(value.trim()) && n >= min && n <= max
        ? Effect.succeed(n)
        : invalid(`--${name}: expected an integer from ${min} to ${max}, got "${value}"`)
    })
  )
