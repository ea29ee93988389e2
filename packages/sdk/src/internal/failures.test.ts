import { assert, describe, it } from "@effect/vitest"
import { EmbedError, IndexError, StoreError } from "@omega/brain"
import { ProtocolDecodeError } from "@omega/protocol"
import { SyncError, TransportError } from "@omega/sync"
import { Cause, Exit } from "effect"
import { OmegaError } from "../OmegaError.ts"
import { fromFailure, valueOrThrow } from "./failures.ts"

const thrown = (f: () => unknown): OmegaError => {
  try {
    f()
  } catch (error) {
    assert.instanceOf(error, OmegaError)
    return error as OmegaError
  }
  return assert.fail("expected a throw")
}

describe("OmegaError from the layers' failures", () => {
  it("gives every typed failure its code and keeps it as the cause", () => {
    const cases = [
      [new ProtocolDecodeError({ schema: "ViewingEvent", message: "watchShare: expected <= 1" }), "invalid-input"],
      [new StoreError({ operation: "observe", message: "disk full" }), "storage"],
      [new IndexError({ message: "bad vector" }), "index"],
      [new EmbedError({ message: "model missing" }), "embedder"],
      [new TransportError({ reason: "unavailable", message: "no binding" }), "transport"],
      [new SyncError({ reason: "timeout", message: "no DeltaAck" }), "sync"]
    ] as const
    for (const [failure, code] of cases) {
      const error = fromFailure(failure)
      assert.strictEqual(error.code, code, failure._tag)
      assert.include(error.message, failure.message)
      assert.strictEqual(error.cause, failure)
    }
  })

  it("names the schema that refused the input", () => {
    const error = fromFailure(new ProtocolDecodeError({ schema: "limit", message: "Expected an integer" }))
    assert.strictEqual(error.message, "limit: Expected an integer")
  })

  it("keeps the shard's code of a rejection, and calls a sync that failed on the store a storage failure", () => {
    const limited = fromFailure(
      new SyncError({ reason: "rejected", message: "rate-limited: wait", code: "rate-limited" })
    )
    assert.strictEqual(limited.code, "sync")
    assert.strictEqual(limited.shardCode, "rate-limited")
    assert.strictEqual(fromFailure(new SyncError({ reason: "storage", message: "locked" })).code, "storage")
  })

  it("turns defects into internal, interruptions into closed, and passes OmegaErrors through", () => {
    assert.strictEqual(fromFailure(new TypeError("x is undefined")).code, "internal")
    assert.strictEqual(fromFailure({ _tag: "SomethingElse", message: "?" }).code, "internal")
    const own = new OmegaError("timeout", "late")
    assert.strictEqual(fromFailure(own), own)
    assert.strictEqual(valueOrThrow(Exit.succeed(42)), 42)
    assert.strictEqual(thrown(() => valueOrThrow(Exit.fail(own))), own)
    assert.strictEqual(thrown(() => valueOrThrow(Exit.die(new RangeError("boom")))).code, "internal")
    assert.strictEqual(thrown(() => valueOrThrow(Exit.failCause(Cause.interrupt()))).code, "closed")
  })
})
