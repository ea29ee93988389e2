/** How the typed failures of the layers under the SDK become OmegaErrors. */
import type { EmbedError, IndexError, StoreError } from "@omega/brain"
import type { ProtocolDecodeError } from "@omega/protocol"
import type { SyncError, TransportError } from "@omega/sync"
import { Cause, Exit } from "effect"
import { OmegaError, type OmegaErrorCode } from "../OmegaError.ts"

type LayerFailure = ProtocolDecodeError | StoreError | IndexError | EmbedError | TransportError | SyncError

// Typed by the failures' tags, so a failure added below without a code here does not compile.
const CODES = {
  ProtocolDecodeError: "invalid-input",
  StoreError: "storage",
  IndexError: "index",
  EmbedError: "embedder",
  TransportError: "transport",
  SyncError: "sync"
} as const satisfies Record<LayerFailure["_tag"], OmegaErrorCode>

const isLayerFailure = (error: unknown): error is LayerFailure =>
  typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string" &&
  Object.hasOwn(CODES, error._tag)

/** The OmegaError for a failure of the layers underneath (or a defect: "internal"). */
export const fromFailure = (error: unknown): OmegaError => {
  if (error instanceof OmegaError) return error
  if (!isLayerFailure(error)) {
    return new OmegaError("internal", error instanceof Error ? error.message : String(error), { cause: error })
  }
  if (error._tag === "ProtocolDecodeError") {
    return new OmegaError("invalid-input", `${error.schema}: ${error.message}`, { cause: error })
  }
  if (error._tag !== "SyncError") return new OmegaError(CODES[error._tag], error.message, { cause: error })
  // A sync that failed on the brain's own store is a storage failure, whatever carried it.
  const code = error.reason === "storage" ? "storage" : "sync"
  return new OmegaError(code, error.message, { cause: error, shardCode: error.code })
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
