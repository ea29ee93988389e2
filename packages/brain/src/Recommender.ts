/**
 * Ranks catalog items for a viewing context, entirely on the TV: the viewer's own patterns
 * that fit the context and the recent watches, blended with collective patterns, what the
 * fleet's viewers of the same items also watched (co-watch rows) and regional trends, each
 * source weighted by how often its suggestions were actually watched through.
 */
import {
  type ContentId,
  type GlobalPattern,
  type PatternContext,
  type Recommendation,
  type ViewContext
} from "@omega/protocol"
import { Context, Effect, Layer } from "effect"
import type { CatalogItem, LocalPattern, StoreError } from "./BrainStore.ts"
import { Catalog } from "./Catalog.ts"
import { normalize } from "./Embedder.ts"
import { contextMatch, logContextMatch, patternContextOf, patternWeight } from "./Learning.ts"
import { MemoryTiers, type RecommendationSource } from "./MemoryTiers.ts"
import type { IndexError } from "./VectorIndex.ts"

export interface RecommenderConfig {
  /** Local patterns that vote for candidates: the best in context plus those nearest the recent watches. */
  readonly patternsByQuality: number
  readonly patternsByRecency: number
  /** Collective patterns consulted per request. */
  readonly collectivePatterns: number
  /** Catalog neighbours fetched per voting pattern. */
  readonly neighboursPerPattern: number
  /** Recent watches that steer the query (context.recentWatches, else the newest episodes). */
  readonly recentWatches: number
  /** Prior weight of each source before the causal tier has evidence. */
  readonly sourceWeights: Readonly<Record<RecommendationSource, number>>
  /** A local pattern's vote halves for every this many days it is older than the newest pattern. */
  readonly recencyHalfLifeDays: number
  /** Region whose trends apply to this TV; undefined means every region's. */
  readonly region: string | undefined
  /**
   * How much a trending item's boost grows with its cosine to the viewer's recent taste: the boost
   * is multiplied by 1 + trendAffinity x cosine, so 0 gives every viewer the same trends.
   */
  readonly trendAffinity: number
  /**
   * Co-watch votes come from at most this many watched items, the newest (the whole history if it
   * is smaller), and never from items whose votes have halved ten times (see coWatchHalfLife).
   */
  readonly coWatchHistory: number
  /**
   * A watched item's co-watch votes halve for every this many items watched after it (Infinity:
   * all alike). What was just watched says most about what comes next: on MovieLens' validation
   * split 8 lifted HR@10 from 0.106 (Infinity) to 0.127, against 0.119 for 50 and 0.127 for 4.
   */
  readonly coWatchHalfLife: number
  /** Co-watched items that become candidates: the ones with the highest summed weight. */
  readonly coWatchCandidates: number
}

/** How many of the newest watches cast co-watch votes: `coWatchHistory`, and none whose votes have halved ten times. */
export const coWatchVoteWindow = (config: Pick<RecommenderConfig, "coWatchHistory" | "coWatchHalfLife">): number =>
  Math.min(config.coWatchHistory, Math.ceil(config.coWatchHalfLife * 10))

export const defaultRecommenderConfig: RecommenderConfig = {
  patternsByQuality: 6,
  patternsByRecency: 6,
  collectivePatterns: 8,
  neighboursPerPattern: 32,
  recentWatches: 5,
  sourceWeights: { local: 1, collective: 0.6, cowatch: 0.6, trend: 0.3 },
  recencyHalfLifeDays: 30,
  region: undefined,
  trendAffinity: 0,
  coWatchHistory: 300,
  coWatchHalfLife: 8,
  coWatchCandidates: 100
}

export class Recommender extends Context.Service<Recommender, {
  readonly recommend: (
    context: ViewContext,
    limit: number
  ) => Effect.Effect<ReadonlyArray<Recommendation>, IndexError | StoreError>
}>()("omega/brain/Recommender") {
  static readonly layer = (config: RecommenderConfig = defaultRecommenderConfig) =>
    Layer.effect(Recommender, make(config))
}

interface CoWatchScore {
  readonly contentId: ContentId
  /** Summed co-watch weight (in 1/1000) over the watched items. */
  readonly score: number
  /** The watched item with the strongest row entry for it. */
  readonly because: ContentId
}

interface Candidate {
  item: CatalogItem
  score: number
  bySource: Record<RecommendationSource, number>
  /** The local pattern that contributed most, to explain the suggestion. */
  bestPattern: LocalPattern | undefined
  bestPatternScore: number
  /** The watched item whose co-watch row contributed most, to explain the suggestion. */
  because: ContentId | undefined
  becauseScore: number
}

