import { assert, describe, it } from "@effect/vitest"
import { Embedder } from "@omega/brain"
import type { GlobalPattern, SyncFrame } from "@omega/protocol"
import { Effect } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { alsRanker, itemKnnRanker } from "./CentralBaseline.ts"
import { embedCatalog, evaluate, leaveLastPositiveOut, localBrainRanker, validationSplits } from "./Evaluation.ts"
import { federatedEvalConfig, roundBoundaries, runFederated } from "./FederatedEvaluation.ts"
import { loadMovieLens } from "./MovieLens.ts"

/** The 19 genre flags of u.item with one genre set. */
const genreFlags = (genre: "comedy" | "horror") =>
  Array.from({ length: 19 }, (_, i) => (genre === "comedy" ? i === 5 : i === 11) ? "1" : "0").join("|")

const WORDS = [
  "Lucky",
  "Paper",
  "Moon",
  "Uncle",
  "Wedding",
  "Picnic",
  "Office",
  "Soap",
  "Parade",
  "Holiday",
  "Golf",
  "Blues"
]

/** 40 comedies with distinct titles, then 5 horrors: "Scream Night" (item 41) is the hit. */
const TITLES = [
  ...Array.from({ length: 40 }, (_, i) => `${WORDS[i % 12]} ${WORDS[(i * 5 + 3) % 12]} ${i + 1}`),
  "Scream Night",
  "Dark Harbor",
  "Night Shift Terror",
  "Cellar Door",
  "Hollow Pines"
]

/**
 * Five horror fans watch the hit "Scream Night" (item 41) and two more horrors early on; six comedy
 * fans come later, watch comedies only, and their held-out positive is the hit. A comedy fan's own
 * brain has 34 unseen comedies to suggest before any horror; only the fleet knows what everyone watches.
 */
const writeDataset = () => {
  const dir = mkdtempSync(join(tmpdir(), "omega-fed-"))
  const items = TITLES.map((title, i) => {
    const id = i + 1
    return `${id}|${title} (1996)|01-Jan-1996||http://x|${genreFlags(id <= 40 ? "comedy" : "horror")}`
  })
  const ratings: Array<string> = []
  let t = 880_000_000
  for (let fan = 1; fan <= 5; fan++) {
    for (const [item, rating] of [[41, 5], [42, 5], [43, 4], [1, 4], [fan === 5 ? 45 : 44, 5]]) {
      ratings.push(`${fan}\t${item}\t${rating}\t${t++}`)
    }
  }
  t += 1_000_000
  for (let viewer = 6; viewer <= 11; viewer++) {
    for (const item of [1, 2, 3, 4, 5, 6, 41]) ratings.push(`${viewer}\t${item}\t5\t${t++}`)
  }
  writeFileSync(join(dir, "u.item"), items.join("\n"), "latin1")
  writeFileSync(join(dir, "u.data"), ratings.join("\n"))
  return dir
}

/** Every string and number anywhere in a decoded frame. */
const leaves = (value: unknown, out: Array<string | number> = []): Array<string | number> => {
  if (typeof value === "string" || typeof value === "number") out.push(value)
  else if (value instanceof Float32Array) return out
  else if (Array.isArray(value)) { for (const v of value) leaves(v, out) }
  else if (typeof value === "object" && value !== null) { for (const v of Object.values(value)) leaves(v, out) }
  return out
}

