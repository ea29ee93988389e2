/** The content this TV can recommend, with an index over item embeddings. In memory; BrainStore persists it. */
import { type ContentEmbedding, type ContentId, EMBEDDING_DIMENSIONS } from "@omega/protocol"
import { Context, Effect, Layer } from "effect"
import { loadSnapshot, saveSnapshot } from "./internal/IndexSnapshot.ts"
import { KeyMap } from "./internal/KeyMap.ts"
import { INDEX_TUNING, type Neighbour } from "./MemoryTiers.ts"
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
  /** Saves the index and its keys to `path`, stamped with the store's catalog version. */
  readonly save: (path: string, stamp: number) => Effect.Effect<void, unknown>
  /** Takes `items` with the index saved at `path` if its stamp matches; false means rebuild. */
  readonly restore: (path: string, stamp: number, items: ReadonlyArray<ContentEmbedding>) => Effect.Effect<boolean>
}>()("omega/brain/Catalog") {
  static readonly layer = Layer.effect(Catalog, make())
}

function make() {
  return Effect.gen(function*() {
    const vectorIndex = yield* VectorIndex
    const options = { dimensions: EMBEDDING_DIMENSIONS, quantization: "f16", capacity: 2_048, ...INDEX_TUNING } as const
    let index = yield* vectorIndex.create(options)
    const items = new Map<ContentId, ContentEmbedding>()
    let keys = new KeyMap<ContentId>()

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
      nearest,
      save: (path, stamp) => saveSnapshot(index, keys, path, stamp),
      restore: (path, stamp, restored) =>
        loadSnapshot(vectorIndex, path, stamp, restored.map((item) => item.contentId), options).pipe(
          Effect.map((snapshot) => {
            if (snapshot === undefined) return false
            index = snapshot.index
            keys = snapshot.keys
            items.clear()
            for (const item of restored) items.set(item.contentId, item)
            return true
          })
        )
    })
  })
}
