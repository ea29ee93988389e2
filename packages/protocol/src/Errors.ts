/** Typed errors raised when input from outside does not match the protocol. */
import { Schema } from "effect"

/** Input failed validation against a protocol schema; `message` says which field and why. */
export class ProtocolDecodeError extends Schema.TaggedError<ProtocolDecodeError>()("ProtocolDecodeError", {
  schema: Schema.String,
  message: Schema.String
}) {}
