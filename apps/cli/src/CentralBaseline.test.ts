import { assert, describe, it } from "@effect/vitest"
import type { ContentId } from "@omega/protocol"
import { Effect } from "effect"
import { itemKnnAtTimeRanker, itemKnnRanker, recentItemKnnRanker } from "./CentralBaseline.ts"
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

describe("item-kNN scored as the TV scores co-watch rows", () => {
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

  it.effect("the newest watch's neighbours come first; without recency the older, closer tie wins", () =>
    Effect.gen(function*() {
      const recent = yield* recentItemKnnRanker(splits, catalog, { neighbours: 20, halfLife: 1 })(viewer)
      assert.deepStrictEqual(recent.slice(0, 2), [catalog[12], catalog[13]], "m2, watched last, votes most")
      assert.strictEqual(recent[2], catalog[11], "m1 five watches back votes 1/32")
      const all = yield* itemKnnRanker(splits, catalog)(viewer)
      assert.strictEqual(
        all[0],
        catalog[11],
        "all watches alike: m1-m11 is the closest pair (cosine 0.82 against 0.71)"
      )
    }))

  it.effect("rows keep their strongest neighbours only", () =>
    Effect.gen(function*() {
      const top = yield* recentItemKnnRanker(splits, catalog, { neighbours: 1, halfLife: 1 })(viewer)
      assert.deepStrictEqual(top.slice(0, 2), [catalog[12], catalog[11]], "m13 is cut from m2's row of one")
    }))

  it.effect("counting one item per viewer leaves no pair, and the ranking falls back to catalog order", () =>
    Effect.gen(function*() {
      const top = yield* recentItemKnnRanker(splits, catalog, { neighbours: 20, halfLife: 1, itemsPerViewer: 1 })(
        viewer
      )
      assert.deepStrictEqual(top, [0, 7, 8, 9, 10, 11, 12, 13, 14].map((i) => catalog[i]!))
    }))
})
