/**
 * Offline quality evaluation on MovieLens 100K. Each user is one TV that replays its ratings in
 * time order; its last positive rating (>= 4) is held out, and every method ranks all items the
 * user has not rated before it. Reported: HR@10 and NDCG@10.
 */
import { type BrainConfig, defaultBrainConfig, Embedder, OmegaBrain } from "@omega/brain"
import { type ContentEmbedding, type ContentId, seededRandom } from "@omega/protocol"
import { Effect } from "effect"
import { contextAt, type MovieLens, type Rating } from "./MovieLens.ts"
import { progress } from "./Report.ts"

export interface Split {
  readonly user: number
  readonly train: ReadonlyArray<Rating>
  readonly heldOut: Rating
}

export interface Metrics {
  readonly hr10: number
  readonly ndcg10: number
  /** Per split, in the splits' order: the held-out item's place in the top 10, or -1 (for paired comparisons). */
  readonly ranks: ReadonlyArray<number>
}

/** HR@10 and NDCG@10 from each split's rank of its held-out item (-1: not in the top 10). */
export const metricsOfRanks = (ranks: ReadonlyArray<number>): Metrics => {
  let hits = 0
  let ndcg = 0
  for (const rank of ranks) {
    if (rank < 0) continue
    hits += 1
    ndcg += 1 / Math.log2(rank + 2)
  }
  const n = Math.max(1, ranks.length)
  return { hr10: hits / n, ndcg10: ndcg / n, ranks }
}

/**
 * A 95% interval for HR@10(a) / HR@10(b) on the same splits, by paired bootstrap: the TVs are
 * resampled with replacement, each keeping both methods' outcomes, `resamples` times (seeded). It
 * says how far the ratio moves with which viewers are drawn; the federated tables those viewers
 * built are held fixed, so a rerun with other settings can move it further.
 */
export const hitRatioInterval = (
  a: Metrics,
  b: Metrics,
  resamples = 2_000,
  seed = 17
): { readonly low: number; readonly high: number } => {
  const n = a.ranks.length
  if (b.ranks.length !== n) throw new RangeError("a paired interval needs both methods' ranks on the same splits")
  if (n === 0 || !Number.isInteger(resamples) || resamples < 1) {
    throw new RangeError(`a paired interval needs at least one split and one resample, got ${n} and ${resamples}`)
  }
  const random = seededRandom(seed)
  const ratios: Array<number> = []
  for (let r = 0; r < resamples; r++) {
    let hitsA = 0
    let hitsB = 0
    for (let i = 0; i < n; i++) {
      const pick = Math.floor(random() * n)
      if (a.ranks[pick]! >= 0) hitsA += 1
      if (b.ranks[pick]! >= 0) hitsB += 1
    }
    ratios.push(hitsB === 0 ? Number.POSITIVE_INFINITY : hitsA / hitsB)
  }
  ratios.sort((x, y) => x - y)
  return { low: ratios[Math.floor(0.025 * resamples)]!, high: ratios[Math.ceil(0.975 * resamples) - 1]! }
}

/** Top-10 of a method for one user, over items not in `split.train`. */
export type Ranker<E = never, R = never> = (split: Split) => Effect.Effect<ReadonlyArray<ContentId>, E, R>

const POSITIVE = 4

/** Holds out each user's last positive rating; training is everything rated before it. */
export const leaveLastPositiveOut = (ml: MovieLens): Array<Split> => {
  const splits: Array<Split> = []
  for (const [user, ratings] of ml.byUser) {
    let last = -1
    for (let i = ratings.length - 1; i >= 0; i--) {
      if (ratings[i]!.rating >= POSITIVE) {
        last = i
        break
      }
    }
    if (last <= 0) continue
    splits.push({ user, train: ratings.slice(0, last), heldOut: ratings[last]! })
  }
  return splits.sort((a, b) => a.user - b.user)
}

/**
 * The validation protocol for tuning: from each split's training ratings, hold out the last
 * positive instead (the test item and everything after it stay unseen), so settings are chosen
 * without ever looking at the test positives.
 */
export const validationSplits = (splits: ReadonlyArray<Split>): Array<Split> =>
  splits.flatMap((split) => {
    for (let i = split.train.length - 1; i > 0; i--) {
      if (split.train[i]!.rating >= POSITIVE) {
        return [{ user: split.user, train: split.train.slice(0, i), heldOut: split.train[i]! }]
      }
    }
    return []
  })

