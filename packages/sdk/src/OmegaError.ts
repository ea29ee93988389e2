/**
 * The one error the SDK's promises reject with: a plain `Error` whose `code` says what the caller
 * can do about it, made from the typed errors of the brain and the sync layers underneath.
 */
import { Cause, Exit } from "effect"

export type OmegaErrorCode =
  /** `OmegaTv.open` was given options it cannot use; `message` names the option. */
  | "invalid-options"
  /** An event, context or catalog item did not match the protocol schema; nothing was stored. */
  | "invalid-input"
  /** The brain's SQLite store failed; nothing partial was committed. */
  | "storage"
  /** The brain's vector index failed. */
  | "index"
  /** The embedding model could not be loaded or run. */
  | "embedder"
  /** The transport could not start (for example its native binding did not load). */
  | "transport"
  /** A sync did not complete (rejected, timed out, disconnected); its delta stays in the outbox. */
  | "sync"
  /** `syncNow` or `connected` on a TV opened without a shard. */
  | "no-shard"
  /** `connected` waited longer than it was allowed to. */
  | "timeout"
  /** The TV was closed before or while the call ran. */
  | "closed"
  /** A bug: the cause says where. */
  | "internal"

export class OmegaError extends Error {
  override readonly name = "OmegaError"
  readonly code: OmegaErrorCode
  /** For "sync" rejections, the shard's error code (for example "rate-limited" or "unauthorized"). */
  readonly shardCode: string | undefined

  constructor(
    code: OmegaErrorCode,
    message: string,
    options?: { readonly cause?: unknown; readonly shardCode?: string }
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.shardCode = options?.shardCode
  }
}

const CODES: Readonly<Record<string, OmegaErrorCode>> = {
  ProtocolDecodeError: "invalid-input",
  StoreError: "storage",
  IndexError: "index",
  EmbedError: "embedder",
  TransportError: "transport",
  SyncError: "sync"
}

/** The OmegaError for a typed failure of the layers underneath. */
export const fromFailure = (error: unknown): OmegaError => {
  if (error instanceof OmegaError) return error
  const tag = typeof error === "object" && error !== null && "_tag" in error ? String(error._tag) : undefined
  const code = tag === undefined ? undefined : CODES[tag]
  const message = error instanceof Error ? error.message : String(error)
  if (code === undefined) return new OmegaError("internal", message, { cause: error })
  const shardCode = typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined
  return new OmegaError(code, message, shardCode === undefined ? { cause: error } : { cause: error, shardCode })
}

/** The value of `exit`, or the OmegaError its failure maps to (an interruption means the TV closed). */
export const valueOrThrow = <A, E>(exit: Exit.Exit<A, E>): A => {
  if (Exit.isSuccess(exit)) return exit.value
  const cause = exit.cause
  if (Cause.hasInterruptsOnly(cause)) throw new OmegaError("closed", "the TV was closed while the call ran")
  const failure = Cause.findErrorOption(cause)
  if (failure._tag === "Some") throw fromFailure(failure.value)
  throw new OmegaError("internal", Cause.pretty(cause), { cause: Cause.squash(cause) })
}