function make(config: RecommenderConfig) {
  return Effect.gen(function*() {
    const tiers = yield* MemoryTiers
    const catalog = yield* Catalog

    /** Unit vector of the recent watches, newest weighted most; undefined without history. */
    const recentProfile = Effect.fnUntraced(function*(context: ViewContext) {
      const ids: Array<ContentId> = context.recentWatches.length > 0 ?
        context.recentWatches.slice(-config.recentWatches) :
        tiers.episodes.recent(config.recentWatches).map((e) => e.contentId)
      let profile: Float32Array | undefined
      for (const [position, id] of ids.entries()) {
        const embedding = yield* catalog.embedding(id)
        if (embedding === undefined) continue
        profile ??= new Float32Array(embedding.length)
        const weight = Math.pow(0.8, ids.length - 1 - position)
        for (let i = 0; i < profile.length; i++) profile[i]! += embedding[i]! * weight
      }
      return profile === undefined ? undefined : normalize(profile)
    })

    /** Causal multiplier of a source: its watched-through rate against an even prior. */
    const sourceMultiplier = (source: RecommendationSource): number => {
      const outcome = tiers.causal.outcomes()[source]
      return config.sourceWeights[source] * (2 * (outcome.successes + 1)) / (outcome.watched + 2)
    }

    /**
     * bestLocalPatterns by context, until the patterns change: a home screen asks again and again
     * between two watches, and ranking every pattern is most of a recommendation's time.
     */
    let bestByContext: { version: number; results: Map<string, ReturnType<typeof rankLocalPatterns>> } = {
      version: -1,
      results: new Map()
    }
    const bestLocalPatterns = (context: PatternContext) => {
      const version = tiers.skills.version()
      if (bestByContext.version !== version) bestByContext = { version, results: new Map() }
      const key = `${context.timeOfDay ?? ""}|${context.dayType ?? ""}|${context.mood ?? ""}`
      let best = bestByContext.results.get(key)
      if (best === undefined) bestByContext.results.set(key, best = rankLocalPatterns(context))
      return best
    }

    /**
     * The patterns with the highest vote weight in `context`, and the newest update time, in one
     * pass. Ranking in log space makes the recency factor a plain addition (its reference point
     * cancels out), and the evidence term is cached per pattern object (patterns are immutable).
     */
    const rankLocalPatterns = (context: PatternContext) => {
      const perMs = Math.LN2 / (config.recencyHalfLifeDays * DAY_MS)
      const top: Array<{ pattern: LocalPattern; rank: number }> = []
      let newest = 0
      for (const pattern of tiers.skills.all()) {
        if (pattern.updatedAt > newest) newest = pattern.updatedAt
        // log(weight x match) + recency, with no logarithm per pattern (this runs over every
        // pattern after every watch): the weight's is cached, the match's is a sum of constants.
        const rank = cachedEvidence(pattern).log + logContextMatch(pattern.context, context) +
          pattern.updatedAt * perMs
        if (top.length < config.patternsByQuality) top.push({ pattern, rank })
        else if (rank > top[top.length - 1]!.rank) top[top.length - 1] = { pattern, rank }
        else continue
        top.sort((a, b) => b.rank - a.rank)
      }
      return { patterns: top.map((t) => t.pattern), newest }
    }

    /**
     * The co-watched items with the highest summed weight over the newest watched items, not
     * watched themselves. They change only with the history or the rows, so they are kept until
     * one of those does (a home screen asks again and again between two watches).
     */
    let coWatchCache: { key: string; scores: ReadonlyArray<CoWatchScore> } | undefined
    const coWatchScores = (): ReadonlyArray<CoWatchScore> => {
      // The history's version, not its size: a re-watch reorders it without growing it.
      const key = `${tiers.episodes.watchedVersion()}:${catalog.coWatchVersion()}`
      if (coWatchCache?.key === key) return coWatchCache.scores
      // One entry per co-watched item: its summed votes, and the watched item with the strongest tie to it.
      const votes = new Map<ContentId, { sum: number; because: ContentId; weight: number }>()
      const history = tiers.episodes.watchedCount()
      // Items whose votes have halved ten times (to under 1/1000) are left out: they decide only
      // near-ties (on the eval, one user of 942 in one row), and they were most of the work.
      const window = coWatchVoteWindow(config)
      let position = 0
      for (const watched of tiers.episodes.watched()) {
        const newer = history - 1 - position++
        if (newer >= window) continue
        const recency = Math.pow(0.5, newer / config.coWatchHalfLife)
        for (const { contentId, weight } of catalog.coWatched(watched) ?? []) {
          const entry = votes.get(contentId)
          if (entry === undefined) votes.set(contentId, { sum: weight * recency, because: watched, weight })
          else {
            entry.sum += weight * recency
            if (weight > entry.weight) {
              entry.because = watched
              entry.weight = weight
            }
          }
        }
      }
      const scores = topByScore(votes, config.coWatchCandidates, (v) => v.sum, (id) => !tiers.episodes.hasWatched(id))
        .map(([contentId, v]) => ({ contentId, score: v.sum, because: v.because }))
      coWatchCache = { key, scores }
      return scores
    }

    const recommend = Effect.fn("Recommender.recommend")(function*(context: ViewContext, limit: number) {
      const patternContext = patternContextOf(context)
      const profile = yield* recentProfile(context)
      const candidates = new Map<ContentId, Candidate>()

      const vote = (
        item: CatalogItem,
        amount: number,
        source: RecommendationSource,
        pattern?: LocalPattern,
        because?: ContentId
      ) => {
        if (amount <= 0 || tiers.episodes.hasWatched(item.contentId)) return
        let candidate = candidates.get(item.contentId)
        if (candidate === undefined) {
          candidate = {
            item,
            score: 0,
            bySource: { local: 0, collective: 0, cowatch: 0, trend: 0 },
            bestPattern: undefined,
            bestPatternScore: 0,
            because: undefined,
            becauseScore: 0
          }
          candidates.set(item.contentId, candidate)
        }
        candidate.score += amount
        candidate.bySource[source] += amount
        if (pattern !== undefined && amount > candidate.bestPatternScore) {
          candidate.bestPattern = pattern
          candidate.bestPatternScore = amount
        }
        if (because !== undefined && amount > candidate.becauseScore) {
          candidate.because = because
          candidate.becauseScore = amount
        }
      }

      // Local patterns: the best ones for this context, and the ones closest to what was just watched.
      const voters = new Map<string, { pattern: LocalPattern; weight: number }>()
      const localMultiplier = sourceMultiplier("local")
      const { newest, patterns: best } = bestLocalPatterns(patternContext)
      for (const pattern of best) {
        voters.set(pattern.id, {
          pattern,
          weight: localWeight(pattern, patternContext, newest, config.recencyHalfLifeDays)
        })
      }
      if (profile !== undefined) {
        for (const { similarity, value: pattern } of yield* tiers.skills.nearest(profile, config.patternsByRecency)) {
          const weight = localWeight(pattern, patternContext, newest, config.recencyHalfLifeDays) *
            Math.max(0, similarity)
          const known = voters.get(pattern.id)
          voters.set(pattern.id, { pattern, weight: (known?.weight ?? 0) + weight })
        }
      }
      for (const { pattern, weight } of voters.values()) {
        if (weight <= 0) continue
        for (
          const { similarity, value: item } of yield* catalog.nearest(pattern.embedding, config.neighboursPerPattern)
        ) {
          vote(item, localMultiplier * weight * similarity * similarity, "local", pattern)
        }
      }

      // Collective patterns near the viewer's taste (or the best of them for a viewer with no history yet).
      const collectiveMultiplier = sourceMultiplier("collective")
      const anchor = profile ?? [...voters.values()].sort((a, b) => b.weight - a.weight)[0]?.pattern.embedding
      const collective: ReadonlyArray<{ value: GlobalPattern; similarity: number }> = anchor === undefined ?
        bestCollective(tiers.collective.all(), config.collectivePatterns) :
        yield* tiers.collective.nearest(anchor, config.collectivePatterns)
      for (const { similarity, value: pattern } of collective) {
        const weight = patternWeight(pattern) * contextMatch(pattern.context, patternContext) * Math.max(0, similarity)
        if (weight <= 0) continue
        for (
          const { similarity: s, value: item } of yield* catalog.nearest(pattern.embedding, config.neighboursPerPattern)
        ) {
          vote(item, collectiveMultiplier * weight * s * s, "collective")
        }
      }

      // Co-watch: every watched item votes for what the fleet's viewers of it also watched
      // (item-to-item; the rows are k-anonymous aggregates, the history never leaves the TV).
      const coWatchMultiplier = sourceMultiplier("cowatch")
      if (coWatchMultiplier > 0) {
        for (const { because, contentId, score } of coWatchScores()) {
          const item = catalog.get(contentId)
          if (item !== undefined) vote(item, coWatchMultiplier * score / 1000, "cowatch", undefined, because)
        }
      }

      // Regional trends: a boost proportional to momentum relative to the hottest item.
      const trends = tiers.collective.trends().filter((t) => config.region === undefined || t.region === config.region)
      const hottest = Math.max(0, ...trends.map((t) => t.score))
      if (hottest > 0) {
        const trendMultiplier = sourceMultiplier("trend")
        for (const trend of trends) {
          const item = catalog.get(trend.contentId)
          if (item === undefined || tiers.episodes.hasWatched(item.contentId)) continue
          let fit = 0
          if (config.trendAffinity > 0 && profile !== undefined) {
            const embedding = yield* catalog.embedding(trend.contentId)
            if (embedding !== undefined) fit = Math.max(0, dot(profile, embedding))
          }
          vote(item, trendMultiplier * (trend.score / hottest) * (1 + config.trendAffinity * fit), "trend")
        }
      }

      const ranked = [...candidates.values()].sort((a, b) => b.score - a.score).slice(0, limit)
      return ranked.map((candidate): Recommendation => {
        const source = dominantSource(candidate)
        tiers.causal.recordAction(candidate.item.contentId, source)
        return {
          contentId: candidate.item.contentId,
          title: candidate.item.title,
          score: candidate.score,
          reason: explain(source, candidate, catalog.get, context),
          confidence: candidate.score / (candidate.score + 1)
        }
      })
    })

    return Recommender.of({ recommend })
  })
}

