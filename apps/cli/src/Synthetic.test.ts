import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { itemKnnRanker } from "./CentralBaseline.ts"
import { evaluate, leaveLastPositiveOut } from "./Evaluation.ts"
import { makeWorld, syntheticRatings, type SyntheticWorld } from "./Synthetic.ts"

const world = (circleShare: number) => makeWorld({ items: 500, viewers: 200, seed: 5, circleShare })
const ratingsOf = (w: SyntheticWorld) => syntheticRatings(w, 60, 9)

/** HR@10 of central item-kNN on every viewer's raw ratings: how much co-watch structure the world has. */
const itemKnnHitRate = (w: SyntheticWorld) =>
  Effect.gen(function*() {
    const ratings = ratingsOf(w)
    const splits = leaveLastPositiveOut(ratings)
    return (yield* evaluate("item-kNN", splits, itemKnnRanker(splits, ratings.movies.map((m) => m.contentId)))).hr10
  })

describe("the synthetic world", () => {
  it("is the same for the same seeds", () => {
    const a = ratingsOf(world(0.6))
    const b = ratingsOf(world(0.6))
    assert.deepStrictEqual([...a.byUser.entries()], [...b.byUser.entries()])
  })

  it("has viewers watch their circles' films as often as asked, at TV hours, rarely twice", () => {
    const w = world(0.6)
    const ratings = ratingsOf(w)
    const byId = new Map(w.items.map((item) => [item.contentId, item]))
    let inCircle = 0
    let evening = 0
    let repeats = 0
    let total = 0
    for (const viewer of w.viewers) {
      const seen = new Set<string>()
      for (const r of ratings.byUser.get(viewer.id)!) {
        total += 1
        if (viewer.circles.includes(byId.get(r.contentId)!.circle)) inCircle += 1
        const hour = new Date(r.at).getUTCHours()
        if (hour >= 17 && hour < 23) evening += 1
        if (seen.has(r.contentId)) repeats += 1
        seen.add(r.contentId)
      }
    }
    // 60% drawn from a followed circle, plus genre and mainstream draws that land in one.
    assert.isAbove(inCircle / total, 0.6)
    assert.isBelow(inCircle / total, 0.8)
    assert.isAbove(evening / total, 0.5, "prime time dominates")
    assert.isBelow(repeats / total, 0.02)
  })

  it.effect("hides a co-watch signal in its circles that item-kNN finds and genres alone do not give", () =>
    Effect.gen(function*() {
      const withCircles = yield* itemKnnHitRate(world(0.6))
      const without = yield* itemKnnHitRate(world(0))
      assert.isAbove(withCircles, 2 * without, `item-kNN HR@10 ${withCircles} with circles, ${without} without`)
    }))
})
