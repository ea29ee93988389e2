import { assert, describe, it } from "@effect/vitest"
import { type ContentEmbedding, type ContentId, EMBEDDING_DIMENSIONS, type PatternId } from "@omega/protocol"
import { gaussian, seededRandom, unit } from "./internal/vectors.ts"
import { defaultShardTrendsConfig, PatternCounts, ShardTrends, type ShardTrendsConfig } from "./ShardTrends.ts"

const random = seededRandom(11)
const direction = () => unit(Array.from({ length: EMBEDDING_DIMENSIONS }, () => gaussian(random)))!
const catalog: Array<ContentEmbedding> = Array.from({ length: 50 }, (_, i) => ({
  contentId: `m${i}` as ContentId,
  title: `m${i}`,
  genres: [],
  embedding: direction()
}))

/** A pattern that averages the given catalog items, as a TV's brain folds them together. */
const pattern = (id: string, items: ReadonlyArray<number>, sampleCount: number, successRate = 1) => ({
  id: id as PatternId,
  embedding: unit(catalog[0]!.embedding.map((_, d) => items.reduce((s, i) => s + catalog[i]!.embedding[d]!, 0)))!,
  successRate,
  sampleCount,
  context: {}
})

const HOUR = 3_600_000
const DAY = 24 * HOUR
const t0 = 1_700_000_000_000

const make = (overrides: Partial<ShardTrendsConfig> = {}) => {
  const trends = new ShardTrends({
    ...defaultShardTrendsConfig,
    trend: { halfLifeMs: DAY, minDevices: 3, maxEvidencePerDevice: Infinity, deviceMemory: 64 },
    ...overrides
  })
  trends.addContent(catalog)
  return trends
}

const scores = (trends: ShardTrends, at: number) =>
  Object.fromEntries(trends.signals("eu", at, 10).map((t) => [t.contentId, t.score]))

describe("PatternCounts", () => {
  it("returns each pattern's previous count and forgets the least recently uploaded beyond its capacity", () => {
    const counts = new PatternCounts(3)
    const id = (s: string) => s as PatternId
    assert.strictEqual(counts.swap(id("a"), 4), 0, "a new pattern has no previous count")
    assert.strictEqual(counts.swap(id("b"), 2), 0)
    assert.strictEqual(counts.swap(id("c"), 7), 0)
    assert.strictEqual(counts.swap(id("a"), 5), 4, "a is now the newest")
    assert.strictEqual(counts.swap(id("d"), 1), 0, "full: b, the least recently uploaded, makes room")
    assert.strictEqual(counts.size, 3)
    assert.strictEqual(counts.swap(id("b"), 3), 0, "b was forgotten")
    assert.strictEqual(counts.swap(id("a"), 6), 5, "a survived, having been uploaded again")
    assert.strictEqual(counts.swap(id("d"), 1), 1)
  })
})

