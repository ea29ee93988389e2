/** The content this TV can recommend, with an index over item embeddings. In memory; BrainStore persists it. */
import { type ContentEmbedding, type ContentId, EMBEDDING_DIMENSIONS } from "@omega/protocol"
import { Context, Effect, Layer } from "effect"
import { KeyMap } from "./internal/KeyMap.ts"
import type { Neighbour } from "./MemoryTiers.ts"
import { type IndexError, VectorIndex } from "./VectorIndex.ts"

export class Catalog extends Context.Service<Catalog, {
  readonly get: (id: ContentId) => ContentEmbedding | undefined
  readonly size: () => number
  readonly all: () => IterableIterator<ContentEmbedding>
  /** Adds new items and replaces changed ones. */
  readonly upsert: (items: ReadonlyArray<ContentEmbedding>) => Effect.Effect<void, IndexError>
  readonly nearest: (
    v: Float32Array,
    k: number
  ) => Effect.Effect<ReadonlyArray<Neighbour<ContentEmbedding>>, IndexError>
}>()("omega/brain/Catalog") {
  static readonly layer = Layer.effect(Catalog, make())
}

function make() {
  return Effect.gen(function*() {
    const index = yield* (yield* VectorIndex).create({
      dimensions: EMBEDDING_DIMENSIONS,
      quantization: "f16",
      capacity: 2_048
    })
    const items = new Map<ContentId, ContentEmbedding>()
    const keys = new KeyMap<ContentId>()

    const upsert = (batch: ReadonlyArray<ContentEmbedding>) =>
      index.upsertMany(batch.map((item) => [keys.keyOf(item.contentId), item.embedding] as const)).pipe(
        Effect.tap(() =>
          Effect.sync(() => {
            for (const item of batch) items.set(item.contentId, item)
          })
        )
      )

    const nearest = (v: Float32Array, k: number) =>
      index.search(v, k).pipe(Effect.map((hits) => keys.resolve(hits, items)))

    return Catalog.of({
      get: (id) => items.get(id),
      size: () => items.size,
      all: () => items.values(),
      upsert,
      nearest
    })
  })
}
