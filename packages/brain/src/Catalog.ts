/**
 * The content this TV can recommend: titles and genres in memory, an index over item
 * embeddings, and the embeddings themselves read from BrainStore when needed (a small cache
 * keeps the recent ones), so a large catalog costs little memory or start-up time.
 */
import {
  type ContentEmbedding,
  type ContentId,
  type CoWatchNeighbour,
  type CoWatchRow,
  EMBEDDING_DIMENSIONS
} from "@omega/protocol"
import { Context, Effect, Layer } from "effect"
import { BrainStore, type CatalogItem, type StoreError } from "./BrainStore.ts"
import { loadSnapshot, saveSnapshot } from "./internal/IndexSnapshot.ts"
import { KeyMap } from "./internal/KeyMap.ts"
import { INDEX_TUNING, type Neighbour } from "./MemoryTiers.ts"
import { type IndexError, VectorIndex } from "./VectorIndex.ts"

export class Catalog extends Context.Service<Catalog, {
  readonly get: (id: ContentId) => CatalogItem | undefined
  /** The item's embedding (from the cache or the store); undefined for unknown items. */
  readonly embedding: (id: ContentId) => Effect.Effect<Float32Array | undefined, StoreError>
  readonly size: () => number
  /** Adds new items and replaces changed ones (the caller persists them). */
  readonly upsert: (items: ReadonlyArray<ContentEmbedding>) => Effect.Effect<void, IndexError>
  readonly nearest: (v: Float32Array, k: number) => Effect.Effect<ReadonlyArray<Neighbour<CatalogItem>>, IndexError>
  /** What the fleet's viewers of `id` also watched, strongest first; undefined without a row. */
  readonly coWatched: (id: ContentId) => ReadonlyArray<CoWatchNeighbour> | undefined
  /** Replaces the co-watch rows named; an empty row removes the item's (the caller persists them). */
  readonly setCoWatch: (rows: ReadonlyArray<CoWatchRow>) => void
  /** Counts setCoWatch calls: anything derived from the rows is stale once it moves. */
  readonly coWatchVersion: () => number
  /** Saves the index and its keys to `path`, stamped with the store's catalog version. */
  readonly save: (path: string, stamp: number) => Effect.Effect<void, unknown>
  /** Takes `items` with the index saved at `path` if its stamp matches; false means rebuild. */
  readonly restore: (path: string, stamp: number, items: ReadonlyArray<CatalogItem>) => Effect.Effect<boolean>
}>()("omega/brain/Catalog") {
  static readonly layer = Layer.effect(Catalog, make())
}

/** Embeddings kept in memory: enough for the recent watches and the items being observed. */
const EMBEDDING_CACHE = 512

function make() {
  return Effect.gen(function*() {
    const store = yield* BrainStore
    const vectorIndex = yield* VectorIndex
    const options = { dimensions: EMBEDDING_DIMENSIONS, quantization: "f16", capacity: 2_048, ...INDEX_TUNING } as const
    let index = yield* vectorIndex.create(options)
    const items = new Map<ContentId, CatalogItem>()
    const coWatch = new Map<ContentId, ReadonlyArray<CoWatchNeighbour>>()
    let coWatchVersion = 0
    let keys = new KeyMap<ContentId>()
    // Map iteration order is insertion order, which makes it a small LRU.
    const cache = new Map<ContentId, Float32Array>()
    const remember = (id: ContentId, embedding: Float32Array) => {
      cache.delete(id)
      cache.set(id, embedding)
      if (cache.size > EMBEDDING_CACHE) cache.delete(cache.keys().next().value!)
    }

    const upsert = (batch: ReadonlyArray<ContentEmbedding>) =>
      index.upsertMany(batch.map((item) => [keys.keyOf(item.contentId), item.embedding] as const)).pipe(
        Effect.tap(() =>
          Effect.sync(() => {
            for (const { contentId, embedding, genres, title } of batch) {
              items.set(contentId, { contentId, title, genres })
              if (cache.has(contentId)) remember(contentId, embedding)
            }
          })
        )
      )

    const embedding = (id: ContentId) =>
      Effect.suspend(() => {
        const cached = cache.get(id)
        if (cached !== undefined) {
          remember(id, cached)
          return Effect.succeed(cached)
        }
        if (!items.has(id)) return Effect.succeed(undefined)
        return store.catalogEmbedding(id).pipe(Effect.tap((v) => Effect.sync(() => v && remember(id, v))))
      })

    return Catalog.of({
      get: (id) => items.get(id),
      embedding,
      size: () => items.size,
      upsert,
      coWatched: (id) => coWatch.get(id),
      coWatchVersion: () => coWatchVersion,
      setCoWatch: (rows) => {
        coWatchVersion += 1
        for (const row of rows) {
          if (row.neighbours.length === 0) coWatch.delete(row.contentId)
          else coWatch.set(row.contentId, row.neighbours)
        }
      },
      nearest: (v, k) => index.search(v, k).pipe(Effect.map((hits) => keys.resolve(hits, items))),
      save: (path, stamp) => saveSnapshot(index, keys, path, stamp),
      restore: (path, stamp, restored) =>
        loadSnapshot(vectorIndex, path, stamp, restored.map((item) => item.contentId), options).pipe(
          Effect.map((snapshot) => {
            if (snapshot === undefined) return false
            index = snapshot.index
            keys = snapshot.keys
            items.clear()
            cache.clear()
            for (const item of restored) items.set(item.contentId, item)
            return true
          })
        )
    })
  })
}
