import { assert, describe, it } from "@effect/vitest"
import type { ContentId } from "@omega/protocol"
import { Effect } from "effect"
import { itemKnnAtTimeRanker, itemKnnRanker } from "./CentralBaseline.ts"
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
