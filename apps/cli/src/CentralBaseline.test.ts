import { assert, describe, it } from "@effect/vitest"
import type { ContentId } from "@omega/protocol"
import { Effect } from "effect"
import { itemKnnAtTimeRanker, itemKnnRanker, type TvScoringConfig, tvScoringItemKnn } from "./CentralBaseline.ts"
import type { Split } from "./Evaluation.ts"

// Fifteen items; with no co-watch evidence the ranking falls back to catalog order, which leaves
// the last one, m14, out of the top 10.
const catalog = Array.from({ length: 15 }, (_, i) => `m${i}` as ContentId)
const rating = (user: number, item: number, at: number) => ({ user, contentId: catalog[item]!, rating: 5, at })
const split = (user: number, train: Array<[item: number, at: number]>, heldOut: [item: number, at: number]): Split => ({
  user,
  train: train.map(([item, at]) => rating(user, item, at)),
  heldOut: rating(user, ...heldOut)
})

describe("item-kNN as of the viewer's time", () => {
  // Two viewers pair m0 with m14, but only at times 70 and 71; the third watched m0 at 5 and is
  // held out at 80 on m14.
  const splits = [
    split(1, [[0, 70], [14, 71]], [5, 300]),
    split(2, [[0, 70], [14, 71]], [5, 300]),
    split(3, [[0, 5]], [14, 80])
  ]

  it.effect("knows only the pairs rated up to the viewer's last round end; the all-data one knows them all", () =>
    Effect.gen(function*() {
      const third = splits[2]!
      const allData = yield* itemKnnRanker(splits, catalog)(third)
      assert.strictEqual(allData[0], catalog[14], "from every rating, m0's viewers went on to m14")
      const atTime = yield* itemKnnAtTimeRanker(splits, catalog, [10, 55, 100])(third)
      assert.strictEqual(atTime.length, 10)
      assert.notInclude(atTime, catalog[14], "at its round end (55) nobody had paired m0 with m14 yet")
      const afterPairs = yield* itemKnnAtTimeRanker(splits, catalog, [10, 72, 100])(third)
      assert.strictEqual(afterPairs[0], catalog[14], "at a round end after 71 the pairs are known")
      const before = yield* itemKnnAtTimeRanker(splits, catalog, [80, 100])(third)
      assert.deepStrictEqual(before, [], "before the first round end there is nothing to rank with")
    }))
})

describe("item-kNN with the TVs' co-watch scoring", () => {
  // Viewers 1 and 2 pair m1 with m11, viewers 3 and 4 pair m2 with m12, and viewer 5 pairs m2
  // with m13 too. Viewer 6 watched m1 long ago and m2 last.
  const splits = [
    split(1, [[1, 1], [11, 2]], [0, 100]),
    split(2, [[1, 1], [11, 2]], [0, 100]),
    split(3, [[2, 1], [12, 2]], [0, 100]),
    split(4, [[2, 1], [12, 2]], [0, 100]),
    split(5, [[2, 1], [13, 2]], [0, 100]),
    split(6, [[1, 10], [3, 11], [4, 12], [5, 13], [6, 14], [2, 50]], [14, 100])
  ]
  const viewer = splits[5]!
  // Cosine rows, every pair, votes halving with each newer watch.
  const scoring: TvScoringConfig = { neighbours: 20, minDevices: 1, popularityPenalty: 0.5, halfLife: 1, history: 300 }
  const top = (config: TvScoringConfig, of = viewer, from = splits) =>
    tvScoringItemKnn(from, catalog, config).ranker(of)

  it.effect("the newest watch's neighbours come first; with every watch alike the closer, older tie wins", () =>
    Effect.gen(function*() {
      // m2 (newest): m12 at 2 / sqrt(4 x 2) = 0.71, m13 at 0.5; m1, five watches back: m11 at 0.82 / 32.
      assert.deepStrictEqual((yield* top(scoring)).slice(0, 3), [catalog[12], catalog[13], catalog[11]])
      const alike = yield* top({ ...scoring, halfLife: Infinity })
      assert.strictEqual(alike[0], catalog[11], "m1-m11 (0.82) outweighs m2-m12 (0.71)")
    }))

  it.effect("rows keep their strongest neighbours, and only pairs of at least k viewers", () =>
    Effect.gen(function*() {
      const one = yield* top({ ...scoring, neighbours: 1 })
      assert.deepStrictEqual(one.slice(0, 2), [catalog[12], catalog[11]], "m13 is cut from m2's row of one")
      const k2 = yield* top({ ...scoring, minDevices: 2 })
      assert.deepStrictEqual(k2.slice(0, 2), [catalog[12], catalog[11]], "m2-m13 has one viewer: below k = 2")
    }))

  it.effect("of two watches at the same second, the later in replay order (by id) is the newer", () =>
    Effect.gen(function*() {
      const tied = split(7, [[1, 50], [2, 50]], [0, 100])
      const ranked = yield* top(scoring, tied, [...splits.slice(0, 5), tied])
      assert.strictEqual(ranked[0], catalog[12], "m2 replays after m1, so its neighbour m12 leads")
    }))

  it.effect("only the newest watches vote, up to where their votes have halved ten times or `history` of them", () =>
    Effect.gen(function*() {
      // m1, then ten other films: m1 is the eleventh newest, outside a window of ten.
      const long = split(7, [1, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14].map((item, t): [number, number] => [item, t]), [
        0,
        100
      ])
      const from = [...splits.slice(0, 2), splits[4]!, long]
      // m13 (second newest) votes for m2; the rest is catalog order.
      assert.deepStrictEqual(yield* top(scoring, long, from), [2, 0, 11, 12].map((i) => catalog[i]!))
      // Half-life 2 and at most 11 watches: m1 is in, and m11 gets its vote.
      assert.deepStrictEqual(
        yield* top({ ...scoring, halfLife: 2, history: 11 }, long, from),
        [2, 11, 0, 12].map((i) => catalog[i]!)
      )
      assert.deepStrictEqual(
        yield* top({ ...scoring, halfLife: 2, history: 10 }, long, from),
        [2, 0, 11, 12].map((i) => catalog[i]!),
        "history 10 leaves m1 out again"
      )
    }))

  it.effect("counting a sample of each viewer's items: seeded, all of them when the sample is large enough", () =>
    Effect.gen(function*() {
      const all = tvScoringItemKnn(splits, catalog, scoring)
      const large = tvScoringItemKnn(splits, catalog, { ...scoring, itemsPerViewer: 6 })
      assert.strictEqual(all.itemsCounted, 16 / 6)
      assert.strictEqual(large.itemsCounted, all.itemsCounted)
      assert.deepStrictEqual(yield* large.ranker(viewer), yield* all.ranker(viewer))
      const one = tvScoringItemKnn(splits, catalog, { ...scoring, itemsPerViewer: 1 })
      assert.strictEqual(one.itemsCounted, 1)
      // One item per viewer leaves no pair: the ranking falls back to catalog order.
      assert.deepStrictEqual(yield* one.ranker(viewer), [0, 7, 8, 9, 10, 11, 12, 13, 14].map((i) => catalog[i]!))
      const two = () => tvScoringItemKnn(splits, catalog, { ...scoring, itemsPerViewer: 2 })
      assert.strictEqual(two().itemsCounted, 2)
      assert.deepStrictEqual(yield* two().ranker(viewer), yield* two().ranker(viewer), "the same items every run")
    }))
})
