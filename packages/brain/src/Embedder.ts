/**
 * Turns catalog items and free text into 384-d unit vectors. The embedded default is a
 * weight-free feature-hashing embedder; `OnnxEmbedder` runs a real sentence-transformer.
 */
import { type Embedding, EMBEDDING_DIMENSIONS } from "@omega/protocol"
import { Context, Data, Effect, Layer } from "effect"

/** What an embedder needs to know about a catalog item. */
export interface ContentText {
  readonly title: string
  readonly genres: ReadonlyArray<string>
}

export class Embedder extends Context.Service<Embedder, {
  /** Name of the model, reported in benchmarks and health output. */
  readonly model: string
  readonly dimensions: number
  /** Embeds free text (a query, a description). */
  readonly embedText: (text: string) => Effect.Effect<Embedding, EmbedError>
  /** Embeds a catalog item from its title and genres. */
  readonly embedContent: (item: ContentText) => Effect.Effect<Embedding, EmbedError>
}>()("omega/brain/Embedder") {
  /** The weight-free default: feature hashing of title, year and genre tokens. */
  static readonly layerHashing = Layer.sync(Embedder, () => makeHashing())
}

/** The embedder could not produce a vector (model failed to load or run). */
export class EmbedError extends Data.TaggedError("EmbedError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

// Genre, decade and year tokens describe taste more than individual title words do.
const GENRE_WEIGHT = 2.0
const DECADE_WEIGHT = 0.75
const YEAR_WEIGHT = 1.0
const WORD_WEIGHT = 0.5

const STOP_WORDS = new Set(["the", "a", "an", "of", "and", "in", "on", "to", "la", "le", "il", "de"])

/** Feature-hashing embedder: each token adds ±weight to one dimension chosen by hash. */
export function makeHashing(dimensions = EMBEDDING_DIMENSIONS): Embedder["Service"] {
  const embedTokens = (tokens: ReadonlyArray<readonly [string, number]>): Embedding => {
    const v = new Float32Array(dimensions)
    for (const [token, weight] of tokens) {
      // Two independent hashed features per token halve the damage of a collision.
      const h1 = fnv1a(token)
      const h2 = fnv1a(token + "#")
      v[h1 % dimensions]! += (h1 & 0x80000000 ? -1 : 1) * weight
      v[h2 % dimensions]! += (h2 & 0x80000000 ? -1 : 1) * weight
    }
    return normalize(v)
  }

  return Embedder.of({
    model: `feature-hashing-${dimensions}`,
    dimensions,
    embedText: (text) => Effect.sync(() => embedTokens(words(text).map((w) => [`word:${w}`, 1] as const))),
    embedContent: (item) => Effect.sync(() => embedTokens(contentTokens(item)))
  })
}

const contentTokens = (item: ContentText): Array<readonly [string, number]> => {
  const tokens: Array<readonly [string, number]> = []
  for (const genre of item.genres) tokens.push([`genre:${genre.toLowerCase()}`, GENRE_WEIGHT])
  const year = /\((\d{4})\)/.exec(item.title)?.[1]
  if (year !== undefined) {
    tokens.push([`decade:${year.slice(0, 3)}`, DECADE_WEIGHT])
    tokens.push([`year:${year}`, YEAR_WEIGHT])
  }
  for (const word of words(item.title.replace(/\(\d{4}\)/, ""))) tokens.push([`word:${word}`, WORD_WEIGHT])
  return tokens
}

const words = (text: string): Array<string> =>
  text.toLowerCase().split(/[^\p{L}\p{N}]+/u).filter((w) => w.length > 1 && !STOP_WORDS.has(w))

const fnv1a = (text: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** Scales `v` to unit length in place; a zero vector gets a fixed unit direction. */
export const normalize = (v: Float32Array): Float32Array => {
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
