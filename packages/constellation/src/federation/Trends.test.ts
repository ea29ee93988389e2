import { assert, describe, it } from "@effect/vitest"
import { type ContentEmbedding, type ContentId, EMBEDDING_DIMENSIONS } from "@omega/protocol"
import { gaussian, seededRandom, unit } from "../internal/vectors.ts"
import { catalogEvidence, catalogMatrix, decayed, TrendDetector } from "./Trends.ts"

const random = seededRandom(7)
const direction = () => unit(Array.from({ length: EMBEDDING_DIMENSIONS }, () => gaussian(random)))!
const id = (s: string) => s as ContentId
const item = (contentId: string): ContentEmbedding => ({
  contentId: id(contentId),
  title: contentId,
  genres: [],
  embedding: direction()
})

const HOUR = 3_600_000
const DAY = 24 * HOUR

describe("catalogEvidence", () => {
  it("credits the items a pattern averages, with shares summing to 1", () => {
    const items = Array.from({ length: 50 }, (_, i) => item(`m${i}`))
    const pattern = unit(items[3]!.embedding.map((x, d) => x + items[17]!.embedding[d]!))!
    const evidence = catalogEvidence(pattern, catalogMatrix(items), { candidates: 8, maxItems: 8, minSimilarity: 0.05 })
    assert.deepStrictEqual(evidence.slice(0, 2).map((e) => e.contentId).sort(), ["m17", "m3"])
    assert.isAbove(evidence[0]!.share + evidence[1]!.share, 0.99)
    assert.closeTo(evidence[0]!.share, 0.5, 0.05)
    assert.closeTo(evidence.reduce((s, e) => s + e.share, 0), 1, 1e-9)
  })

  it("decodes no more items than the pattern's sample count says it averages", () => {
    const items = Array.from({ length: 20 }, (_, i) => item(`m${i}`))
    const pattern = unit(items[0]!.embedding.map((x, d) => 3 * x + items[1]!.embedding[d]! + items[2]!.embedding[d]!))!
    const evidence = catalogEvidence(pattern, catalogMatrix(items), undefined, 1)
    assert.deepStrictEqual(evidence.map((e) => [e.contentId, e.share]), [["m0", 1]])
  })

  it("credits nothing when no item is similar enough", () => {
    const items = [item("a"), item("b")]
    const opposite = items[0]!.embedding.map((x) => -x)
    assert.deepStrictEqual(catalogEvidence(opposite, catalogMatrix(items)), [])
  })
})

describe("TrendDetector", () => {
  const config = { halfLifeMs: DAY, minDevices: 3, maxEvidencePerDevice: 1, deviceMemory: 64 }
  const t0 = 1_700_000_000_000

  it("reports an item only once k distinct devices stand behind it", () => {
    const trends = new TrendDetector(config)
    trends.observe("eu", "tv-1", [{ contentId: id("a"), weight: 1 }], t0)
    trends.observe("eu", "tv-1", [{ contentId: id("a"), weight: 1 }], t0)
    trends.observe("eu", "tv-2", [{ contentId: id("a"), weight: 1 }], t0)
    assert.deepStrictEqual(trends.signals("eu", t0, 10), [])
    trends.observe("eu", "tv-3", [{ contentId: id("a"), weight: 1 }], t0)
    assert.deepStrictEqual(trends.signals("eu", t0, 10).map((t) => [t.contentId, t.region]), [["a", "eu"]])
    assert.deepStrictEqual(trends.signals("us", t0, 10), [])
  })

  it("bounds each device's evidence per upload and lets evidence fade with the half-life", () => {
    const trends = new TrendDetector(config)
    for (const tv of ["tv-1", "tv-2", "tv-3"]) trends.observe("eu", tv, [{ contentId: id("a"), weight: 1e9 }], t0)
    assert.closeTo(trends.signals("eu", t0, 1)[0]!.score, 3, 1e-9)
    assert.closeTo(trends.signals("eu", t0 + DAY, 1)[0]!.score, 1.5, 1e-9)
    assert.closeTo(decayed(8, 3 * DAY, DAY), 1, 1e-12)
  })

  it("ranks what is gaining viewers first, with a positive velocity, and a fading item negative", () => {
    const trends = new TrendDetector(config)
    for (const tv of ["tv-1", "tv-2", "tv-3", "tv-4"]) {
      trends.observe("eu", tv, [{ contentId: id("old"), weight: 1 }], t0)
    }
    for (const tv of ["tv-1", "tv-2", "tv-3"]) trends.observe("eu", tv, [{ contentId: id("new"), weight: 0.5 }], t0)
    assert.deepStrictEqual(trends.signals("eu", t0, 10).map((t) => t.contentId), ["old", "new"])
    const later = t0 + 12 * HOUR
    for (let tv = 0; tv < 10; tv++) trends.observe("eu", `tv-${tv}`, [{ contentId: id("new"), weight: 1 }], later)
    const signals = trends.signals("eu", later, 10)
    assert.deepStrictEqual(signals.map((t) => t.contentId), ["new", "old"])
    assert.isAbove(signals[0]!.velocity, 0)
    assert.isBelow(signals[1]!.velocity, 0)
    assert.deepStrictEqual(trends.signals("eu", later, 1).map((t) => t.contentId), ["new"])
  })

  it("forgets items whose evidence faded away", () => {
    const trends = new TrendDetector(config)
    trends.observe("eu", "tv-1", [{ contentId: id("a"), weight: 1 }], t0)
    assert.strictEqual(trends.prune(t0 + 10 * DAY, 0.01), 1)
    assert.strictEqual(trends.prune(t0 + 10 * DAY, 0.01), 0)
  })
})