const DAY_MS = 86_400_000

/** The `k` entries of `entries` with the highest `score` that pass `keep`, highest first (a bounded min-heap). */
const topByScore = <K, V>(
  entries: ReadonlyMap<K, V>,
  k: number,
  score: (value: V) => number,
  keep: (key: K) => boolean
): Array<readonly [K, V]> => {
  if (k <= 0) return []
  const heap: Array<readonly [K, V]> = []
  const scores: Array<number> = []
  const less = (i: number, j: number) => scores[i]! < scores[j]!
  const swap = (i: number, j: number) => {
    const t = heap[i]!
    heap[i] = heap[j]!
    heap[j] = t
    const u = scores[i]!
    scores[i] = scores[j]!
    scores[j] = u
  }
  for (const entry of entries) {
    const value = score(entry[1])
    if (heap.length === k && value <= scores[0]!) continue
    if (!keep(entry[0])) continue
    if (heap.length < k) {
      heap.push(entry)
      scores.push(value)
      for (let i = heap.length - 1; i > 0 && less(i, (i - 1) >> 1); i = (i - 1) >> 1) swap(i, (i - 1) >> 1)
      continue
    }
    heap[0] = entry
    scores[0] = value
    for (let i = 0;;) {
      const l = 2 * i + 1
      const r = l + 1
      let m = i
      if (l < heap.length && less(l, m)) m = l
      if (r < heap.length && less(r, m)) m = r
      if (m === i) break
      swap(i, m)
      i = m
    }
  }
  return heap.map((entry, i) => ({ entry, value: scores[i]! })).sort((a, b) => b.value - a.value).map((e) => e.entry)
}

