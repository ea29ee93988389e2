import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { decoder } from "./Decode.ts"
import { ContentEmbedding, PatternDelta, PatternId, Region, TrendSignal } from "./Pattern.ts"
import { ContentId, Genre, Title, ViewingEvent } from "./Viewing.ts"
import { makeBinaryLayout } from "./wire/Binary.ts"
import { decodeFrame } from "./wire/Codec.ts"
import { DeviceId, SessionId, SyncFrame } from "./wire/Frame.ts"
import { quantize } from "./wire/Quantize.ts"

const NUL = "\u0000"

const unit = () => {
  const v = new Float32Array(384)
  v[0] = 1
  return v
}

/** Every text field that reaches the shard's database, with a value it accepts. */
const fields: ReadonlyArray<readonly [string, Schema.Codec<unknown, string>, string]> = [
  ["ContentId", ContentId, "tt0114709"],
  ["PatternId", PatternId, "p1"],
  ["Region", Region, "eu-west"],
  ["DeviceId", DeviceId, "tv-0001"],
  ["SessionId", SessionId, "0e5c1a4e-5d7e-4c8e-9a53-2f1b7d9c0a11"],
  ["Title", Title, "Amélie (2001) — 天気の子"],
  ["Genre", Genre, "Drama"]
]

describe("text fields refuse NUL", () => {
  it.effect("each field accepts normal text and refuses U+0000 anywhere in it, saying why", () =>
    Effect.gen(function*() {
      for (const [name, schema, ok] of fields) {
        const decode = decoder(schema, name)
        assert.strictEqual(yield* decode(ok), ok, name)
        for (const bad of [NUL, `${ok}${NUL}`, `${NUL}${ok}`, `${ok.slice(0, 1)}${NUL}${ok.slice(1)}`]) {
          const error = yield* Effect.flip(decode(bad))
          assert.strictEqual(error._tag, "ProtocolDecodeError", name)
          assert.strictEqual(error.schema, name)
          assert.include(error.message, "must not contain the NUL character (U+0000)", name)
        }
      }
    }))

  it.effect("inside the structures that carry them, naming the field", () =>
    Effect.gen(function*() {
      const event = {
        contentId: "tt0114709",
        title: "Toy Story (1995)",
        genres: ["Animation", "Comedy"],
        watchedAt: 881250949000,
        watchShare: 0.8,
        context: { timeOfDay: "evening", dayType: "weekend", recentWatches: [] }
      }
      const decodeEvent = decoder(ViewingEvent, "ViewingEvent")
      yield* decodeEvent(event)
      for (
        const [patch, field] of [
          [{ contentId: `tt${NUL}` }, "contentId"],
          [{ title: `Toy${NUL}Story` }, "title"],
          [{ genres: ["Animation", `Com${NUL}edy`] }, "genres"],
          [{ context: { ...event.context, recentWatches: [`x${NUL}`] } }, "recentWatches"]
        ] as const
      ) {
        const error = yield* Effect.flip(decodeEvent({ ...event, ...patch }))
        assert.include(error.message, "NUL", field)
        assert.include(error.message, field)
      }

      const item = { contentId: "ml-1", title: "Heat", genres: ["Crime"], embedding: unit() }
      const decodeItem = decoder(ContentEmbedding, "ContentEmbedding")
      yield* decodeItem(item)
      const genre = yield* Effect.flip(decodeItem({ ...item, genres: [`Cri${NUL}me`] }))
      assert.include(genre.message, "NUL")

      const trend = yield* Effect.flip(
        decoder(TrendSignal, "TrendSignal")({ contentId: "ml-1", region: `eu${NUL}`, score: 1, velocity: 0 })
      )
      assert.include(trend.message, "region")

      const pattern = { id: `p${NUL}`, embedding: unit(), successRate: 0.8, sampleCount: 3, context: {} }
      const delta = yield* Effect.flip(
        decoder(PatternDelta, "PatternDelta")({
          baseVersion: 0,
          version: 1,
          added: [pattern],
          updated: [],
          removed: []
        })
      )
      assert.include(delta.message, "NUL")
    }))

  it.effect("a frame from a peer with NUL in its device id or region is a WireDecodeError", () =>
    Effect.gen(function*() {
      const layout = makeBinaryLayout(SyncFrame)
      const hello = (patch: object) =>
        Uint8Array.from([
          0x02,
          ...layout.write({ _tag: "Hello", deviceId: "tv-1", token: "t", region: "eu", protocolVersion: 1, ...patch })
        ])
      assert.strictEqual((yield* decodeFrame(hello({})))._tag, "Hello")
      for (const patch of [{ deviceId: `tv${NUL}1` }, { region: `e${NUL}u` }]) {
        const error = yield* Effect.flip(decodeFrame(hello(patch)))
        assert.strictEqual(error.reason, "schema")
        assert.include(error.message, "NUL")
      }
      const upload = Uint8Array.from([
        0x02,
        ...layout.write({
          _tag: "DeltaUpload",
          delta: {
            baseVersion: 0,
            version: 1,
            added: [{ id: `p${NUL}`, embedding: quantize(unit()), successRate: 0.8, sampleCount: 3, context: {} }],
            updated: [],
            removed: []
          }
        })
      ])
      assert.strictEqual((yield* Effect.flip(decodeFrame(upload))).reason, "schema")
    }))
})
