import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SyncTransport } from "../SyncTransport.ts"

describe("SyncTransport.layerWebTransport", () => {
  it.effect("uses HTTP/3 only when the real addon is installed (here a stand-in is), and never when told not to", () =>
    Effect.gen(function*() {
      const addon: string = "@fails-components/webtransport-transport-http3-quiche"
      const stub = yield* Effect.promise(() => import(addon).then((m: { stub?: boolean }) => m.stub === true))
      const kind = Effect.gen(function*() {
        return (yield* SyncTransport).kind
      })
      assert.strictEqual(
        yield* Effect.provide(kind, SyncTransport.layerWebTransport()),
        stub ? "webtransport-h2" : "webtransport-h3"
      )
      assert.strictEqual(
        yield* Effect.provide(kind, SyncTransport.layerWebTransport({ http3: false })),
        "webtransport-h2"
      )
    }))
})
