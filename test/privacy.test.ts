import { assert, describe, it } from "@effect/vitest"
import { defaultBrainConfig, Embedder, OmegaBrain } from "@omega/brain"
import { type ContentId, decoder, PatternDelta, type ViewingEvent } from "@omega/protocol"
import { Effect } from "effect"

// What leaves the TV is the delta: it must validate against the protocol and carry nothing of
// what was watched (no content id, title, raw event or timestamp).
describe("what a brain shares", () => {
  it.effect("is a valid PatternDelta with no content id, title or watch timestamp in it", () =>
    Effect.gen(function*() {
      const brain = yield* OmegaBrain
      const embedder = yield* Embedder
      const watched: Array<ViewingEvent> = []
      for (let i = 0; i < 30; i++) {
        const genre = ["Comedy", "Drama", "Thriller"][i % 3]!
        const title = `Secret Title ${i} (199${i % 10})`
        const contentId = `secret-content-${i}` as ContentId
        yield* brain.addContent([{
          contentId,
          title,
          genres: [genre],
          embedding: yield* embedder.embedContent({ title, genres: [genre] })
        }])
        const event: ViewingEvent = {
          contentId,
          title,
          genres: [genre],
          watchedAt: 1_234_567_890_000 + i * 3_600_000,
          watchShare: 0.9,
          context: {
            timeOfDay: "evening",
            dayType: "weekday",
            recentWatches: watched.slice(-3).map((e) => e.contentId)
          }
        }
        watched.push(event)
        yield* brain.observe(event)
      }
      const delta = yield* brain.prepareSyncDelta()
      assert.isAbove(delta.added.length, 0)
      yield* decoder(PatternDelta, "PatternDelta")(delta)

      const text = JSON.stringify(delta, (_, v) => (v instanceof Float32Array ? Array.from(v) : v))
      for (const event of watched) {
        assert.notInclude(text, event.contentId)
        assert.notInclude(text, event.title)
        assert.notInclude(text, String(event.watchedAt))
      }
      for (const pattern of delta.added) {
        assert.sameMembers(Object.keys(pattern), ["id", "embedding", "successRate", "sampleCount", "context"])
        assert.notProperty(pattern.context, "recentWatches")
      }
    }).pipe(
      Effect.provide(OmegaBrain.layerTest({ ...defaultBrainConfig, runLearningLoops: false })),
      Effect.provide(Embedder.layerHashing)
    ))
})
