/**
 * The weight-free content embedding every TV and shard can compute: feature hashing of a catalog
 * item's genre, decade, year and title tokens into the shared 384-d space. It is part of the
 * protocol because both sides must agree on the embedding space (the constellation decodes
 * patterns and announces new content in it); the brain's default Embedder wraps it.
 */
import { EMBEDDING_DIMENSIONS } from "./Constants.ts"

/** What the hashing embedding needs to know about a catalog item. */
export interface ContentText {
  readonly title: string
  readonly genres: ReadonlyArray<string>
}

/** How much each kind of token of a catalog item weighs in its hashed embedding. */
export interface HashingWeights {
  readonly genre: number
  readonly decade: number
  readonly year: number
  readonly word: number
  /**
   * One token for the whole title: the item's own identity, which lets an average of many items
   * (a pattern) still say which items it averages. 0 leaves it out.
   */
  readonly title: number
  /** Hashed features the title token is spread over (its weight is spread to keep its energy). */
  readonly titleFeatures: number
}

/** Genre, decade and year tokens describe taste more than individual title words do. */
export const defaultHashingWeights: HashingWeights = {
  genre: 2.0,
  decade: 0.75,
  year: 1.0,
  word: 0.5,
  title: 0,
  titleFeatures: 2
}

const STOP_WORDS = new Set(["the", "a", "an", "of", "and", "in", "on", "to", "la", "le", "il", "de"])

/** The hashed embedding of a catalog item (unit length). */
export const hashContent = (
  item: ContentText,
  weights: HashingWeights = defaultHashingWeights,
  dimensions: number = EMBEDDING_DIMENSIONS
): Float32Array => embedTokens(contentTokens(item, weights), dimensions)

/** The hashed embedding of free text (unit length). */
export const hashText = (text: string, dimensions: number = EMBEDDING_DIMENSIONS): Float32Array =>
  embedTokens(words(text).map((w) => ({ text: `word:${w}`, weight: 1, features: 2 })), dimensions)

const embedTokens = (tokens: ReadonlyArray<Token>, dimensions: number): Float32Array => {
  const v = new Float32Array(dimensions)
  for (const { features, text, weight } of tokens) {
    // Two or more independent hashed features per token soften the damage of a collision.
    const share = weight * Math.sqrt(2 / features)
    for (let f = 0; f < features; f++) {
      const h = fnv1a(text + "#".repeat(f))
      v[h % dimensions]! += (h & 0x80000000 ? -1 : 1) * share
    }
  }
  return normalizeEmbedding(v)
}

interface Token {
  readonly text: string
  readonly weight: number
  readonly features: number
}

const contentTokens = (item: ContentText, weights: HashingWeights): Array<Token> => {
  const tokens: Array<Token> = []
  const token = (text: string, weight: number, features = 2) => tokens.push({ text, weight, features })
  for (const genre of item.genres) token(`genre:${genre.toLowerCase()}`, weights.genre)
  const year = /\((\d{4})\)/.exec(item.title)?.[1]
  if (year !== undefined) {
    token(`decade:${year.slice(0, 3)}`, weights.decade)
    token(`year:${year}`, weights.year)
  }
  for (const word of words(item.title.replace(/\(\d{4}\)/, ""))) token(`word:${word}`, weights.word)
  if (weights.title > 0) token(`title:${item.title.toLowerCase()}`, weights.title, weights.titleFeatures)
  return tokens
}

const words = (text: string): Array<string> =>
  text.toLowerCase().split(/[^\p{L}\p{N}]+/u).filter((w) => w.length > 1 && !STOP_WORDS.has(w))

/** FNV-1a, 32 bits, over the text's UTF-16 code units: the feature hash here, and a compact id hash. */
export const fnv1a = (text: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** Scales `v` to unit length in place; a zero vector gets a fixed unit direction. */
export const normalizeEmbedding = (v: Float32Array): Float32Array => {
  let norm = 0
  for (let i = 0; i < v.length; i++) norm += v[i]! * v[i]!
  if (norm === 0) {
    v[0] = 1
    return v
  }
  const inv = 1 / Math.sqrt(norm)
  for (let i = 0; i < v.length; i++) v[i]! *= inv
  return v
}
