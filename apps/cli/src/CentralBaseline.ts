/**
 * What a cloud recommender would do with every viewer's raw history in one place: the
 * centralized baselines of the evaluation. All treat every training rating as an implicit
 * "watched" signal, as the popularity baseline does.
 *
 * - iALS: implicit-feedback matrix factorization (Hu, Koren and Volinsky, 2008; Spark's ALS):
 *   confidence 1 + alpha on watched items, 1 on all others, alternating exact least squares.
 * - item-kNN: cosine similarity of items' viewer sets; an item scores the sum of its similarities
 *   to everything the viewer watched.
 * - item-kNN as of the viewer's time: the same, from only the ratings given up to the last round
 *   end before the viewer's held-out time, which is all a federated TV's tables can know then (the
 *   other two learn from every training rating, later ones included).
 * - item-kNN with the TVs' co-watch scoring: rows weighted and cut as a co-watch row is (popularity
 *   penalty, k devices per pair, strongest neighbours), and a viewer's newest watches vote most.
 *   From every viewer's whole history it is what the TVs' scoring does with complete counts;
 *   counting a random sample of each viewer's items, what it does with as few items per viewer as
 *   the shards decode per device (the decoded ones are the device's strongest, not a random draw).
 */
import { coWatchVoteWindow } from "@omega/brain"
import { coWatchStrength } from "@omega/constellation"
import { seededRandom } from "@omega/protocol"
import type { ContentId } from "@omega/protocol"
import { Effect } from "effect"
import type { Ranker, Split } from "./Evaluation.ts"
import { shuffleFront } from "./Shuffle.ts"

export interface AlsConfig {
  readonly factors: number
  readonly alpha: number
  readonly lambda: number
  readonly iterations: number
  readonly seed: number
}

/** Common settings for MovieLens-sized data (not tuned: a stronger baseline only makes the targets harder). */
export const defaultAlsConfig: AlsConfig = { factors: 64, alpha: 10, lambda: 10, iterations: 12, seed: 7 }

/** Dense index of the training data: users, items, and each user's watched item rows. */
interface Interactions {
  readonly items: ReadonlyArray<ContentId>
  readonly itemRow: ReadonlyMap<ContentId, number>
  /** Per split, the item rows it watched in training. */
  readonly byUser: ReadonlyArray<Int32Array>
  readonly userRow: ReadonlyMap<number, number>
}

const interactions = (splits: ReadonlyArray<Split>, catalog: ReadonlyArray<ContentId>): Interactions => {
  const itemRow = new Map(catalog.map((id, i) => [id, i]))
  const byUser = splits.map((s) =>
    Int32Array.from(new Set(s.train.map((r) => itemRow.get(r.contentId)).filter((i) => i !== undefined)))
  )
  return { items: catalog, itemRow, byUser, userRow: new Map(splits.map((s, i) => [s.user, i])) }
}

/** Top-10 unseen items by a score per item row. */
const topUnseen = (scores: Float64Array, items: ReadonlyArray<ContentId>, seen: Int32Array): Array<ContentId> => {
  const excluded = new Uint8Array(items.length)
  for (const i of seen) excluded[i] = 1
  const top: Array<number> = []
  for (let i = 0; i < scores.length; i++) {
    if (excluded[i]) continue
    if (top.length < 10) top.push(i)
    else if (scores[i]! > scores[top[9]!]!) top[9] = i
    else continue
    top.sort((a, b) => scores[b]! - scores[a]! || a - b)
  }
  return top.map((i) => items[i]!)
}

/** Trains iALS on the splits' training ratings and ranks from the learned factors. */
export const alsRanker = (
  splits: ReadonlyArray<Split>,
  catalog: ReadonlyArray<ContentId>,
  config: AlsConfig = defaultAlsConfig
): Ranker => {
  const data = interactions(splits, catalog)
  const f = config.factors
  const random = seededRandom(config.seed)
  const init = (n: number) => Float64Array.from({ length: n * f }, () => (random() - 0.5) * 0.02)
  const users = init(splits.length)
  const items = init(catalog.length)
  const byItem: Array<Array<number>> = catalog.map(() => [])
  data.byUser.forEach((rows, u) => rows.forEach((i) => byItem[i]!.push(u)))
  const itemUsers = byItem.map((list) => Int32Array.from(list))
  for (let iteration = 0; iteration < config.iterations; iteration++) {
    solveSide(users, items, data.byUser, f, config)
    solveSide(items, users, itemUsers, f, config)
  }
  return (split) =>
    Effect.sync(() => {
      const u = data.userRow.get(split.user)!
      const scores = new Float64Array(catalog.length)
      for (let i = 0; i < catalog.length; i++) {
        let s = 0
        for (let k = 0; k < f; k++) s += users[u * f + k]! * items[i * f + k]!
        scores[i] = s
      }
      return topUnseen(scores, catalog, data.byUser[u]!)
    })
}

