import { assert, describe, layer, type Vitest } from "@effect/vitest"
import {
  type ContentEmbedding,
  type ContentId,
  EMBEDDING_DIMENSIONS,
  type GlobalPattern,
  type PatternId,
  type SharedPattern,
  type TrendSignal
} from "@omega/protocol"
import { Effect, Exit, Layer, Option } from "effect"
import { TestClock } from "effect/testing"
import { databaseUrlFromEnv, ShardStorage, StorageError, type StoredDevicePattern } from "./ShardStorage.ts"

const DATABASE_URL = databaseUrlFromEnv()
if (DATABASE_URL === undefined) {
  console.log(
    "ShardStorage: PostgreSQL cases skipped because OMEGA_DATABASE_URL (or POSTGRES_URL) is not set; " +
      "run `export OMEGA_DATABASE_URL=$(scripts/setup-postgres.sh)` to include them."
  )
}

const T0 = 1_750_000_000_000

/** A deterministic embedding with a different direction per seed. */
const embedding = (seed: number) => {
  const v = new Float32Array(EMBEDDING_DIMENSIONS)
  for (let i = 0; i < v.length; i++) v[i] = Math.sin(seed * 7.3 + i * 0.11)
  return v
}

/** `base` turned towards a second direction by `angle` radians: cosine distance 1 - cos(angle). */
const rotated = (angle: number) => {
  const v = new Float32Array(EMBEDDING_DIMENSIONS)
  v[0] = Math.cos(angle)
  v[1] = Math.sin(angle)
  return v
}

const shared = (id: string, seed: number, overrides: Partial<SharedPattern> = {}): SharedPattern => ({
  id: id as PatternId,
  embedding: embedding(seed),
  successRate: 0.8,
  sampleCount: 4,
  context: { timeOfDay: "evening", mood: "relaxed" },
  ...overrides
})

const global = (id: string, v: Float32Array, deviceCount = 5): GlobalPattern => ({
  id: id as PatternId,
  embedding: v,
  successRate: 0.75,
  sampleCount: 40,
  deviceCount,
  context: { dayType: "weekend" }
})

const trend = (contentId: string, region: string, score: number, velocity = 0.5): TrendSignal => ({
  contentId: contentId as ContentId,
  region,
  score,
  velocity
})

const content = (contentId: string, seed: number, title = `Title ${seed}`): ContentEmbedding => ({
  contentId: contentId as ContentId,
  title,
  genres: ["Drama", "Mystery"],
  embedding: embedding(seed)
})

/** A stored pattern without the time it was written, to compare replays. */
const withoutTime = (p: StoredDevicePattern) => ({ ...p, updatedAt: 0 })

const ids = (items: ReadonlyArray<{ readonly id: string }>) => items.map((item) => item.id)

const expectStorageError = <A>(effect: Effect.Effect<A, StorageError, ShardStorage>) =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(effect)
    assert.isTrue(Exit.isFailure(exit), "expected a StorageError")
    const error = yield* Effect.flip(effect)
    assert.instanceOf(error, StorageError)
    return error
  })

