/** One way to validate input from outside: decode with a protocol schema, fail with ProtocolDecodeError. */
import { Effect, Schema } from "effect"
import { ProtocolDecodeError } from "./Errors.ts"

/** Decoder for `schema` whose failures are ProtocolDecodeError naming the schema and the issue. */
export const decoder = <S extends Schema.Top & { readonly DecodingServices: never }>(schema: S, name: string) => {
  const decode = Schema.decodeUnknownEffect(schema)
  return (input: unknown): Effect.Effect<S["Type"], ProtocolDecodeError> =>
    decode(input).pipe(
      Effect.mapError((error) => new ProtocolDecodeError({ schema: name, message: error.message }))
    )
}
