/** Checks shared by the protocol's text fields: ids, regions, titles and genres from outside. */
import { Schema } from "effect"

/**
 * Refuses text containing U+0000. These strings end up in PostgreSQL text and jsonb, which reject
 * NUL (error 22P05): caught here it is a typed decode error, not a failed write on the shard.
 */
export const isNulFree = Schema.makeFilter<string>(
  (s) => !s.includes("\u0000") || "must not contain the NUL character (U+0000)",
  { expected: "a string without the NUL character (U+0000)" }
)
