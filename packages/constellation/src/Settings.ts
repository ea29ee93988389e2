/** Whole-number settings from the environment, shared by the shard server and the federation worker. */
import { Config, Data, Effect, Option } from "effect"

/** A setting that is set but cannot be used; each app turns it into its own config error. */
export class SettingError extends Data.TaggedError("SettingError")<{ readonly message: string }> {}

/** The whole numbers a setting may take, and a word on what its edge means when that is not obvious. */
export interface IntegerRange {
  readonly min: number
  readonly max?: number
  readonly hint?: string
}

export const PORT_RANGE: IntegerRange = { min: 1, max: 65_535 }

/**
 * An integer setting, None when unset; anything but plain digits making a whole number in `range`
 * (`1e3`, `0x10`, `-1` where 0 is the floor) is a SettingError naming the variable and the value.
 */
export const integerSetting = (name: string, range: IntegerRange) =>
  Effect.gen(function*() {
    const text = yield* Config.String(name).pipe(Config.option)
    if (Option.isNone(text)) return Option.none<number>()
    const value = /^\s*[+-]?\d+\s*$/.test(text.value) ? Number(text.value) : Number.NaN
    const max = range.max ?? Number.MAX_SAFE_INTEGER
    if (Number.isSafeInteger(value) && value >= range.min && value <= max) return Option.some(value)
    const allowed = range.max === undefined ? `>= ${range.min}` : `from ${range.min} to ${range.max}`
    return yield* new SettingError({
      message: `${name} must be a whole number ${allowed}, got ${JSON.stringify(text.value)}${
        range.hint === undefined ? "" : ` (${range.hint})`
      }`
    })
  })

/** `value` when the setting is unset. */
export const orDefault = (value: number) => <E, R>(setting: Effect.Effect<Option.Option<number>, E, R>) =>
  Effect.map(setting, Option.getOrElse(() => value))
