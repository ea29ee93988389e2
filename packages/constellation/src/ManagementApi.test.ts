import { assert, describe, it } from "@effect/vitest"
import { EMBEDDING_DIMENSIONS } from "@omega/protocol"
import { makeDevCertificate, makeQuicIdentity, SyncTransport } from "@omega/sync"
import { Duration, Effect, Layer } from "effect"
import { HttpServer } from "effect/http"
import { HttpApiTest } from "effect/http-api"
import { ManagementApi, managementHandlers } from "./ManagementApi.ts"
import { shardCore, syncPin } from "./Shard.ts"
import { ShardStorage, StorageError } from "./ShardStorage.ts"

const shardLayer = shardCore({
  shardId: "api-test",
  region: "eu-west",
  maxDevices: 10,
  fleetSecret: "secret",
  sync: { port: 0 },
  ingestion: { minSyncInterval: Duration.zero },
  federationEvery: Duration.hours(1)
}).pipe(Layer.provideMerge(Layer.mergeAll(ShardStorage.layerTest, SyncTransport.layerMemory)))

const api = managementHandlers({ syncPort: 4433, region: "eu-west", transport: "quic", pin: "12D3KooWtest" }).pipe(
  Layer.provideMerge(shardLayer),
  Layer.provideMerge(HttpServer.layerServices)
)

const client = HttpApiTest.groups(ManagementApi, ["shard"])

/** The test storage, but the database stopped answering after the shard started. */
const unreachable = Layer.effect(
  ShardStorage,
  Effect.map(ShardStorage, (storage) =>
    ShardStorage.of({
      ...storage,
      ping: Effect.fail(new StorageError({ operation: "ping", message: "connection refused" }))
    }))
).pipe(Layer.provide(ShardStorage.layerTest))

const content = (contentId: string, embedding: ReadonlyArray<number>) => ({
  contentId,
  title: "A New Show (2026)",
  genres: ["Drama"],
  embedding
})
const unit = Array.from({ length: EMBEDDING_DIMENSIONS }, (_, i) => (i === 0 ? 1 : 0))

describe("management REST API", () => {
  it.live("health, stats and shards describe the shard and its database", () =>
    Effect.gen(function*() {
      const shard = yield* client
      const health = yield* shard.health()
      assert.strictEqual(health.status, "ok")
      assert.strictEqual(health.database, "up")
      assert.strictEqual(health.shardId, "api-test")
      const stats = yield* shard.stats()
      assert.strictEqual(stats.maxDevices, 10)
      assert.strictEqual(stats.loggedPatterns, 0)
      assert.isTrue(stats.memory.rssMb > 0 && stats.memory.heapUsedMb > 0, "the process's memory")
      assert.isTrue(stats.memory.heapUsedMb < stats.memory.rssMb)
      const shards = yield* shard.shards()
      assert.deepStrictEqual(shards.map((s) => [s.shardId, s.region, s.syncPort, s.transport, s.pin]), [[
        "api-test",
        "eu-west",
        4433,
        "quic",
        "12D3KooWtest"
      ]])
    }).pipe(Effect.provide(api)), 30_000)

  it.live("health says degraded, database down, when the database does not answer", () =>
    Effect.gen(function*() {
      const health = yield* (yield* client).health()
      assert.strictEqual(health.status, "degraded")
      assert.strictEqual(health.database, "down")
      assert.strictEqual(health.patternsStored, 0)
    }).pipe(Effect.provide(
      managementHandlers({ syncPort: 4433, region: "eu-west", transport: "quic", pin: "p" }).pipe(
        Layer.provideMerge(shardCore({
          shardId: "api-down",
          region: "eu-west",
          maxDevices: 10,
          fleetSecret: "secret",
          sync: { port: 0 },
          federationEvery: Duration.hours(1)
        })),
        Layer.provideMerge(Layer.mergeAll(unreachable, SyncTransport.layerMemory)),
        Layer.provideMerge(HttpServer.layerServices)
      )
    )), 30_000)

  it.live(
    "POST /api/v1/content stores valid items and refuses bad ones with a message, storing nothing",
    () =>
      Effect.gen(function*() {
        const shard = yield* client
        assert.deepStrictEqual(yield* shard.addContent({ payload: content("show-1", unit) }), { added: 1 })
        assert.deepStrictEqual(
          yield* shard.addContent({ payload: [content("show-2", unit), content("show-3", unit)] }),
          { added: 2 }
        )
        const bad = [
          content("short", [1, 2, 3]),
          // JSON has no NaN or Infinity: a non-number component arrives as null or a string.
          { ...content("null", unit), embedding: unit.map((x, i) => (i === 5 ? null : x)) },
          { ...content("string", unit), embedding: unit.map((x, i) => (i === 5 ? "1" : x)) },
          content("zero", unit.map(() => 0)),
          content("", unit),
          // PostgreSQL refuses NUL in text: a typed 400 here, not a failed write.
          content("nul\u0000id", unit),
          { ...content("nul-title", unit), title: "A\u0000B" },
          { ...content("nul-genre", unit), genres: ["Dra\u0000ma"] },
          { title: "no id" },
          []
        ]
        for (const payload of bad) {
          const error = yield* Effect.flip(shard.addContent({ payload }))
          assert.strictEqual(error._tag, "InvalidRequest", JSON.stringify(payload).slice(0, 60))
        }
        const storage = yield* ShardStorage
        assert.strictEqual((yield* storage.listContentSince(0, 100)).length, 3)
      }).pipe(Effect.provide(api)),
    30_000
  )

  it.live("POST /api/v1/federation/trigger runs a round and reports it", () =>
    Effect.gen(function*() {
      const shard = yield* client
      const first = yield* shard.triggerFederation()
      const second = yield* shard.triggerFederation()
      assert.strictEqual(second.round, first.round + 1)
      assert.isAtLeast(second.durationMs, 0)
    }).pipe(Effect.provide(api)), 30_000)
})

describe("syncPin", () => {
  it.effect("is what a client pins: the QUIC peer id, or the SHA-256 of the WebTransport certificate", () =>
    Effect.gen(function*() {
      const certificate = yield* makeDevCertificate()
      const identity = makeQuicIdentity()
      assert.strictEqual(syncPin({ transport: "webtransport", sync: { certificate } }), certificate.sha256Hex)
      assert.strictEqual(syncPin({ transport: "quic", sync: { identity } }), identity.peerId)
      assert.isUndefined(syncPin({ transport: "memory", sync: {} }))
    }))
})