/** One ALS half-step: every row of `target` solved exactly with `fixed` held still. */
const solveSide = (
  target: Float64Array,
  fixed: Float64Array,
  observed: ReadonlyArray<Int32Array>,
  f: number,
  config: AlsConfig
) => {
  const gram = new Float64Array(f * f)
  const rows = fixed.length / f
  for (let r = 0; r < rows; r++) {
    for (let a = 0; a < f; a++) {
      const x = fixed[r * f + a]!
      for (let b = 0; b < f; b++) gram[a * f + b]! += x * fixed[r * f + b]!
    }
  }
  const A = new Float64Array(f * f)
  const rhs = new Float64Array(f)
  for (let t = 0; t < observed.length; t++) {
    A.set(gram)
    rhs.fill(0)
    for (const r of observed[t]!) {
      for (let a = 0; a < f; a++) {
        const x = fixed[r * f + a]!
        rhs[a]! += (1 + config.alpha) * x
        for (let b = 0; b < f; b++) A[a * f + b]! += config.alpha * x * fixed[r * f + b]!
      }
    }
    for (let a = 0; a < f; a++) A[a * f + a]! += config.lambda
    choleskySolve(A, rhs, f)
    target.set(rhs, t * f)
  }
}

/** Solves A x = b in place (x into b) for a symmetric positive definite A (overwritten). */
const choleskySolve = (A: Float64Array, b: Float64Array, n: number) => {
  for (let j = 0; j < n; j++) {
    let d = A[j * n + j]!
    for (let k = 0; k < j; k++) d -= A[j * n + k]! * A[j * n + k]!
    const l = Math.sqrt(Math.max(d, 1e-12))
    A[j * n + j] = l
    for (let i = j + 1; i < n; i++) {
      let s = A[i * n + j]!
      for (let k = 0; k < j; k++) s -= A[i * n + k]! * A[j * n + k]!
      A[i * n + j] = s / l
    }
  }
  for (let i = 0; i < n; i++) {
    let s = b[i]!
    for (let k = 0; k < i; k++) s -= A[i * n + k]! * b[k]!
    b[i] = s / A[i * n + i]!
  }
  for (let i = n - 1; i >= 0; i--) {
    let s = b[i]!
    for (let k = i + 1; k < n; k++) s -= A[k * n + i]! * b[k]!
    b[i] = s / A[i * n + i]!
  }
}

/** Item-kNN with cosine similarity of viewer sets, scored against everything the viewer watched. */
export const itemKnnRanker = (splits: ReadonlyArray<Split>, catalog: ReadonlyArray<ContentId>): Ranker => {
  const data = interactions(splits, catalog)
  const { counts, viewers } = coCounts(data.byUser, catalog.length)
  return (split) => Effect.sync(() => knnTop(counts, viewers, catalog, data.byUser[data.userRow.get(split.user)!]!))
}

/** Viewers per item, and per pair of items (a dense n x n matrix) the viewers who watched both. */
const coCounts = (byUser: ReadonlyArray<Int32Array>, n: number) => {
  const counts = new Float32Array(n * n)
  const viewers = new Float64Array(n)
  for (const rows of byUser) {
    for (const i of rows) {
      viewers[i]! += 1
      for (const j of rows) if (i !== j) counts[i * n + j]! += 1
    }
  }
  return { counts, viewers }
}

/** Top-10 unseen items for a viewer who watched `seen`, by summed cosine over co-watch counts. */
const knnTop = (counts: Float32Array, viewers: Float64Array, catalog: ReadonlyArray<ContentId>, seen: Int32Array) => {
  const n = catalog.length
  const scores = new Float64Array(n)
  for (const i of seen) {
    for (let j = 0; j < n; j++) {
      const c = counts[i * n + j]!
      if (c > 0) scores[j]! += c / Math.sqrt(viewers[i]! * viewers[j]!)
    }
  }
  return topUnseen(scores, catalog, seen)
}

/**
 * Item-kNN as of each viewer's time: the counts hold only ratings given up to `ends`' last entry
 * before the viewer's held-out time (the federated replay's round ends); the viewer is scored
 * against its whole training history, as its TV would be. Every list is made up front, walking
 * the round ends forward and adding each rating to the counts once.
 */
