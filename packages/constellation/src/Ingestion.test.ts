import { assert, describe, it } from "@effect/vitest"
import {
  type ContentEmbedding,
  type ContentId,
  dequantize,
  EMBEDDING_DIMENSIONS,
  encodeFrame,
  type PatternDelta,
  type PatternId,
  quantize,
  type SharedPattern
} from "@omega/protocol"
import { Context, Duration, Effect, Layer, PubSub } from "effect"
import { defaultIngestionConfig, ingestCodec, Ingestion } from "./Ingestion.ts"
import { gaussian, seededRandom, unit as unitOf } from "./internal/vectors.ts"
import type { DeviceState } from "./ShardManager.ts"
import { ShardStorage } from "./ShardStorage.ts"

const unit = (seed: number) => {
  const v = new Float32Array(EMBEDDING_DIMENSIONS)
  for (let i = 0; i < v.length; i++) v[i] = Math.sin(seed * 3.1 + i * 0.7)
  return v
}

const pattern = (id: string, overrides: Partial<SharedPattern> = {}): SharedPattern => ({
  id: id as PatternId,
  embedding: unit(1),
  successRate: 0.9,
  sampleCount: 5,
  context: { timeOfDay: "evening" },
  ...overrides
})

const delta = (version: number, added: ReadonlyArray<SharedPattern>): PatternDelta => ({
  baseVersion: version - 1,
  version,
  added,
  updated: [],
  removed: []
})

/** A delta as it reaches Ingestion from the sync server: encoded by the TV, decoded by the shard's ingest codec. */
const upload = (ingestion: Ingestion["Service"], device: DeviceState, d: PatternDelta) =>
  Effect.gen(function*() {
    const frame = encodeFrame({ _tag: "DeltaUpload", delta: d })
    const decoded = yield* Effect.orDie(ingestCodec.decode(frame))
    if (decoded._tag !== "DeltaUpload") return yield* Effect.die("not an upload")
    return yield* ingestion.submit(device, decoded.delta, frame)
  })

const ingestionLayer = (minSyncInterval: Duration.Input) =>
  Ingestion.layer({ ...defaultIngestionConfig, minSyncInterval, materializeEvery: Duration.hours(1) }).pipe(
    Layer.provideMerge(ShardStorage.layerTest)
  )

const setup = Effect.gen(function*() {
  const storage = yield* ShardStorage
  const ingestion = yield* Ingestion
  const device = Effect.fnUntraced(function*(id: string) {
    yield* storage.registerDevice({ id, tokenHash: "h", region: "eu" })
    const state: DeviceState = { id, region: "eu", lastVersion: 0, lastSyncAt: 0 }
    return state
  })
  return { storage, ingestion, device }
})