const dot = (a: Float32Array, b: Float32Array) => {
  let s = 0
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!
  return s
}

/** A local pattern's evidence weight and its logarithm, computed once per pattern object (patterns are immutable). */
const evidence = new WeakMap<LocalPattern, { readonly weight: number; readonly log: number }>()
const cachedEvidence = (pattern: LocalPattern): { readonly weight: number; readonly log: number } => {
  let known = evidence.get(pattern)
  if (known === undefined) {
    const weight = patternWeight(pattern)
    evidence.set(pattern, known = { weight, log: Math.log(weight) })
  }
  return known
}
const cachedWeight = (pattern: LocalPattern): number => cachedEvidence(pattern).weight

const localWeight = (pattern: LocalPattern, context: PatternContext, newest: number, halfLifeDays: number) =>
  cachedWeight(pattern) * contextMatch(pattern.context, context) *
  Math.pow(0.5, (newest - pattern.updatedAt) / (halfLifeDays * DAY_MS))

const bestCollective = (patterns: ReadonlyArray<GlobalPattern>, n: number) =>
  [...patterns].sort((a, b) => patternWeight(b) - patternWeight(a)).slice(0, n).map((value) => ({
    value,
    similarity: 1
  }))

const dominantSource = (c: Candidate): RecommendationSource =>
  (Object.keys(c.bySource) as Array<RecommendationSource>).reduce((best, source) =>
    c.bySource[source] > c.bySource[best] ? source : best
  )

const explain = (
  source: RecommendationSource,
  candidate: Candidate,
  lookup: (id: ContentId) => CatalogItem | undefined,
  context: ViewContext
): string => {
  switch (source) {
    case "local": {
      const exemplar = candidate.bestPattern?.exemplar
      const title = exemplar === undefined ? undefined : lookup(exemplar)?.title
      return title === undefined
        ? `Fits your ${context.dayType} ${context.timeOfDay} viewing`
        : `Because you watched ${title}`
    }
    case "collective":
      return "Popular with viewers who share your taste"
    case "cowatch": {
      const title = candidate.because === undefined ? undefined : lookup(candidate.because)?.title
      return title === undefined
        ? "Watched by viewers who watch what you watch"
        : `Viewers of ${title} also watched this`
    }
    case "trend":
      return "Trending in your region"
  }
}
