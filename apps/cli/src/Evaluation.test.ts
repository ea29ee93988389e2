import { assert, describe, it } from "@effect/vitest"
import { Embedder } from "@omega/brain"
import { Effect } from "effect"
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import {
  embedCatalog,
  evaluate,
  hitRatioInterval,
  leaveLastPositiveOut,
  localBrainRanker,
  metricsOfRanks,
  popularityRanker,
  randomRanker
} from "./Evaluation.ts"
import { datasetPath, loadMovieLens } from "./MovieLens.ts"

/** The 19 genre flags of u.item with just comedy or just horror set. */
const genreFlags = (genre: "comedy" | "horror") =>
  Array.from({ length: 19 }, (_, i) => (genre === "comedy" ? i === 5 : i === 11) ? "1" : "0").join("|")

/** A dataset in MovieLens format: users 1-3 love comedies, hate horror; item 9 is everyone's last comedy. */
const writeTinyDataset = () => {
  const dir = mkdtempSync(join(tmpdir(), "omega-ml-"))
  const items = Array.from({ length: 12 }, (_, i) => {
    const id = i + 1
    const genre = id <= 9 ? "comedy" : "horror"
    return `${id}|Film ${id} (1995)|01-Jan-1995||http://x|${genreFlags(genre)}`
  })
  const ratings: Array<string> = []
  for (let user = 1; user <= 3; user++) {
    let t = 880_000_000 + user * 1000
    for (const item of [1, 2, 3, 4, 10, 11, 9]) {
      ratings.push(`${user}\t${item}\t${item >= 10 ? 1 : 5}\t${t++}`)
    }
  }
  writeFileSync(join(dir, "u.item"), items.join("\n"), "latin1")
  writeFileSync(join(dir, "u.data"), ratings.join("\n"))
  return dir
}

describe("MovieLens evaluation", () => {
  it.effect("loads the dataset, holds out each user's last positive, and scores rankers", () =>
    Effect.gen(function*() {
      const dir = writeTinyDataset()
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const ml = yield* loadMovieLens(dir)
      assert.strictEqual(ml.movies.length, 12)
      assert.deepStrictEqual(ml.movies[0]!.genres, ["Comedy"])
      const splits = leaveLastPositiveOut(ml)
      assert.strictEqual(splits.length, 3)
      for (const split of splits) {
        assert.strictEqual(split.heldOut.contentId, "ml-9")
        assert.strictEqual(split.train.length, 6)
      }
      const catalog = yield* embedCatalog(ml).pipe(Effect.provide(Embedder.layerHashing))
      // The only unseen comedies are 5-9, so a brain that learned "comedy" must rank 9 in its top 10.
      const local = yield* evaluate("local", splits, localBrainRanker(catalog))
      assert.strictEqual(local.hr10, 1)
      assert.isAbove(local.ndcg10, 0)
      // Popularity only knows films rated in training, and every user rated all of them: it has
      // nothing unseen to offer, so it misses film 9.
      const popular = yield* evaluate("popularity", splits, popularityRanker(splits))
      assert.strictEqual(popular.hr10, 0)
      // Random picks ten unseen films; there are six (5-9 and 12), so film 9 is always among them.
      const random = yield* evaluate("random", splits, randomRanker(ml.movies.map((m) => m.contentId)))
      assert.strictEqual(random.hr10, 1)
    }))

  it.effect("reports a missing dataset as a typed error that says how to configure it", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(loadMovieLens("/nonexistent/ml-100k"))
      assert.strictEqual(error._tag, "DatasetMissing")
      assert.include(error.message, "OMEGA_DATASET")
    }))
})

const realDataset = datasetPath(undefined)
const haveRealDataset = existsSync(join(realDataset, "u.data"))
if (!haveRealDataset) {
  console.warn(`MovieLens 100K not found at ${realDataset}: skipping the real-data evaluation test (set OMEGA_DATASET)`)
}

describe.skipIf(!haveRealDataset)("MovieLens 100K (real data)", () => {
  it.effect("the local-only brain beats random by a wide margin on 200 TVs", () =>
    Effect.gen(function*() {
      const ml = yield* loadMovieLens(realDataset)
      const splits = leaveLastPositiveOut(ml).slice(0, 200)
      const catalog = yield* embedCatalog(ml).pipe(Effect.provide(Embedder.layerHashing))
      const local = yield* evaluate("local", splits, localBrainRanker(catalog))
      // Random expects 10 / ~1,650 unseen items = 0.006 HR@10.
      assert.isAbove(local.hr10, 3 * (10 / ml.movies.length))
    }), 60_000)
})

describe("metrics from ranks and a paired interval for a ratio of hit rates", () => {
  it("HR@10 counts held-out items in the top 10, NDCG@10 discounts them by place", () => {
    const m = metricsOfRanks([0, -1, 1, -1])
    assert.strictEqual(m.hr10, 0.5)
    assert.closeTo(m.ndcg10, (1 + 1 / Math.log2(3)) / 4, 1e-12)
  })

  it("a method against itself is 1 in every resample; a clearly better one stays above 1", () => {
    // 1,000 TVs: b hits 100 of them, a the same 100 and 50 more.
    const b = metricsOfRanks(Array.from({ length: 1000 }, (_, i) => (i < 100 ? 0 : -1)))
    const a = metricsOfRanks(Array.from({ length: 1000 }, (_, i) => (i < 150 ? 0 : -1)))
    assert.deepStrictEqual(hitRatioInterval(b, b), { low: 1, high: 1 })
    const interval = hitRatioInterval(a, b)
    assert.isAbove(interval.low, 1.25, "a hits every TV b hits and more: only the share of them varies")
    assert.isBelow(interval.high, 1.75)
    assert.isTrue(interval.low < 1.5 && 1.5 < interval.high, "the interval holds the observed ratio")
    assert.deepStrictEqual(hitRatioInterval(a, b), interval, "seeded: the same interval every run")
  })

  it("methods that hit different TVs equally often: an interval around 1, wider than when they share most hits", () => {
    const hitsOn = (from: number) =>
      metricsOfRanks(Array.from({ length: 1000 }, (_, i) => (i >= from && i < from + 100 ? 0 : -1)))
    const apart = hitRatioInterval(hitsOn(0), hitsOn(900))
    const shared = hitRatioInterval(hitsOn(0), hitsOn(5))
    assert.isTrue(apart.low < 1 && apart.high > 1)
    assert.isTrue(shared.low < 1 && shared.high > 1)
    assert.isAbove(apart.high - apart.low, 0.4, "independent hits: the ratio of two 10% rates on 1,000 TVs")
    assert.isBelow(shared.high - shared.low, (apart.high - apart.low) / 2, "pairing cancels the shared hits")
    assert.throws(() => hitRatioInterval(hitsOn(0), metricsOfRanks([0])), /same splits/)
    assert.throws(() => hitRatioInterval(metricsOfRanks([]), metricsOfRanks([])), /at least one split/)
  })
})
