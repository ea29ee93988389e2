/**
 * Saving an index together with its id -> key map, stamped with the store version it reflects,
 * so a restarted brain can load it instead of rebuilding the HNSW graph (seconds for 10K vectors).
 */
import { Effect } from "effect"
import { readFile, rename, writeFile } from "node:fs/promises"
import type { IndexHandle, IndexOptions, VectorIndex } from "../VectorIndex.ts"
import { KeyMap } from "./KeyMap.ts"

interface KeysFile<Id> {
  readonly stamp: number
  readonly entries: ReadonlyArray<readonly [Id, number]>
}

/** Writes `index` to `path` and its keys beside it; both are replaced atomically by rename. */
export const saveSnapshot = <Id>(index: IndexHandle, keys: KeyMap<Id>, path: string, stamp: number) =>
  Effect.gen(function*() {
    yield* index.save(path)
    const body: KeysFile<Id> = { stamp, entries: keys.entries() }
    yield* Effect.tryPromise(async () => {
      await writeFile(`${path}.keys.tmp`, JSON.stringify(body))
      await rename(`${path}.keys.tmp`, `${path}.keys.json`)
    })
  })

/**
 * Loads a snapshot if it exists, carries `stamp` and covers exactly `ids`; anything else
 * (missing, stale, corrupt) yields undefined and the caller rebuilds from the store.
 */
export const loadSnapshot = <Id>(
  vectorIndex: VectorIndex["Service"],
  path: string,
  stamp: number,
  ids: ReadonlyArray<Id>,
  options: IndexOptions
) =>
  Effect.gen(function*() {
    const body = JSON.parse(yield* Effect.tryPromise(() => readFile(`${path}.keys.json`, "utf8"))) as KeysFile<Id>
    if (body.stamp !== stamp || body.entries.length !== ids.length) return undefined
    const known = new Set(body.entries.map(([id]) => id))
    if (ids.some((id) => !known.has(id))) return undefined
    const keys = new KeyMap<Id>()
    keys.restore(body.entries)
    const index = yield* vectorIndex.load(path, options)
    if (index.size() !== ids.length) return undefined
    return { index, keys }
  }).pipe(Effect.catch(() => Effect.succeed(undefined)))