export const itemKnnAtTimeRanker = (
  splits: ReadonlyArray<Split>,
  catalog: ReadonlyArray<ContentId>,
  ends: ReadonlyArray<number>
): Ranker => {
  const data = interactions(splits, catalog)
  const n = catalog.length
  const counts = new Float32Array(n * n)
  const viewers = new Float64Array(n)
  // Each user's items counted so far, and its ratings in time order with a cursor into them.
  const counted = splits.map(() => new Set<number>())
  const ordered = splits.map((s) => [...s.train].sort((a, b) => a.at - b.at))
  const cursor = splits.map(() => 0)
  const sorted = [...ends].sort((a, b) => a - b)
  const scoredAt = (split: Split) => sorted.filter((end) => end < split.heldOut.at).at(-1)
  const lists = new Map<number, Array<ContentId>>()
  for (const end of sorted) {
    for (const [u, ratings] of ordered.entries()) {
      const items = counted[u]!
      for (; cursor[u]! < ratings.length && ratings[cursor[u]!]!.at <= end; cursor[u]! += 1) {
        const i = data.itemRow.get(ratings[cursor[u]!]!.contentId)
        if (i === undefined || items.has(i)) continue
        viewers[i]! += 1
        for (const j of items) {
          counts[i * n + j]! += 1
          counts[j * n + i]! += 1
        }
        items.add(i)
      }
    }
    for (const [u, split] of splits.entries()) {
      if (scoredAt(split) === end) lists.set(split.user, knnTop(counts, viewers, catalog, data.byUser[u]!))
    }
  }
  // A viewer before the first round end gets nothing from others, like a TV with no tables yet.
  return (split) => Effect.sync(() => lists.get(split.user) ?? [])
}

export interface TvScoringConfig {
  /** Neighbours kept per item, strongest first (what a co-watch row carries). */
  readonly neighbours: number
  /** Viewers who must share a pair for it to count (k of the co-watch rows). */
  readonly minDevices: number
  /** Beta of the rows' weights: pair / (viewers(a)^(1 - beta) x viewers(b)^beta); 0.5 is the cosine. */
  readonly popularityPenalty: number
  /** Watches after which a watch's votes halve, newest first (the Recommender's coWatchHalfLife). */
  readonly halfLife: number
  /** Most watches that vote, the newest (the Recommender's coWatchHistory). */
  readonly history: number
  /** At most this many items of each viewer are counted, drawn at random; undefined counts all. */
  readonly itemsPerViewer?: number | undefined
}

/** The seed of the items drawn per viewer: fixed, so two runs count the same items. */
const SAMPLE_SEED = 11

/**
 * Item-kNN with the Recommender's co-watch scoring, on counts from raw training ratings: each
 * item's row holds its strongest neighbours by the co-watch rows' weight (pairs of at least k
 * viewers), and the viewer's watches vote newest first, each vote halving every `halfLife` watches
 * and none after the window the Recommender uses. `itemsCounted` is the mean of items per viewer
 * the counts hold.
 */
export const tvScoringItemKnn = (
  splits: ReadonlyArray<Split>,
  catalog: ReadonlyArray<ContentId>,
  config: TvScoringConfig
): { readonly ranker: Ranker; readonly itemsCounted: number } => {
  const data = interactions(splits, catalog)
  const n = catalog.length
  const random = seededRandom(SAMPLE_SEED)
  const counted = data.byUser.map((rows) => sample(rows, config.itemsPerViewer ?? rows.length, random))
  const { counts, viewers } = coCounts(counted, n)
  const beta = config.popularityPenalty
  const neighbours = Array.from({ length: n }, (_, i) => {
    const row: Array<{ item: number; weight: number }> = []
    for (let j = 0; j < n; j++) {
      const c = counts[i * n + j]!
      if (c >= config.minDevices) row.push({ item: j, weight: coWatchStrength(c, viewers[i]!, viewers[j]!, beta) })
    }
    return row.sort((a, b) => b.weight - a.weight || a.item - b.item).slice(0, config.neighbours)
  })
  const window = coWatchVoteWindow({ coWatchHistory: config.history, coWatchHalfLife: config.halfLife })
  const ranker: Ranker = (split) =>
    Effect.sync(() => {
      const scores = new Float64Array(n)
      // Training is in replay order (time, then id): the last rating is the newest watch, and a
      // film watched again counts once, where it was last watched, as in the TV's history.
      const voted = new Set<number>()
      for (let t = split.train.length - 1; t >= 0 && voted.size < window; t--) {
        const item = data.itemRow.get(split.train[t]!.contentId)
        if (item === undefined || voted.has(item)) continue
        const recency = Math.pow(0.5, voted.size / config.halfLife)
        voted.add(item)
        for (const { item: neighbour, weight } of neighbours[item]!) scores[neighbour]! += weight * recency
      }
      return topUnseen(scores, catalog, data.byUser[data.userRow.get(split.user)!]!)
    })
  const itemsCounted = counted.reduce((sum, rows) => sum + rows.length, 0) / Math.max(1, counted.length)
  return { ranker, itemsCounted }
}

/** `size` of `rows` drawn without replacement (a partial shuffle), or all of them when they are no more. */
const sample = (rows: Int32Array, size: number, random: () => number): Int32Array => {
  if (!Number.isInteger(size) || size < 0) throw new RangeError(`a sample size is a whole number, got ${size}`)
  if (rows.length <= size) return rows
  const pool = Int32Array.from(rows)
  shuffleFront(pool, size, random)
  return pool.subarray(0, size)
}
