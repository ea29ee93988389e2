/**
 * Seeded, realistic inputs for the wire tests and benchmark: embedding sets to measure
 * quantization recall on, and sync frames of the sizes a TV and a shard exchange.
 */
import { EMBEDDING_DIMENSIONS } from "../Constants.ts"
import { hashContent, normalizeEmbedding } from "../ContentHashing.ts"
import type {
  ContentEmbedding,
  GlobalPattern,
  PatternContext,
  PatternId,
  SharedPattern,
  TrendSignal
} from "../Pattern.ts"
import type { ContentId } from "../Viewing.ts"
import type { DeltaUpload, GlobalUpdate } from "./Frame.ts"
import { gaussian, seededRandom, seededUuid } from "./internal/random.ts"

export { seededRandom }

const normalize = normalizeEmbedding

const randomUnit = (random: () => number): Float32Array =>
  normalize(Float32Array.from({ length: EMBEDDING_DIMENSIONS }, () => gaussian(random)))

/**
 * Unit vectors in `clusters` topics around a shared mean direction, like sentence embeddings:
 * unrelated pairs have cosine ~0.06, pairs in one topic ~0.5.
 */
export const clusteredVectors = (n: number, seed: number, clusters = 40): Array<Float32Array> => {
  const random = seededRandom(seed)
  const mean = randomUnit(random)
  const centers = Array.from({ length: clusters }, () => randomUnit(random))
  const spread = 1 / Math.sqrt(EMBEDDING_DIMENSIONS)
  return Array.from({ length: n }, () => {
    const center = centers[Math.floor(random() * clusters)]!
    return normalize(Float32Array.from(
      { length: EMBEDDING_DIMENSIONS },
      (_, i) => 0.35 * mean[i]! + center[i]! + spread * gaussian(random)
    ))
  })
}

/** The protocol's hashing embedding of a catalog item (what the brain's default Embedder computes). */
export const hashingEmbedding = (title: string, genres: ReadonlyArray<string>): Float32Array =>
  hashContent({ title, genres })

const GENRES = [
  "Action",
  "Adventure",
  "Animation",
  "Children",
  "Comedy",
  "Crime",
  "Documentary",
  "Drama",
  "Fantasy",
  "Film-Noir",
  "Horror",
  "Musical",
  "Mystery",
  "Romance",
  "Sci-Fi",
  "Thriller",
  "War",
  "Western"
]

/** Catalog-like titles ("word word (1987)") with one to three genres; title words are Zipf-ish. */
export const syntheticTitles = (n: number, seed: number) => {
  const random = seededRandom(seed)
  const vocabulary = Array.from({ length: 1500 }, (_, i) => `w${i.toString(36)}x`)
  return Array.from({ length: n }, (_, i) => {
    const title = Array.from(
      { length: 1 + Math.floor(random() * 4) },
      () => vocabulary[Math.floor(random() ** 1.5 * vocabulary.length)]!
    ).join(" ")
    const genres = new Set(Array.from({ length: 1 + Math.floor(random() * 3) }, () => pick(random, GENRES)))
    return {
      contentId: `tt${String(1_000_000 + i * 7919).padStart(7, "0")}` as ContentId,
      title: `${title} (${1950 + Math.floor(random() * 75)})`,
      genres: [...genres]
    }
  })
}

/** Hashing-embedder embeddings of synthetic catalog items. */
export const hashingItems = (n: number, seed: number): Array<Float32Array> =>
  syntheticTitles(n, seed).map((t) => hashingEmbedding(t.title, t.genres))

/** Taste patterns as the brain forms them: centroids of 3 to 12 hashing-embedded items sharing a genre. */
export const hashingPatterns = (n: number, seed: number): Array<Float32Array> => {
  const items = syntheticTitles(5_000, seed).map((t) => ({ genres: t.genres, v: hashingEmbedding(t.title, t.genres) }))
  const byGenre = new Map(GENRES.map((g) => [g, items.filter((item) => item.genres.includes(g))]))
  const random = seededRandom(seed + 1)
  return Array.from({ length: n }, () => {
    const pool = byGenre.get(pick(random, GENRES))!
    const v = new Float32Array(EMBEDDING_DIMENSIONS)
    for (let j = 3 + Math.floor(random() * 10); j > 0; j--) {
      const item = pick(random, pool)
      for (let i = 0; i < v.length; i++) v[i]! += item.v[i]!
    }
    return normalize(v)
  })
}

const pick = <A>(random: () => number, from: ReadonlyArray<A>): A => from[Math.floor(random() * from.length)]!

const context = (random: () => number): PatternContext => ({
  ...(random() < 0.8 ? { timeOfDay: pick(random, ["morning", "afternoon", "evening", "night"] as const) } : {}),
  ...(random() < 0.6 ? { dayType: pick(random, ["weekday", "weekend"] as const) } : {}),
  ...(random() < 0.3 ? { mood: pick(random, ["relaxed", "excited", "focused", "social"] as const) } : {})
})

/** A quality pattern as a TV shares it: UUID id (as the brain mints them), success rate >= 0.7, decayed count. */
export const sharedPattern = (random: () => number, embedding: Float32Array): SharedPattern => ({
  id: seededUuid(random) as PatternId,
  embedding,
  successRate: 0.7 + 0.3 * random(),
  sampleCount: 1 + 40 * random(),
  context: context(random)
})

/** A delta of `patterns` changed patterns (split between added and updated) and 0-3 removals. */
export const deltaUpload = (random: () => number, patterns: ReadonlyArray<Float32Array>): DeltaUpload => {
  const shared = patterns.map((v) => sharedPattern(random, v))
  const added = Math.floor(random() * (shared.length + 1))
  const baseVersion = Math.floor(random() * 10_000)
  return {
    _tag: "DeltaUpload",
    delta: {
      baseVersion,
      version: baseVersion + shared.length,
      added: shared.slice(0, added),
      updated: shared.slice(added),
      removed: Array.from({ length: Math.floor(random() * 4) }, () => seededUuid(random) as PatternId)
    }
  }
}

/** A regional download: global patterns (UUID ids, the pessimistic case) and trends. */
export const globalUpdate = (
  random: () => number,
  patterns: ReadonlyArray<Float32Array>,
  trends: number
): GlobalUpdate => ({
  _tag: "GlobalUpdate",
  global: {
    version: 100_000 + Math.floor(random() * 100_000),
    similar: patterns.map((embedding): GlobalPattern => ({
      ...sharedPattern(random, embedding),
      sampleCount: 50 + 5_000 * random(),
      deviceCount: 3 + Math.floor(random() * 2_000)
    })),
    trending: Array.from({ length: trends }, (_, i): TrendSignal => ({
      contentId: `tt${String(1_000_000 + Math.floor(random() * 9_000_000))}` as ContentId,
      region: i < trends - 2 ? "eu-west" : "global",
      score: 100 * random(),
      velocity: 20 * random() - 5
    }))
  }
})

/** Catalog items with hashing embeddings, as a ContentUpdate announces them. */
export const contentItems = (n: number, seed: number): Array<ContentEmbedding> =>
  syntheticTitles(n, seed).map((t) => ({ ...t, embedding: hashingEmbedding(t.title, t.genres) }))
