import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { makeQuicIdentity, quicIdentityFromPrivateKey } from "./QuicIdentity.ts"

describe("QuicIdentity", () => {
  it.effect("a stored private key gives back the same identity", () =>
    Effect.gen(function*() {
      const identity = makeQuicIdentity()
      assert.match(identity.peerId, /^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$/)
      assert.strictEqual(identity.privateKey.byteLength, 68)
      const again = yield* quicIdentityFromPrivateKey(identity.privateKey.slice())
      assert.strictEqual(again.peerId, identity.peerId)
      assert.deepStrictEqual(again.privateKey, identity.privateKey)
      assert.notStrictEqual(makeQuicIdentity().peerId, identity.peerId)
    }))

  it.effect("bytes that are not an Ed25519 key, or whose halves disagree, are refused", () =>
    Effect.gen(function*() {
      const identity = makeQuicIdentity()
      const tampered = identity.privateKey.slice()
      tampered[67] = tampered[67]! ^ 1
      for (const bytes of [new Uint8Array(0), new Uint8Array(68), identity.privateKey.subarray(0, 40), tampered]) {
        const error = yield* Effect.flip(quicIdentityFromPrivateKey(bytes))
        assert.strictEqual(error.reason, "invalid-options")
      }
    }))
})