describe("federated evaluation", () => {
  it.effect(
    "TVs learn the fleet's hit through real frames, with nothing identifying in any upload",
    () =>
      Effect.gen(function*() {
        const dir = writeDataset()
        yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
        const ml = yield* loadMovieLens(dir)
        const splits = leaveLastPositiveOut(ml)
        assert.strictEqual(splits.length, 11)
        const config = federatedEvalConfig(3)
        const catalog = yield* embedCatalog(ml).pipe(Effect.provide(Embedder.layerHashingWith(config.embedder)))
        const uploads: Array<SyncFrame> = []
        const redistributed: Array<GlobalPattern> = []
        const coWatch = new Map<string, Array<string>>()
        const result = yield* runFederated(splits, catalog, {
          ...config,
          shards: 2,
          onFrame: (direction, frame) => {
            if (direction === "up") uploads.push(frame)
            if (frame._tag === "GlobalUpdate") redistributed.push(...frame.global.similar)
            if (frame._tag === "CoWatchUpdate") {
              for (const row of frame.rows) coWatch.set(row.contentId, row.neighbours.map((n) => n.contentId))
            }
          }
        })
        const local = yield* evaluate(
          "local",
          splits,
          localBrainRanker(yield* embedCatalog(ml).pipe(Effect.provide(Embedder.layerHashing)))
        )
        // The six comedy fans' held-out hit only reaches them through the fleet.
        assert.isAtLeast(result.metrics.hr10, 6 / 11)
        assert.isAbove(result.metrics.hr10, local.hr10)
        assert.strictEqual(result.metrics.ranks.length, splits.length, "one rank per split, in their order")
        assert.include(result.trending.map((t): string => t.contentId), "ml-41")
        assert.isAbove(result.bytes.syncs, 0)
        assert.isAbove(result.bytes.up, 0)
        assert.isAtMost(result.bytes.total, 6 * 1024)

        // Privacy: no content id, title or rating timestamp in any decoded upload, and k >= 3 for everything sent.
        assert.isAbove(uploads.length, 0)
        const forbidden = new Set<string | number>([
          ...ml.movies.flatMap((m) => [m.contentId, m.title]),
          ...[...ml.byUser.values()].flat().map((r) => r.at)
        ])
        for (const frame of uploads) {
          assert.strictEqual(frame._tag, "DeltaUpload")
          for (const leaf of leaves(frame)) assert.isFalse(forbidden.has(leaf), `upload carries ${leaf}`)
        }
        assert.isAbove(redistributed.length, 0, "the federation redistributed patterns")
        for (const p of redistributed) assert.isAtLeast(p.deviceCount, config.federation.minDevices)
        // The five horror fans' shared patterns decode to the horrors they all watched: a published pair.
        assert.include(coWatch.get("ml-41") ?? [], "ml-42")
      }),
    60_000
  )

  it.effect("trends decoded only from published k-anonymous groups still carry the hit", () =>
    Effect.gen(function*() {
      const dir = writeDataset()
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const ml = yield* loadMovieLens(dir)
      const splits = leaveLastPositiveOut(ml)
      const config = federatedEvalConfig(3)
      const catalog = yield* embedCatalog(ml).pipe(Effect.provide(Embedder.layerHashingWith(config.embedder)))
      const result = yield* runFederated(splits, catalog, { ...config, shards: 2, trendSource: "groups" })
      assert.include(result.trending.map((t): string => t.contentId), "ml-41")
      assert.isAtLeast(result.metrics.hr10, 6 / 11)
    }), 60_000)

  it("splits the replay into time windows of equal rating counts", () => {
    const rating = (at: number) => ({ user: 1, contentId: "ml-1" as never, rating: 5, at })
    const split = { user: 1, train: [1, 2, 3, 4, 5, 6].map(rating), heldOut: rating(7) }
    assert.deepStrictEqual(roundBoundaries([split], 3), [2, 4, 6])
    assert.deepStrictEqual(roundBoundaries([split], 10), [1, 2, 3, 4, 5, 6])
  })

  it.effect("the central baselines and the validation split work on a tiny dataset", () =>
    Effect.gen(function*() {
      const dir = writeDataset()
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const ml = yield* loadMovieLens(dir)
      const splits = leaveLastPositiveOut(ml)
      const ids = ml.movies.map((m) => m.contentId)
      // Comedy fans co-watch comedies 1-6 with the hit: both baselines find it from the horror fans' rows.
      const als = yield* evaluate(
        "central",
        splits,
        alsRanker(splits, ids, { factors: 8, alpha: 10, lambda: 0.1, iterations: 15, seed: 1 })
      )
      const knn = yield* evaluate("central_itemknn", splits, itemKnnRanker(splits, ids))
      assert.isAtLeast(als.hr10, 6 / 11)
      assert.isAtLeast(knn.hr10, 6 / 11)
      const validation = validationSplits(splits)
      assert.isAbove(validation.length, 0)
      for (const v of validation) {
        const split = splits.find((s) => s.user === v.user)!
        assert.isBelow(v.heldOut.at, split.heldOut.at)
        assert.isAtLeast(v.heldOut.rating, 4)
        assert.isFalse(v.train.some((r) => r.at >= v.heldOut.at))
      }
    }))
})
