/**
 * The one error the SDK's promises reject with: a plain `Error` whose `code` says what the caller
 * can do about it, made from the typed errors of the brain and the sync layers underneath.
 */

export type OmegaErrorCode =
  /** `OmegaTv.open` was given options it cannot use; `message` names the option. */
  | "invalid-options"
  /** An event, context, catalog item or argument did not match its schema; nothing was stored. */
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

/** Why an SDK call failed: `code` to act on, `message` to log, `cause` the error underneath. */
export class OmegaError extends Error {
  override readonly name = "OmegaError"
  readonly code: OmegaErrorCode
  /** For "sync" rejections, the shard's error code (for example "rate-limited" or "unauthorized"). */
  readonly shardCode: string | undefined

  constructor(
    code: OmegaErrorCode,
    message: string,
    options?: { readonly cause?: unknown; readonly shardCode?: string | undefined }
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.shardCode = options?.shardCode
  }
}