/** Mean HR@10 and NDCG@10 of `ranker` over `splits`, with progress every 100 users. */
export const evaluate = <E, R>(name: string, splits: ReadonlyArray<Split>, ranker: Ranker<E, R>) =>
  Effect.gen(function*() {
    const ranks: Array<number> = []
    let hits = 0
    for (let i = 0; i < splits.length; i++) {
      const split = splits[i]!
      const top = yield* ranker(split)
      const rank = top.slice(0, 10).indexOf(split.heldOut.contentId)
      ranks.push(rank)
      if (rank >= 0) hits += 1
      if ((i + 1) % 100 === 0 || i + 1 === splits.length) {
        yield* progress(`  ${name}: ${i + 1}/${splits.length} users, HR@10 so far ${(hits / (i + 1)).toFixed(4)}`)
      }
    }
    return metricsOfRanks(ranks)
  })

/** A uniformly random ranking (seeded), the floor every method must clear. */
export const randomRanker = (catalog: ReadonlyArray<ContentId>, seed = 42): Ranker => {
  const random = seededRandom(seed)
  return (split) =>
    Effect.sync(() => {
      const seen = new Set(split.train.map((r) => r.contentId))
      const picks: Array<ContentId> = []
      const pool = catalog.filter((id) => !seen.has(id))
      for (let i = 0; i < 10 && pool.length > 0; i++) {
        const j = Math.floor(random() * pool.length)
        picks.push(pool[j]!)
        pool[j] = pool[pool.length - 1]!
        pool.pop()
      }
      return picks
    })
}

/** Most-rated items in everyone's training data: what a TV could show with no personal signal. */
export const popularityRanker = (splits: ReadonlyArray<Split>): Ranker => {
  const counts = new Map<ContentId, number>()
  for (const split of splits) for (const r of split.train) counts.set(r.contentId, (counts.get(r.contentId) ?? 0) + 1)
  const ranked = [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([id]) => id)
  return (split) => Effect.sync(() => firstUnseen(ranked, split))
}

/** The first ten items of `ranked` that `split` did not rate in training. */
export const firstUnseen = (ranked: Iterable<ContentId>, split: Split): Array<ContentId> => {
  const seen = new Set(split.train.map((r) => r.contentId))
  const top: Array<ContentId> = []
  for (const id of ranked) {
    if (top.length === 10) break
    if (!seen.has(id)) top.push(id)
  }
  return top
}

/** Embeds every movie once with the given embedder. */
export const embedCatalog = (ml: MovieLens) =>
  Effect.gen(function*() {
    const embedder = yield* Embedder
    return yield* Effect.forEach(ml.movies, (movie) =>
      embedder.embedContent(movie).pipe(
        Effect.map((embedding): ContentEmbedding => ({ ...movie, embedding }))
      ))
  })

export const evalBrainConfig: BrainConfig = { ...defaultBrainConfig, runLearningLoops: false }

/** Replays one user's training ratings into `brain` as viewing events. */
export const replay = (
  brain: OmegaBrain["Service"],
  ml: { readonly titles: ReadonlyMap<ContentId, ContentEmbedding> },
  train: ReadonlyArray<Rating>
) => replayEvents(brain, ml.titles, train, [])

/** Replays ratings as viewing events; `recent` (the last watches, oldest first) carries over between calls. */
export const replayEvents = (
  brain: OmegaBrain["Service"],
  titles: ReadonlyMap<ContentId, ContentEmbedding>,
  ratings: ReadonlyArray<Rating>,
  recent: Array<ContentId>
) =>
  Effect.gen(function*() {
    for (const r of ratings) {
      const movie = titles.get(r.contentId)!
      yield* brain.observe({
        contentId: r.contentId,
        title: movie.title,
        genres: movie.genres,
        watchedAt: r.at,
        watchShare: r.rating / 5,
        context: contextAt(r.at, recent)
      })
      recent.push(r.contentId)
      if (recent.length > 5) recent.shift()
    }
  })

/** The local-only brain: a fresh TV brain per user that learns from nothing but its own viewing. */
export const localBrainRanker = (
  catalog: ReadonlyArray<ContentEmbedding>,
  config: BrainConfig = evalBrainConfig
): Ranker<unknown> => {
  const titles = new Map(catalog.map((c) => [c.contentId, c]))
  return (split) =>
    Effect.gen(function*() {
      const brain = yield* OmegaBrain
      yield* brain.addContent(catalog)
      yield* replay(brain, { titles }, split.train)
      yield* brain.consolidate
      const recent = split.train.slice(-5).map((r) => r.contentId)
      const recs = yield* brain.recommend(contextAt(split.heldOut.at, recent), 10)
      return recs.map((r) => r.contentId)
    }).pipe(Effect.provide(OmegaBrain.layerTest(config)))
}
