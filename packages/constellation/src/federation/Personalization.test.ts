import { assert, describe, it } from "@effect/vitest"
import {
  type ContentEmbedding,
  type ContentId,
  EMBEDDING_DIMENSIONS,
  type GlobalPattern,
  type PatternId
} from "@omega/protocol"
import { gaussian, seededRandom, unit } from "../internal/vectors.ts"
import { contentBatches, newContentFor } from "./ContentDistribution.ts"
import { personalizedPatterns } from "./Personalization.ts"

const random = seededRandom(3)
const direction = () => unit(Array.from({ length: EMBEDDING_DIMENSIONS }, () => gaussian(random)))!

const global = (id: string, embedding: Float32Array, deviceCount: number): GlobalPattern => ({
  id: id as PatternId,
  embedding,
  successRate: 0.9,
  sampleCount: 10 * deviceCount,
  deviceCount,
  context: {}
})

describe("personalizedPatterns", () => {
  const tastes = Array.from({ length: 6 }, () => direction())
  const patterns = tastes.map((t, i) => global(`g${i}`, t, 10 + i))

  it("sends a TV the global patterns nearest its own, then the region's best", () => {
    const mine = [tastes[1]!.map((x, d) => x + 0.1 * tastes[2]![d]!)]
    const sent = personalizedPatterns(patterns, mine, { limit: 3, nearestShare: 0.67 })
    assert.deepStrictEqual(sent.map((p) => p.id), ["g1", "g2", "g5"])
  })

  it("sends the best patterns to a TV that shared nothing yet, and never more than it has", () => {
    assert.deepStrictEqual(personalizedPatterns(patterns, [], { limit: 2, nearestShare: 1 }).map((p) => p.id), [
      "g5",
      "g4"
    ])
    assert.strictEqual(personalizedPatterns(patterns, [tastes[0]!], { limit: 100, nearestShare: 1 }).length, 6)
  })
})

describe("new content distribution", () => {
  const item = (i: number, embedding = direction()): ContentEmbedding => ({
    contentId: `new-${i}` as ContentId,
    title: `New ${i}`,
    genres: [],
    embedding
  })

  it("sends everything when it fits, else what is nearest the region's tastes", () => {
    const taste = direction()
    const items = [item(0), item(1), item(2, taste), item(3)]
    assert.strictEqual(newContentFor(items, [], 10).length, 4)
    const chosen = newContentFor(items, [global("g", taste, 5)], 1)
    assert.deepStrictEqual(chosen.map((i) => i.contentId), ["new-2"])
    assert.deepStrictEqual(newContentFor(items, [], 2).map((i) => i.contentId), ["new-0", "new-1"])
  })

  it("splits items into ContentUpdate-sized batches", () => {
    const batches = contentBatches(Array.from({ length: 130 }, (_, i) => i))
    assert.deepStrictEqual(batches.map((b) => b.length), [64, 64, 2])
  })
})