/** The cases every backend must pass; ids are unique per case because the database is shared within a file. */
const suite = (it: Vitest.MethodsNonLive<ShardStorage>, fresh: Layer.Layer<ShardStorage, StorageError>) => {
  it.effect("applies migrations once and records them", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      assert.deepStrictEqual(yield* storage.migrate, [])
      assert.deepStrictEqual(yield* storage.migrate, [])
    }))

  it.effect("migrates an empty database, then finds nothing to do", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      assert.deepStrictEqual(yield* storage.migrate, ["001_init", "002_delta_log"])
      assert.deepStrictEqual(yield* storage.migrate, [])
      assert.deepStrictEqual(yield* storage.counts, {
        devices: 0,
        devicePatterns: 0,
        aggregatedPatterns: 0,
        loggedDeltas: 0,
        loggedPatterns: 0
      })
    }).pipe(Effect.provide(fresh)), 20_000)

  it.effect(
    "logs deltas durably once per device and version, and hands them to the materializer",
    () =>
      Effect.gen(function*() {
        const storage = yield* ShardStorage
        for (const id of ["log-a", "log-b"]) yield* storage.registerDevice({ id, tokenHash: "h", region: "eu" })
        const frame = (n: number) => Uint8Array.from({ length: 40 }, (_, i) => (i * n) & 0xff)
        const before = yield* storage.counts
        const first = yield* storage.appendDeltas([
          { deviceId: "log-a", version: 3, region: "eu", patterns: 2, frame: frame(1) },
          { deviceId: "log-b", version: 1, region: "eu", patterns: 5, frame: frame(2) }
        ])
        assert.deepStrictEqual([...first], [true, true])
        // A replay of one and a newer delta of the other, in one batch.
        const second = yield* storage.appendDeltas([
          { deviceId: "log-a", version: 3, region: "eu", patterns: 2, frame: frame(1) },
          { deviceId: "log-b", version: 2, region: "eu", patterns: 1, frame: frame(3) }
        ])
        assert.deepStrictEqual([...second], [false, true])
        assert.deepStrictEqual(yield* storage.deviceVersion("log-a"), Option.some(3))
        assert.deepStrictEqual(yield* storage.deviceVersion("log-b"), Option.some(2))
        const after = yield* storage.counts
        assert.strictEqual(after.loggedDeltas - before.loggedDeltas, 3)
        assert.strictEqual(after.loggedPatterns - before.loggedPatterns, 8)

        const pending = (yield* storage.unmaterialized(100)).filter((d) => d.deviceId.startsWith("log-"))
        assert.strictEqual(pending.length, 3)
        const b2 = pending.find((d) => d.deviceId === "log-b" && d.version === 2)!
        assert.deepStrictEqual([...b2.frame], [...frame(3)])
        yield* storage.markMaterialized(pending.map((d) => ({ deviceId: d.deviceId, version: d.version })))
        assert.strictEqual((yield* storage.unmaterialized(100)).filter((d) => d.deviceId.startsWith("log-")).length, 0)
        yield* expectStorageError(
          storage.appendDeltas([{ deviceId: "log-a", version: -1, region: "eu", patterns: 0, frame: frame(1) }])
        )
      }),
    20_000
  )

  it.effect("hands back the deltas logged since each region's last written snapshot, newest first", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      for (const id of ["since-a", "since-b"]) yield* storage.registerDevice({ id, tokenHash: "h", region: "eu" })
      const frame = Uint8Array.of(1, 2, 3)
      const ours = (deltas: ReadonlyArray<{ readonly deviceId: string; readonly version: number }>) =>
        deltas.filter((d) => d.deviceId.startsWith("since-")).map((d) => `${d.deviceId}@${d.version}`)
      yield* TestClock.setTime(1_000_000)
      yield* storage.appendDeltas([{ deviceId: "since-a", version: 1, region: "since-r", patterns: 1, frame }])
      yield* TestClock.setTime(2_000_000)
      yield* storage.appendDeltas([{ deviceId: "since-b", version: 1, region: "since-r", patterns: 1, frame }])
      assert.deepStrictEqual(ours(yield* storage.deltasSinceSnapshots(100)), ["since-b@1", "since-a@1"], "no snapshot")
      // A snapshot taken between the two: only the later delta is newer.
      yield* storage.upsertAggregated("since-r", [], [], 5, 1_500_000)
      assert.deepStrictEqual(ours(yield* storage.deltasSinceSnapshots(100)), ["since-b@1"])
      assert.deepStrictEqual(ours(yield* storage.deltasSinceSnapshots(0)), [])
    }).pipe(Effect.provide(TestClock.layer())))

  it.effect("registers a device once and finds it by id", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      yield* TestClock.setTime(T0)
      assert.isTrue(yield* storage.registerDevice({ id: "reg-1", tokenHash: "hash-a", region: "eu" }))
      assert.isFalse(yield* storage.registerDevice({ id: "reg-1", tokenHash: "hash-b", region: "us" }))
      const found = yield* storage.findDevice("reg-1")
      assert.deepStrictEqual(
        found,
        Option.some({
          id: "reg-1",
          tokenHash: "hash-a",
          region: "eu",
          registeredAt: T0,
          lastSyncAt: undefined,
          lastVersion: 0
        })
      )
      assert.isTrue(Option.isNone(yield* storage.findDevice("reg-missing")))
      assert.deepStrictEqual(yield* storage.deviceVersion("reg-1"), Option.some(0))
      assert.isTrue(Option.isNone(yield* storage.deviceVersion("reg-missing")))
    }).pipe(Effect.provide(TestClock.layer())))

  it.effect("registers and finds many devices in one call, more than one statement holds", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      yield* TestClock.setTime(T0)
      const deviceIds = Array.from({ length: 1_200 }, (_, i) => `many-${i}`)
      yield* storage.registerDevice({ id: "many-7", tokenHash: "first", region: "us" })
      const inserted = yield* storage.registerDevices(deviceIds.map((id) => ({ id, tokenHash: "h", region: "eu" })))
      assert.strictEqual(inserted.length, 1_199, "all but the one already registered")
      assert.isFalse(inserted.includes("many-7"))
      const found = yield* storage.findDevices([...deviceIds, "many-missing"])
      assert.strictEqual(found.length, 1_200, "the missing id is simply absent")
      const seven = found.find((device) => device.id === "many-7")
      assert.deepStrictEqual([seven?.tokenHash, seven?.region], ["first", "us"], "an existing device is kept as it was")
      assert.deepStrictEqual(yield* storage.registerDevices([]), [])
      assert.deepStrictEqual(yield* storage.findDevices([]), [])
    }).pipe(Effect.provide(TestClock.layer())))

  it.effect("a replayed delta is stored once; a stale one changes nothing", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      yield* TestClock.setTime(T0)
      yield* storage.registerDevice({ id: "replay-1", tokenHash: "h", region: "eu" })
      const before = yield* storage.counts
      const patterns = [shared("p1", 1), shared("p2", 2), shared("p3", 3)]

      const first = yield* storage.upsertDevicePatterns("replay-1", patterns, [], 2)
      assert.deepStrictEqual(first, { applied: true, version: 2, upserted: 3, removed: 0 })
      const stored = yield* storage.loadDevicePatterns("replay-1")
      const afterFirst = yield* storage.counts

      yield* TestClock.adjust(60_000)
      yield* storage.upsertDevicePatterns("replay-1", patterns, [], 2)
      assert.deepStrictEqual(yield* storage.counts, afterFirst)
      assert.strictEqual(afterFirst.devicePatterns - before.devicePatterns, 3)
      const replayed = yield* storage.loadDevicePatterns("replay-1")
      assert.deepStrictEqual(replayed.map(withoutTime), stored.map(withoutTime))
      // Embeddings come back bit for bit.
      assert.deepStrictEqual(replayed[0]!.embedding, embedding(1))
      assert.deepStrictEqual(replayed[0]!.context, { timeOfDay: "evening", mood: "relaxed" })

      const stale = yield* storage.upsertDevicePatterns("replay-1", [shared("p1", 9, { successRate: 0.1 })], [
        "p2" as PatternId
      ], 1)
      assert.deepStrictEqual(stale, { applied: false, version: 2, upserted: 0, removed: 0 })
      assert.deepStrictEqual(ids(yield* storage.loadDevicePatterns("replay-1")), ["p1", "p2", "p3"])
      assert.strictEqual((yield* storage.loadDevicePatterns("replay-1"))[0]!.successRate, 0.8)

      const newer = yield* storage.upsertDevicePatterns("replay-1", [shared("p1", 1, { successRate: 0.95 })], [], 3)
      assert.deepStrictEqual(newer, { applied: true, version: 3, upserted: 1, removed: 0 })
      const device = Option.getOrThrow(yield* storage.findDevice("replay-1"))
      assert.strictEqual(device.lastVersion, 3)
      assert.strictEqual(device.lastSyncAt, T0 + 60_000)
      assert.strictEqual((yield* storage.loadDevicePatterns("replay-1"))[0]!.successRate, 0.95)
    }).pipe(Effect.provide(TestClock.layer())))

  it.effect("removed patterns are deleted and the rest kept", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      yield* storage.registerDevice({ id: "remove-1", tokenHash: "h", region: "eu" })
      yield* storage.upsertDevicePatterns("remove-1", [shared("a", 1), shared("b", 2), shared("c", 3)], [], 1)
      const result = yield* storage.upsertDevicePatterns(
        "remove-1",
        [shared("d", 4)],
        ["a", "c", "never-stored"] as Array<PatternId>,
        2
      )
      assert.deepStrictEqual(result, { applied: true, version: 2, upserted: 1, removed: 2 })
      assert.deepStrictEqual(ids(yield* storage.loadDevicePatterns("remove-1")), ["b", "d"])
    }))

  it.effect("writes more patterns than one statement holds in one call", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      yield* storage.registerDevice({ id: "bulk-1", tokenHash: "h", region: "eu" })
      const patterns = Array.from({ length: 600 }, (_, i) => shared(`bulk-${String(i).padStart(4, "0")}`, i))
      const result = yield* storage.upsertDevicePatterns("bulk-1", patterns, [], 1)
      assert.strictEqual(result.upserted, 600)
      const stored = yield* storage.loadDevicePatterns("bulk-1")
      assert.strictEqual(stored.length, 600)
      assert.deepStrictEqual(stored[599]!.embedding, embedding(599))
    }))

  it.effect("a batch stores many devices' deltas in one call, results in input order", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      for (const id of ["batch-a", "batch-b", "batch-c"]) {
        yield* storage.registerDevice({ id, tokenHash: "h", region: "eu" })
      }
      yield* storage.upsertDevicePatterns("batch-c", [shared("c1", 1)], [], 5)
      const results = yield* storage.upsertDevicePatternsBatch([
        { deviceId: "batch-a", patterns: [shared("a1", 1), shared("a2", 2)], removed: [], version: 1 },
        { deviceId: "batch-b", patterns: [shared("b1", 3)], removed: [], version: 1 },
        { deviceId: "batch-c", patterns: [shared("c2", 4)], removed: ["c1" as PatternId], version: 2 },
        { deviceId: "batch-a", patterns: [shared("a3", 5)], removed: ["a1" as PatternId], version: 2 }
      ])
      assert.deepStrictEqual(results, [
        { applied: true, version: 1, upserted: 2, removed: 0 },
        { applied: true, version: 1, upserted: 1, removed: 0 },
        { applied: false, version: 5, upserted: 0, removed: 0 },
        { applied: true, version: 2, upserted: 1, removed: 1 }
      ])
      assert.deepStrictEqual(ids(yield* storage.loadDevicePatterns("batch-a")), ["a2", "a3"])
      assert.deepStrictEqual(ids(yield* storage.loadDevicePatterns("batch-c")), ["c1"])
      assert.deepStrictEqual(yield* storage.deviceVersion("batch-a"), Option.some(2))

      // One unregistered device fails the whole batch; nothing of it is stored.
      const error = yield* expectStorageError(storage.upsertDevicePatternsBatch([
        { deviceId: "batch-b", patterns: [shared("b2", 6)], removed: ["b1" as PatternId], version: 3 },
        { deviceId: "batch-nobody", patterns: [shared("x", 7)], removed: [], version: 1 }
      ]))
      assert.strictEqual(error.operation, "upsertDevicePatternsBatch")
      assert.include(error.message, "batch-nobody")
      assert.deepStrictEqual(ids(yield* storage.loadDevicePatterns("batch-b")), ["b1"])
      assert.deepStrictEqual(yield* storage.deviceVersion("batch-b"), Option.some(1))
    }))

  it.effect("rejects patterns of devices that are not registered", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      const error = yield* expectStorageError(storage.upsertDevicePatterns("nobody", [shared("x", 1)], [], 1))
      assert.strictEqual(error.operation, "upsertDevicePatterns")
      assert.include(error.message, "not registered")
    }))

  it.effect("rejects a bad embedding with a typed error and loses nothing stored", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      yield* storage.registerDevice({ id: "bad-1", tokenHash: "h", region: "eu" })
      yield* storage.upsertDevicePatterns("bad-1", [shared("keep-1", 1), shared("keep-2", 2)], [], 1)
      const before = yield* storage.loadDevicePatterns("bad-1")

      const short = yield* expectStorageError(
        storage.upsertDevicePatterns(
          "bad-1",
          [shared("new", 3), shared("short", 4, { embedding: new Float32Array(3).fill(1) })],
          ["keep-1" as PatternId],
          2
        )
      )
      assert.strictEqual(short.operation, "upsertDevicePatterns")
      assert.include(short.message, "pattern short")
      assert.include(short.message, "384")

      const nan = embedding(5)
      nan[7] = NaN
      const notFinite = yield* expectStorageError(
        storage.upsertDevicePatterns("bad-1", [shared("nan", 5, { embedding: nan })], [], 2)
      )
      assert.include(notFinite.message, "component 7")

      const zero = yield* expectStorageError(
        storage.upsertDevicePatterns(
          "bad-1",
          [shared("zero", 5, { embedding: new Float32Array(EMBEDDING_DIMENSIONS) })],
          [],
          2
        )
      )
      assert.include(zero.message, "zero vector")

      // The database itself refuses a success rate above 1 after the delete already ran: all of it rolls back.
      const constraint = yield* expectStorageError(
        storage.upsertDevicePatterns("bad-1", [shared("new", 3), shared("too-good", 6, { successRate: 1.5 })], [
          "keep-1" as PatternId
        ], 2)
      )
      assert.strictEqual(constraint.operation, "upsertDevicePatterns")
      assert.include(constraint.message, "success_rate")

      assert.deepStrictEqual(yield* storage.loadDevicePatterns("bad-1"), before)
      assert.deepStrictEqual(yield* storage.deviceVersion("bad-1"), Option.some(1))
      yield* expectStorageError(storage.nearestAggregated("eu", new Float32Array(2).fill(1), 3))
    }))

  it.effect("aggregated patterns: upsert, versions, removal and nearest by cosine", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      const region = "agg-eu"
      assert.strictEqual(yield* storage.globalVersion(region), 0)
      // Shuffled so neither insertion order nor id order matches the distance order.
      const patterns = [
        global("far", rotated(1.2), 2),
        global("near", rotated(0.1), 9),
        global("mid", rotated(0.6), 4),
        global("closest", rotated(0.02), 3),
        global("opposite", rotated(Math.PI), 7)
      ]
      assert.strictEqual(yield* storage.upsertAggregated(region, patterns), 1)
      yield* storage.upsertAggregated("agg-us", [global("near", rotated(0), 1), global("us-only", rotated(0.01), 1)])

      const nearest = yield* storage.nearestAggregated(region, rotated(0), 4)
      assert.deepStrictEqual(nearest.map((n) => n.pattern.id), ["closest", "near", "mid", "far"] as Array<string>)
      for (let i = 0; i < nearest.length; i++) {
        const angle = [0.02, 0.1, 0.6, 1.2][i]!
        assert.approximately(nearest[i]!.distance, 1 - Math.cos(angle), 1e-5)
      }
      assert.deepStrictEqual(nearest[0]!.pattern, global("closest", rotated(0.02), 3))

      const loaded = yield* storage.loadAggregated(region, 3)
      assert.deepStrictEqual(ids(loaded), ["near", "opposite", "mid"])

      assert.strictEqual(
        yield* storage.upsertAggregated(
          region,
          [global("mid", rotated(0.05), 4)],
          ["opposite", "far"] as Array<PatternId>
        ),
        2
      )
      assert.strictEqual(yield* storage.globalVersion(region), 2)
      assert.strictEqual(yield* storage.globalVersion("agg-us"), 1)
      const regions = yield* storage.regions
      assert.includeMembers([...regions], ["agg-eu", "agg-us"])
      const after = yield* storage.nearestAggregated(region, rotated(0), 10)
      assert.deepStrictEqual(after.map((n) => n.pattern.id), ["closest", "mid", "near"] as Array<string>)
    }))

  it.effect("trends: upsert replaces a region's scores, hottest first", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      yield* storage.upsertTrends([
        trend("a", "tr-eu", 1),
        trend("b", "tr-eu", 5),
        trend("c", "tr-eu", 3),
        trend("a", "tr-us", 9)
      ])
      assert.deepStrictEqual(yield* storage.loadTrends("tr-eu", 2), [trend("b", "tr-eu", 5), trend("c", "tr-eu", 3)])
      yield* storage.upsertTrends([trend("a", "tr-eu", 7, -0.25)])
      assert.deepStrictEqual(
        (yield* storage.loadTrends("tr-eu", 10)).map((t) => [t.contentId, t.score, t.velocity]),
        [["a", 7, -0.25], ["b", 5, 0.5], ["c", 3, 0.5]]
      )
      assert.deepStrictEqual(yield* storage.loadTrends("tr-us", 10), [trend("a", "tr-us", 9)])
    }))

  it.effect("content: listed by the time it was added, and re-announced when replaced", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      const start = T0 + 10_000_000
      yield* TestClock.setTime(start)
      yield* storage.addContent([content("ct-1", 1), content("ct-2", 2)])
      yield* TestClock.setTime(start + 1_000)
      yield* storage.addContent([content("ct-3", 3)])

      const all = yield* storage.listContentSince(start, 10)
      assert.deepStrictEqual(all.map((c) => [c.contentId, c.addedAt]), [["ct-1", start], ["ct-2", start], [
        "ct-3",
        start + 1_000
      ]])
      assert.deepStrictEqual(all[0], { ...content("ct-1", 1), addedAt: start })
      assert.deepStrictEqual(
        (yield* storage.listContentSince(start + 1, 10)).map((c) => c.contentId),
        ["ct-3"] as Array<string>
      )

      yield* TestClock.setTime(start + 2_000)
      yield* storage.addContent([content("ct-1", 1, "Renamed")])
      const latest = yield* storage.listContentSince(start + 1_000, 10)
      assert.deepStrictEqual(latest.map((c) => [c.contentId, c.title]), [["ct-3", "Title 3"], ["ct-1", "Renamed"]])
      assert.deepStrictEqual(
        (yield* storage.listContentSince(start, 1)).map((c) => c.contentId),
        ["ct-2"] as Array<string>
      )
    }).pipe(Effect.provide(TestClock.layer())))

  it.effect("rejects negative or fractional limits", () =>
    Effect.gen(function*() {
      const storage = yield* ShardStorage
      const error = yield* expectStorageError(storage.loadTrends("eu", -1))
      assert.include(error.message, "limit")
      yield* expectStorageError(storage.loadAggregated("eu", 1.5))
    }))
}

layer(ShardStorage.layerTest, { timeout: 30_000, excludeTestServices: true })("ShardStorage on PGlite", (it) => {
  suite(it, ShardStorage.layerPglite({ migrate: false }))
})

// What a shard runs: PGlite on a worker thread of its own, statements as messages.
layer(ShardStorage.layerPglite({ ownThread: true }), { timeout: 30_000, excludeTestServices: true })(
  "ShardStorage on PGlite on its own thread",
  (it) => {
    suite(it, ShardStorage.layerPglite({ migrate: false, ownThread: true }))
  }
)

describe.skipIf(DATABASE_URL === undefined)("ShardStorage on PostgreSQL", () => {
  const url = DATABASE_URL ?? ""
  const run = `omega_test_${process.pid}_${Date.now().toString(36)}`
  // The run's schemas go when the suite ends, so a shared database keeps nothing behind.
  const main = Layer.merge(
    ShardStorage.layerPg({ url, schema: run }),
    ShardStorage.layerDropPgSchemas(url, [run, `${run}_fresh`])
  )
  const fresh = ShardStorage.layerPg({ url, schema: `${run}_fresh`, migrate: false })
  layer(main, { timeout: 30_000, excludeTestServices: true })((it) => suite(it, fresh))
})