describe("ShardTrends", () => {
  it("decodes patterns built from catalog items into those items, once k devices stand behind them", () => {
    const trends = make()
    for (const tv of ["tv-1", "tv-2", "tv-3"]) trends.observe("eu", tv, [pattern(`${tv}-a`, [3, 17], 4)], t0)
    // Only two devices watched m40.
    for (const tv of ["tv-1", "tv-2"]) trends.observe("eu", tv, [pattern(`${tv}-b`, [40], 4)], t0 + 1)
    assert.deepStrictEqual(trends.signals("eu", t0, 10), [], "observing only buffers")
    assert.strictEqual(trends.stats().pendingPatterns, 5)

    assert.deepStrictEqual([...trends.decode()], ["eu"])
    const signals = trends.signals("eu", t0 + 1, 10)
    assert.deepStrictEqual(signals.map((t) => t.contentId).sort(), ["m17", "m3"])
    // Each device's 4 new samples are split between the two items the pattern averages.
    for (const t of signals) assert.closeTo(t.score, 3 * 2, 0.3)
    assert.deepStrictEqual(trends.signals("us", t0 + 1, 10), [])
    assert.strictEqual(trends.stats().pendingPatterns, 0)
  })

  it("credits only the samples added since the device's previous upload of a pattern", () => {
    const trends = make()
    const upload = (count: number, at: number) => {
      for (const tv of ["tv-1", "tv-2", "tv-3"]) trends.observe("eu", tv, [pattern("p", [5], count, 0.5)], at)
      trends.decode()
    }
    upload(4, t0)
    assert.closeTo(scores(trends, t0)["m5"]!, 3 * 4 * 0.5, 1e-6)
    upload(4, t0)
    assert.closeTo(scores(trends, t0)["m5"]!, 6, 1e-6, "an unchanged pattern adds nothing")
    upload(6, t0)
    assert.closeTo(scores(trends, t0)["m5"]!, 6 + 3 * 2 * 0.5, 1e-6)
  })

  it("lets evidence fade with the half-life, and forgets what faded away", () => {
    const trends = make()
    for (const tv of ["tv-1", "tv-2", "tv-3"]) trends.observe("eu", tv, [pattern(`${tv}`, [8], 2)], t0)
    trends.decode()
    assert.closeTo(scores(trends, t0)["m8"]!, 6, 1e-6)
    assert.closeTo(scores(trends, t0 + DAY)["m8"]!, 3, 1e-6)
    assert.closeTo(scores(trends, t0 + 3 * DAY)["m8"]!, 0.75, 1e-6)
    trends.prune(t0 + 30 * DAY)
    assert.deepStrictEqual(trends.signals("eu", t0 + 3 * DAY, 10), [])
  })

  it("keeps a bounded sample of waiting uploads and decodes at least one per pass", () => {
    const trends = make({ maxPendingPatterns: 2 })
    for (let n = 0; n < 5; n++) trends.observe("eu", `tv-${n}`, [pattern("p", [n], 3)], t0)
    assert.deepInclude(trends.stats(), { pendingUploads: 2, pendingPatterns: 2, dropped: 3 })
    trends.decode(0)
    assert.deepInclude(trends.stats(), { pendingUploads: 1, decoded: 1 })
  })

  it("waits for the catalog before decoding", () => {
    const trends = new ShardTrends({
      ...defaultShardTrendsConfig,
      trend: { halfLifeMs: DAY, minDevices: 1, maxEvidencePerDevice: 1, deviceMemory: 64 }
    })
    trends.observe("eu", "tv-1", [pattern("p", [9], 3)], t0)
    assert.isFalse(trends.decodable)
    assert.strictEqual(trends.decode().size, 0)
    assert.strictEqual(trends.stats().pendingUploads, 1)
    trends.addContent(catalog)
    trends.decode()
    assert.deepStrictEqual(trends.signals("eu", t0, 1).map((t) => t.contentId), ["m9"])
  })
})

