/**
 * Quick throughput check of ShardStorage's batch writes: 1,000 device patterns per call and
 * 1,000 aggregated patterns (HNSW-indexed) per call, and one device's small deltas in a row
 * (one transaction each, run one after another, then the same number in one batch), on PGlite and, when OMEGA_DATABASE_URL
 * (or POSTGRES_URL) is set, on PostgreSQL in a throw-away schema. Prints JSON.
 *   scripts/node packages/constellation/src/bench/StorageBatchBench.ts
 */
import { EMBEDDING_DIMENSIONS, type PatternId, type SharedPattern } from "@omega/protocol"
import { Effect, Layer } from "effect"
import { databaseUrlFromEnv, ShardStorage, type StorageError } from "../ShardStorage.ts"

const ROWS = 1_000
const ROUNDS = 3
/** Sequential small deltas (2 patterns each), the shape of one TV sync. */
const SMALL_DELTAS = 200

const pattern = (i: number, round: number): SharedPattern => {
  const embedding = new Float32Array(EMBEDDING_DIMENSIONS)
  for (let d = 0; d < embedding.length; d++) embedding[d] = Math.sin(i * 7.3 + d * 0.11 + round)
  return { id: `p${i}` as PatternId, embedding, successRate: 0.8, sampleCount: 3, context: { timeOfDay: "evening" } }
}

/** Rows per second of the fastest round. */
const rate = (ms: ReadonlyArray<number>) => Math.round(ROWS / (Math.min(...ms) / 1000))

const measure = <A>(effect: Effect.Effect<A, StorageError, ShardStorage>) =>
  Effect.gen(function*() {
    const start = performance.now()
    yield* effect
    return performance.now() - start
  })

const run = Effect.gen(function*() {
  const storage = yield* ShardStorage
  const device: Array<number> = []
  const aggregated: Array<number> = []
  for (let round = 0; round < ROUNDS; round++) {
    const patterns = Array.from({ length: ROWS }, (_, i) => pattern(i, round))
    const id = `bench-${Date.now()}-${round}`
    yield* storage.registerDevice({ id, tokenHash: "bench", region: "bench" })
    device.push(yield* measure(storage.upsertDevicePatterns(id, patterns, [], 1)))
    const globals = patterns.map((p) => ({ ...p, id: `${id}-${p.id}` as PatternId, deviceCount: 3 }))
    aggregated.push(yield* measure(storage.upsertAggregated("bench", globals)))
  }
  const small = `bench-small-${Date.now()}`
  yield* storage.registerDevice({ id: small, tokenHash: "bench", region: "bench" })
  const smallMs = yield* measure(Effect.gen(function*() {
    for (let version = 1; version <= SMALL_DELTAS; version++) {
      yield* storage.upsertDevicePatterns(small, [pattern(version % 7, version), pattern(100, version)], [], version)
    }
  }))
  // The same small deltas from SMALL_DELTAS devices in one batch, as the shard's group commit writes them.
  const batchIds = Array.from({ length: SMALL_DELTAS }, (_, i) => `bench-batch-${Date.now()}-${i}`)
  for (const id of batchIds) yield* storage.registerDevice({ id, tokenHash: "bench", region: "bench" })
  const batchMs = yield* measure(storage.upsertDevicePatternsBatch(batchIds.map((deviceId, i) => ({
    deviceId,
    patterns: [pattern(i, 0), pattern(i + 1, 0)],
    removed: [],
    version: 1
  }))))
  return {
    devicePatternsRowsPerSecond: rate(device),
    aggregatedRowsPerSecond: rate(aggregated),
    smallDeltasPerSecond: Math.round(SMALL_DELTAS / (smallMs / 1000)),
    smallDeltasBatchedPerSecond: Math.round(SMALL_DELTAS / (batchMs / 1000)),
    devicePatternsMs: device.map(Math.round),
    aggregatedMs: aggregated.map(Math.round)
  }
})

const url = databaseUrlFromEnv()
const schema = `omega_bench_${process.pid}`

const main = Effect.gen(function*() {
  const results: Record<string, unknown> = { rowsPerCall: ROWS, rounds: ROUNDS }
  results["pglite"] = yield* run.pipe(Effect.provide(ShardStorage.layerPglite()))
  results["postgres"] = url === undefined
    ? "skipped: set OMEGA_DATABASE_URL"
    : yield* run.pipe(
      Effect.provide(Layer.merge(ShardStorage.layerPg({ url, schema }), ShardStorage.layerDropPgSchemas(url, [schema])))
    )
  console.log(JSON.stringify(results, null, 2))
})

Effect.runPromise(main).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
