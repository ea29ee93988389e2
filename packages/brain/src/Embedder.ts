/**
 * Turns catalog items and free text into 384-d unit vectors. The embedded default is a
 * weight-free feature-hashing embedder; `OnnxEmbedder` runs a real sentence-transformer.
 */
import {
  type ContentText,
  defaultHashingWeights,
  type Embedding,
  EMBEDDING_DIMENSIONS,
  hashContent,
  type HashingWeights,
  hashText,
  normalizeEmbedding
} from "@omega/protocol"
import { Context, Data, Effect, Layer } from "effect"

export type { ContentText, HashingWeights }
export { defaultHashingWeights }

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
  /** Feature hashing with other token weights (for example an identity token per title). */
  static readonly layerHashingWith = (weights: HashingWeights) =>
    Layer.sync(Embedder, () => makeHashing(EMBEDDING_DIMENSIONS, weights))
}

/** The embedder could not produce a vector (model failed to load or run). */
export class EmbedError extends Data.TaggedError("EmbedError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/** Feature-hashing embedder over the protocol's `hashContent` (weight-free, the embedded default). */
export function makeHashing(
  dimensions = EMBEDDING_DIMENSIONS,
  weights: HashingWeights = defaultHashingWeights
): Embedder["Service"] {
  const identity = weights.title > 0 ? `-title${weights.title}x${weights.titleFeatures}` : ""
  return Embedder.of({
    model: `feature-hashing-${dimensions}${identity}`,
    dimensions,
    embedText: (text) => Effect.sync(() => hashText(text, dimensions)),
    embedContent: (item) => Effect.sync(() => hashContent(item, weights, dimensions))
  })
}

/** Scales `v` to unit length in place; a zero vector gets a fixed unit direction. */
export const normalize = normalizeEmbedding