describe("Ingestion", () => {
  it.live(
    "aggregates only quality patterns, acknowledges once durable, and counts a replay once",
    () =>
      Effect.gen(function*() {
        const { device, ingestion, storage } = yield* setup
        const tv = yield* device("tv-1")
        const d = delta(3, [
          pattern("good"),
          pattern("weak", { successRate: 0.4 }),
          pattern("thin", { sampleCount: 1 })
        ])
        const ack = yield* upload(ingestion, tv, d)
        assert.deepStrictEqual(ack, { _tag: "DeltaAck", version: 3, accepted: 1, duplicate: false })
        assert.strictEqual((yield* storage.counts).loggedPatterns, 1)

        const replay = yield* upload(ingestion, tv, d)
        assert.isTrue(replay.duplicate)
        assert.strictEqual(replay.accepted, 0)
        assert.strictEqual((yield* storage.counts).loggedDeltas, 1)
        const stats = yield* ingestion.stats
        assert.strictEqual(stats.deltasAccepted, 1)
        assert.strictEqual(stats.deltasDuplicate, 1)
        assert.strictEqual(stats.patternsFiltered, 2)
      }).pipe(Effect.provide(ingestionLayer(Duration.zero))),
    30_000
  )

  it.live(
    "takes a success rate of exactly the threshold as quality, though the wire carries it as a 32-bit float",
    () =>
      Effect.gen(function*() {
        const { device, ingestion } = yield* setup
        const ack = yield* upload(
          ingestion,
          yield* device("tv-7of10"),
          delta(1, [pattern("p", { successRate: 7 / 10 })])
        )
        assert.strictEqual(ack.accepted, 1)
      }).pipe(Effect.provide(ingestionLayer(Duration.zero))),
    30_000
  )

  it.live(
    "rate-limits a device that syncs again within the interval and stores nothing of it",
    () =>
      Effect.gen(function*() {
        const { device, ingestion, storage } = yield* setup
        const tv = yield* device("tv-2")
        const first = delta(1, [pattern("a")])
        yield* upload(ingestion, tv, first)
        const second = delta(2, [pattern("b")])
        const error = yield* Effect.flip(upload(ingestion, tv, second))
        assert.strictEqual(error.reason, "rate-limited")
        assert.isAbove(error.retryAfterMs ?? 0, 50_000)
        assert.strictEqual((yield* storage.counts).loggedDeltas, 1)
      }).pipe(Effect.provide(ingestionLayer(Duration.minutes(1)))),
    30_000
  )

  it.live("publishes a region's snapshot only from groups of at least k devices", () =>
    Effect.gen(function*() {
      const { device, ingestion } = yield* setup
      for (let n = 0; n < 2; n++) {
        const tv = yield* device(`few-${n}`)
        const d = delta(1, [pattern(`p-${n}`)])
        yield* upload(ingestion, tv, d)
      }
      yield* ingestion.refresh(true)
      assert.strictEqual((yield* ingestion.snapshot("eu")).similar.length, 0)
      const third = yield* device("few-2")
      const d = delta(1, [pattern("p-2")])
      yield* upload(ingestion, third, d)
      yield* ingestion.refresh(true)
      const snapshot = yield* ingestion.snapshot("eu")
      assert.strictEqual(snapshot.similar.length, 1)
      assert.strictEqual(snapshot.similar[0]!.deviceCount, 3)
      assert.isAbove(snapshot.version, 0)
      // Aggregated in the rotated basis, published in the embedding space: the taste the TVs sent.
      const sent = dequantize(quantize(unit(1)))
      const published = snapshot.similar[0]!.embedding
      assert.closeTo(published.reduce((sum, x, i) => sum + x * sent[i]!, 0), 1, 1e-4)
    }).pipe(Effect.provide(ingestionLayer(Duration.zero))), 30_000)

  it.live(
    "serves trends decoded from its own uploads of any quality, only for items at least k devices watched",
    () =>
      Effect.gen(function*() {
        const { device, ingestion } = yield* setup
        const random = seededRandom(5)
        const catalog: Array<ContentEmbedding> = ["a", "b", "c", "d"].map((id) => ({
          contentId: id as ContentId,
          title: id,
          genres: [],
          embedding: unitOf(Array.from({ length: EMBEDDING_DIMENSIONS }, () => gaussian(random)))!
        }))
        yield* ingestion.addContent(catalog)
        const watch = Effect.fnUntraced(function*(id: string, item: number, successRate = 0.9) {
          const tv = yield* device(id)
          const d = delta(1, [pattern(`${id}-p`, { embedding: catalog[item]!.embedding, successRate })])
          yield* upload(ingestion, tv, d)
        })
        yield* watch("t-0", 0)
        yield* watch("t-1", 0)
        yield* ingestion.refresh(true)
        assert.deepStrictEqual((yield* ingestion.snapshot("eu")).trending, [], "two devices are below k")
        // The third viewer mostly abandoned it: viewing all the same, though not a quality pattern.
        yield* watch("t-2", 0, 0.3)
        yield* watch("t-3", 2)
        yield* ingestion.refresh(true)
        const snapshot = yield* ingestion.snapshot("eu")
        const trending = snapshot.trending
        assert.deepStrictEqual(trending.map((t) => [t.contentId, t.region]), [["a", "eu"]])
        assert.isAbove(trending[0]!.score, 0)
        assert.deepStrictEqual(snapshot.similar, [], "only two devices' patterns are aggregated: under k")
        const local = yield* ingestion.localTrends("eu", 10)
        assert.deepStrictEqual(local.map((t) => t.contentId), ["a"])
      }).pipe(Effect.provide(ingestionLayer(Duration.zero))),
    30_000
  )

  it.live(
    "pushes a region's own changes at most once per pushEvery, federated results at once",
    () =>
      Effect.gen(function*() {
        const { device, ingestion } = yield* setup
        const pushes = yield* PubSub.subscribe(ingestion.updates)
        const pushed = Effect.map(PubSub.takeUpTo(pushes, 100), (regions) => regions.length)
        const uploadFrom = Effect.fnUntraced(function*(id: string, version: number) {
          yield* upload(ingestion, yield* device(id), delta(version, [pattern(`${id}-${version}`)]))
        })
        for (const id of ["a", "b", "c"]) yield* uploadFrom(id, 1)
        yield* ingestion.refresh(false)
        assert.strictEqual(yield* pushed, 1, "the first change goes out")
        yield* uploadFrom("d", 1)
        yield* ingestion.refresh(false)
        assert.strictEqual(yield* pushed, 0, "a second change within pushEvery waits")
        yield* ingestion.applyFederated("eu", yield* ingestion.snapshot("eu"))
        assert.strictEqual(yield* pushed, 1, "federated patterns go out at once")
      }).pipe(
        Effect.scoped,
        Effect.provide(
          Ingestion.layer({ ...defaultIngestionConfig, minSyncInterval: Duration.zero, pushEvery: Duration.hours(1) })
            .pipe(Layer.provideMerge(ShardStorage.layerTest))
        )
      ),
    30_000
  )

  it.live(
    "materializes a device's quality patterns, and drops one whose success rate fell below the threshold",
    () =>
      Effect.gen(function*() {
        const { device, ingestion, storage } = yield* setup
        const tv = yield* device("tv-m")
        /** Waits for the materializer (every 20 ms here) to leave the device's table as `expected`. */
        const table = Effect.fnUntraced(function*(expected: ReadonlyArray<string>) {
          let ids: ReadonlyArray<string> = []
          for (let i = 0; i < 100; i++) {
            ids = (yield* storage.loadDevicePatterns("tv-m")).map((p) => p.id)
            if (ids.join() === expected.join()) break
            yield* Effect.sleep(Duration.millis(20))
          }
          return ids
        })
        yield* upload(ingestion, tv, delta(1, [pattern("liked"), pattern("dropped")]))
        assert.deepStrictEqual(yield* table(["dropped", "liked"]), ["dropped", "liked"])
        // The TV shares the pattern again with its new, low success rate: viewing, no longer quality.
        yield* upload(ingestion, tv, {
          ...delta(2, []),
          updated: [pattern("dropped", { successRate: 0.2 })]
        })
        assert.deepStrictEqual(yield* table(["liked"]), ["liked"])
      }).pipe(
        Effect.provide(
          Ingestion.layer({
            ...defaultIngestionConfig,
            minSyncInterval: Duration.zero,
            materializeEvery: Duration.millis(20)
          }).pipe(Layer.provideMerge(ShardStorage.layerTest))
        )
      ),
    30_000
  )

  it.live(
    "writes snapshots off the refresh and when stopping; a restart starts from them and the log after them",
    () =>
      Effect.gen(function*() {
        const storage = Context.get(yield* Layer.build(ShardStorage.layerTest), ShardStorage)
        const shard = Ingestion.layer({ ...defaultIngestionConfig, minSyncInterval: Duration.zero }).pipe(
          Layer.provide(Layer.succeed(ShardStorage, storage))
        )
        const watch = Effect.fnUntraced(function*(ingestion: Ingestion["Service"], id: string) {
          yield* storage.registerDevice({ id, tokenHash: "h", region: "eu" })
          const tv: DeviceState = { id, region: "eu", lastVersion: 0, lastSyncAt: 0 }
          yield* upload(ingestion, tv, delta(1, [pattern(`${id}-p`)]))
        })
        const first = yield* Effect.scoped(Effect.gen(function*() {
          const ingestion = Context.get(yield* Layer.build(shard), Ingestion)
          for (const id of ["a", "b", "c"]) yield* watch(ingestion, id)
          yield* ingestion.refresh(false)
          assert.strictEqual(yield* storage.globalVersion("eu"), 0, "the refresh itself writes nothing")
          const snapshot = yield* ingestion.snapshot("eu")
          // Acknowledged after that snapshot (in the same millisecond, as likely as not): when the
          // shard stops, only the log has these.
          for (const id of ["d", "e"]) yield* watch(ingestion, id)
          return snapshot
        }))
        assert.strictEqual(first.similar[0]!.deviceCount, 3)
        assert.strictEqual(yield* storage.globalVersion("eu"), first.version, "stopping wrote the snapshot")
        const restarted = yield* Effect.scoped(Effect.gen(function*() {
          const ingestion = Context.get(yield* Layer.build(shard), Ingestion)
          const seeded = yield* ingestion.snapshot("eu")
          assert.strictEqual(seeded.version, first.version)
          assert.deepStrictEqual(seeded.similar.map((p) => p.id), first.similar.map((p) => p.id))
          // The two later deltas come back from the log (folded in the background).
          for (let i = 0; i < 100; i++) {
            yield* ingestion.refresh(true)
            if ((yield* ingestion.snapshot("eu")).similar[0]?.deviceCount === 5) break
            yield* Effect.sleep(Duration.millis(20))
          }
          return yield* ingestion.snapshot("eu")
        }))
        assert.strictEqual(restarted.similar[0]!.deviceCount, 5, "the snapshot's 3 devices and 2 from the log")
        assert.isAbove(restarted.version, first.version, "versions keep rising across a restart")
      }).pipe(Effect.scoped),
    30_000
  )

  it.live(
    "writes its own groups, not the federated ones it serves, replaces the stored ones, and numbers new groups after them",
    () =>
      Effect.gen(function*() {
        const storage = Context.get(yield* Layer.build(ShardStorage.layerTest), ShardStorage)
        const shard = (snapshotPatterns: number) =>
          Ingestion.layer({ ...defaultIngestionConfig, minSyncInterval: Duration.zero, snapshotPatterns }).pipe(
            Layer.provide(Layer.succeed(ShardStorage, storage))
          )
        const start = (snapshotPatterns: number) =>
          Effect.gen(function*() {
            const ingestion = Context.get(yield* Layer.build(shard(snapshotPatterns)), Ingestion)
            while ((yield* ingestion.stats).replaying) yield* Effect.sleep(Duration.millis(5))
            return ingestion
          })
        const watch = Effect.fnUntraced(function*(ingestion: Ingestion["Service"], id: string, taste: number) {
          yield* storage.registerDevice({ id, tokenHash: "h", region: "eu" })
          const tv: DeviceState = { id, region: "eu", lastVersion: 0, lastSyncAt: 0 }
          yield* upload(ingestion, tv, delta(1, [pattern(`${id}-p`, { embedding: unitOf(unit(taste))! })]))
        })
        const stored = Effect.map(storage.loadAggregated("eu", 100), (rows) => rows.map((p) => [p.id, p.deviceCount]))

        yield* Effect.scoped(Effect.gen(function*() {
          const ingestion = yield* start(100)
          for (const id of ["a", "b", "c"]) yield* watch(ingestion, id, 1)
          yield* ingestion.refresh(false)
          const own = yield* ingestion.snapshot("eu")
          // What the worker federated across shards: forty devices, most of them on other shards.
          yield* ingestion.applyFederated("eu", {
            version: own.version + 1,
            similar: [{ ...own.similar[0]!, id: "fed-1" as PatternId, deviceCount: 40 }],
            trending: []
          })
          assert.deepStrictEqual((yield* ingestion.snapshot("eu")).similar.map((p) => p.id), ["fed-1"])
        }))
        assert.deepStrictEqual(yield* stored, [["agg-eu-1", 3]], "the shard's own group, not the federated one")

        yield* Effect.scoped(Effect.gen(function*() {
          const ingestion = yield* start(1)
          const own = yield* ingestion.localPatterns("eu", 10)
          assert.deepStrictEqual(own.map((p) => [p.id, p.deviceCount]), [["agg-eu-1", 3]])
          for (const id of ["d", "e", "f", "g"]) yield* watch(ingestion, id, 2)
          yield* ingestion.refresh(true)
          const ids = (yield* ingestion.localPatterns("eu", 10)).map((p) => p.id)
          assert.sameMembers(ids, ["agg-eu-1", "agg-eu-2"], "a new group is not numbered like a seeded one")
        }))
        // The written snapshot (its best group only, here) replaced the rows written before it.
        assert.deepStrictEqual(yield* stored, [["agg-eu-2", 4]])
      }).pipe(Effect.scoped),
    30_000
  )
})