describe("ShardTrends co-watch rows", () => {
  it("learns which items the same devices watch, publishes changed rows once, and serves what a TV lacks", () => {
    const trends = make()
    // Three devices watch m3 and m17 (in one pattern) and m40 (in another); only two also watch m25.
    for (const tv of ["tv-1", "tv-2", "tv-3"]) {
      trends.observe("eu", tv, [pattern(`${tv}-a`, [3, 17], 4), pattern(`${tv}-b`, [40], 2)], t0)
    }
    for (const tv of ["tv-1", "tv-2"]) trends.observe("eu", tv, [pattern(`${tv}-c`, [25], 2)], t0 + 1)
    assert.deepStrictEqual(trends.publishCoWatch(1, t0), [], "observing only buffers")
    trends.decode()
    const rows = Object.fromEntries(
      trends.publishCoWatch(2, t0).map((r) => [r.contentId, r.neighbours.map((n): string => n.contentId).sort()])
    )
    assert.deepStrictEqual(rows, { m17: ["m3", "m40"], m3: ["m17", "m40"], m40: ["m17", "m3"] })
    assert.strictEqual(trends.stats().coWatchRows, 3)
    assert.strictEqual(trends.stats().coWatchDevices, 3)
    // Nothing changed: nothing to publish, and a TV at version 2 lacks nothing.
    assert.deepStrictEqual(trends.publishCoWatch(3, t0), [])
    assert.deepStrictEqual(trends.coWatchSince(2), [])
    assert.strictEqual(trends.coWatchSince(0).length, 3)

    // A third device watches m25. One device's change could single it out, so it waits for k.
    trends.observe("eu", "tv-3", [pattern("tv-3-c", [25], 2)], t0 + 2)
    trends.decode()
    assert.deepStrictEqual(trends.publishCoWatch(4, t0), [])
    for (const tv of ["tv-4", "tv-5"]) trends.observe("eu", tv, [pattern(`${tv}-a`, [8], 2)], t0 + 3)
    trends.decode()
    // Then m25's rows appear at version 5, and a TV at version 2 gets only what changed.
    const changed = trends.publishCoWatch(5, t0).map((r) => r.contentId).sort()
    assert.includeMembers(changed, ["m25"])
    assert.deepStrictEqual(trends.coWatchSince(2).map((r) => r.contentId).sort(), changed)
  })

  it("republishes a row only when its weights moved by more than a tenth", () => {
    // Cosine weights (popularity penalty 0.5), so both rows of the pair move alike.
    const trends = make({ coWatch: { ...defaultShardTrendsConfig.coWatch, popularityPenalty: 0.5 } })
    const watchBoth = (tv: string) => trends.observe("eu", tv, [pattern(`${tv}-a`, [3, 17], 4)], t0)
    const watchM3 = (tv: string) => trends.observe("eu", tv, [pattern(`${tv}-b`, [3], 4)], t0)
    for (let tv = 1; tv <= 20; tv++) watchBoth(`tv-${tv}`)
    trends.decode()
    assert.deepStrictEqual(trends.publishCoWatch(1, t0).map((r) => r.neighbours[0]!.weight), [1000, 1000])
    // Three more viewers of m3 alone (k of them, so a table is due): 20 / sqrt(23 x 20) = 0.933, not worth resending.
    for (let tv = 21; tv <= 23; tv++) watchM3(`tv-${tv}`)
    trends.decode()
    assert.deepStrictEqual(trends.publishCoWatch(2, t0), [])
    // Five more: 20 / sqrt(28 x 20) = 0.845, resent.
    for (let tv = 24; tv <= 28; tv++) watchM3(`tv-${tv}`)
    trends.decode()
    assert.deepStrictEqual(trends.publishCoWatch(3, t0).map((r) => r.neighbours[0]!.weight), [845, 845])
  })

  it("forgets the least recently synced device beyond the co-watch device bound, and its pairs with it", () => {
    const trends = make({ coWatch: { ...defaultShardTrendsConfig.coWatch, maxDevices: 3 } })
    for (const tv of ["tv-1", "tv-2", "tv-3"]) trends.observe("eu", tv, [pattern(`${tv}-a`, [3, 17], 4)], t0)
    trends.decode()
    assert.strictEqual(trends.publishCoWatch(1, t0).length, 2)
    trends.observe("eu", "tv-4", [pattern("tv-4-a", [30], 4)], t0 + 1)
    trends.observe("eu", "tv-5", [pattern("tv-5-a", [31], 4)], t0 + 1)
    trends.decode()
    // tv-1 and tv-2 went: m3-m17 has one device left, under k, and both rows are withdrawn.
    assert.deepStrictEqual(trends.publishCoWatch(2, t0).map((r) => [r.contentId, r.neighbours.length]), [["m17", 0], [
      "m3",
      0
    ]])
    assert.strictEqual(trends.stats().coWatchDevices, 3)
  })

  it("once a federation worker sends a table, publishes the worker's tables instead of its own", () => {
    const trends = make()
    for (const tv of ["tv-1", "tv-2", "tv-3"]) trends.observe("eu", tv, [pattern(`${tv}-a`, [3, 17], 4)], t0)
    trends.decode()
    assert.deepStrictEqual(trends.publishCoWatch(1, t0).map((r) => r.contentId), ["m17", "m3"])
    // What the worker is told: this shard's counts, and the three devices that changed them.
    const exported = trends.exportCoWatch(t0)
    assert.strictEqual(exported.changedDevices, 3)
    assert.deepStrictEqual(
      exported.rows.map((r) => [r.contentId, r.devices, r.neighbours.map((n) => [n.contentId, n.devices])]),
      [["m3", 3, [["m17", 3]]], ["m17", 3, [["m3", 3]]]]
    )
    const id = (n: number) => `m${n}` as ContentId
    trends.applyFederatedCoWatch([
      { contentId: id(3), neighbours: [{ contentId: id(17), weight: 1000 }, { contentId: id(40), weight: 500 }] },
      { contentId: id(40), neighbours: [{ contentId: id(3), weight: 500 }] }
    ], t0)
    // m3 changed, m40 is new, and m17, which the worker's table no longer has, is withdrawn.
    const published = trends.publishCoWatch(2, t0)
    assert.deepStrictEqual(published.map((r) => [r.contentId, r.neighbours.length]), [["m3", 2], ["m40", 1], [
      "m17",
      0
    ]])
    // The shard's own counts no longer publish, however many devices change them.
    for (const tv of ["tv-4", "tv-5", "tv-6"]) trends.observe("eu", tv, [pattern(`${tv}-a`, [8, 9], 4)], t0 + 1)
    trends.decode()
    assert.deepStrictEqual(trends.publishCoWatch(3, t0 + 60_000), [])
    assert.deepStrictEqual(trends.coWatchSince(0).map((r) => r.contentId).sort(), ["m3", "m40"])

    // No worker has asked for the counts for longer than the TTL: the shard's own table replaces
    // the worker's whole (m40, which only the worker's table had, is withdrawn).
    const later = t0 + defaultShardTrendsConfig.federatedCoWatchTtlMs + 1
    const own = Object.fromEntries(
      trends.publishCoWatch(4, later).map((r) => [r.contentId, r.neighbours.map((n): string => n.contentId)])
    )
    assert.deepStrictEqual(own, { m3: ["m17"], m40: [], m8: ["m9"], m9: ["m8"], m17: ["m3"] })
  })
})
