import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { decoder, EMBEDDING_DIMENSIONS, EmbeddingFromNumbers, PatternDelta, ViewingEvent } from "./index.ts"

const unit = (dimensions = EMBEDDING_DIMENSIONS) => {
  const v = new Float32Array(dimensions)
  v[0] = 1
  return v
}

const shared = (overrides: Record<string, unknown> = {}) => ({
  id: "p1",
  embedding: unit(),
  successRate: 0.8,
  sampleCount: 5,
  context: { timeOfDay: "evening" },
  ...overrides
})

const decodeDelta = decoder(PatternDelta, "PatternDelta")

const failure = <A, E extends { readonly message: string }>(effect: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(effect)
    assert.isTrue(Exit.isFailure(exit), "expected decoding to fail")
    const error = yield* Effect.flip(effect)
    return error
  })

describe("PatternDelta", () => {
  it.effect("decodes a well-formed delta", () =>
    Effect.gen(function*() {
      const delta = yield* decodeDelta({ baseVersion: 1, version: 3, added: [shared()], updated: [], removed: ["p0"] })
      assert.strictEqual(delta.added[0]?.embedding.length, EMBEDDING_DIMENSIONS)
      assert.deepStrictEqual([...delta.removed], ["p0"] as Array<string>)
    }))

  it.effect("rejects an embedding of the wrong width with a typed error naming the schema", () =>
    Effect.gen(function*() {
      const error = yield* failure(
        decodeDelta({ baseVersion: 0, version: 1, added: [shared({ embedding: unit(128) })], updated: [], removed: [] })
      )
      assert.strictEqual(error._tag, "ProtocolDecodeError")
      assert.strictEqual(error.schema, "PatternDelta")
      assert.include(error.message, "384 dimensions")
    }))

  it.effect("rejects NaN and Infinity components", () =>
    Effect.gen(function*() {
      for (const bad of [NaN, Infinity, -Infinity]) {
        const embedding = unit()
        embedding[7] = bad
        const error = yield* failure(
          decodeDelta({ baseVersion: 0, version: 1, added: [shared({ embedding })], updated: [], removed: [] })
        )
        assert.include(error.message, "component 7")
      }
    }))

  it.effect("rejects the zero vector, which has no direction to compare", () =>
    Effect.gen(function*() {
      const error = yield* failure(
        decodeDelta({
          baseVersion: 0,
          version: 1,
          added: [shared({ embedding: new Float32Array(EMBEDDING_DIMENSIONS) })],
          updated: [],
          removed: []
        })
      )
      assert.include(error.message, "zero vector")
    }))

  it.effect("rejects success rates outside [0, 1] and negative sample counts", () =>
    Effect.gen(function*() {
      for (const patch of [{ successRate: 1.2 }, { successRate: -0.1 }, { sampleCount: -1 }, { successRate: NaN }]) {
        yield* failure(decodeDelta({ baseVersion: 0, version: 1, added: [shared(patch)], updated: [], removed: [] }))
      }
    }))

  it.effect("rejects a version older than its base", () =>
    Effect.gen(function*() {
      const error = yield* failure(decodeDelta({ baseVersion: 5, version: 2, added: [], updated: [], removed: [] }))
      assert.include(error.message, "older than baseVersion")
    }))
})

describe("ViewingEvent", () => {
  const decodeEvent = decoder(ViewingEvent, "ViewingEvent")
  const event = {
    contentId: "tt0114709",
    title: "Toy Story (1995)",
    genres: ["Animation", "Comedy"],
    watchedAt: 881250949000,
    watchShare: 0.8,
    context: { timeOfDay: "evening", dayType: "weekend", recentWatches: [] }
  }

  it.effect("decodes a valid event and rejects unknown contexts and shares above 1", () =>
    Effect.gen(function*() {
      const ok = yield* decodeEvent(event)
      assert.strictEqual(ok.title, "Toy Story (1995)")
      yield* failure(decodeEvent({ ...event, watchShare: 1.5 }))
      yield* failure(decodeEvent({ ...event, context: { ...event.context, timeOfDay: "teatime" } }))
      yield* failure(decodeEvent({ ...event, contentId: "" }))
    }))
})

describe("EmbeddingFromNumbers", () => {
  const decodeJson = decoder(EmbeddingFromNumbers, "Embedding")
  it.effect("turns a JSON array into a Float32Array and rejects short arrays", () =>
    Effect.gen(function*() {
      const v = yield* decodeJson(Array.from(unit()))
      assert.instanceOf(v, Float32Array)
      yield* failure(decodeJson([1, 2, 3]))
    }))
})
