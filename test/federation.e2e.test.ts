/**
 * Federation across shards, end to end: two shards on PGlite, two TVs on each, a federation
 * worker holding sessions to both. Neither shard alone has k = 3 devices behind a taste, so
 * neither may publish it; federated across shards the group has four devices and reaches every
 * TV by server push. Every frame the shards received is decoded and audited: no content id,
 * title or watch timestamp of anything watched ever left a TV.
 */
import { assert, describe, it } from "@effect/vitest"
import { makeHashing, OmegaBrain } from "@omega/brain"
import {
  federateAcrossShards,
  Federation,
  FederationWorker,
  Ingestion,
  shardCore,
  ShardStorage,
  SyncServer
} from "@omega/constellation"
import {
  type ContentEmbedding,
  type ContentId,
  decodeFrame,
  type ViewContext,
  type ViewingEvent
} from "@omega/protocol"
import { SyncClient, SyncTransport } from "@omega/sync"
import { Context, Duration, Effect, Layer, Stream } from "effect"
import { eventually, testTv } from "./support.ts"

const SECRET = "federation-e2e-secret"
const REGION = "eu-west"
const hashing = makeHashing()
const evening: ViewContext = { timeOfDay: "evening", dayType: "weekday", recentWatches: [] }

const catalog: Array<ContentEmbedding> = ["Western", "Musical"].flatMap((genre) =>
  ["Harbor", "Winter", "Signal", "Meadow", "Copper"].map((word, i) => {
    const title = `${genre} ${word} (198${i})`
    return {
      contentId: `${genre.toLowerCase()}-${i}` as ContentId,
      title,
      genres: [genre],
      embedding: Effect.runSync(hashing.embedContent({ title, genres: [genre] }))
    }
  })
)

/** The memory transport with every frame a server receives recorded, for the privacy audit. */
const tapped = (inner: SyncTransport["Service"], frames: Array<Uint8Array>) =>
  SyncTransport.of({
    ...inner,
    listen: (options, onConnection) =>
      inner.listen(options, (connection) =>
        onConnection({
          ...connection,
          incoming: Stream.tap(connection.incoming, (bytes) => Effect.sync(() => frames.push(bytes)))
        }))
  })

const shard = (shardId: string, transport: SyncTransport["Service"]) =>
  shardCore({
    shardId,
    region: REGION,
    maxDevices: 100,
    fleetSecret: SECRET,
    transport: "memory",
    sync: { port: 0 },
    host: "127.0.0.1",
    httpPort: 0,
    metricsPort: 0,
    ingestion: { minSyncInterval: Duration.zero, snapshotEvery: Duration.millis(100) },
    federationEvery: Duration.hours(1)
  }).pipe(Layer.provideMerge(ShardStorage.layerTest), Layer.provide(Layer.succeed(SyncTransport, transport)))

const tv = (deviceId: string, port: number) =>
  testTv({ deviceId, fleetSecret: SECRET, region: REGION, endpoint: { host: "127.0.0.1", port } })

describe("federation across shards", () => {
  it.live(
    "TVs on different shards learn a taste none of their shards could publish alone",
    () =>
      Effect.gen(function*() {
        const memory = Context.get(yield* Layer.build(SyncTransport.layerMemory), SyncTransport)
        const received: Array<Uint8Array> = []
        const shards = [
          yield* Layer.build(shard("shard-a", tapped(memory, received))),
          yield* Layer.build(shard("shard-b", tapped(memory, received)))
        ]
        const ports = shards.map((s) => Context.get(s, SyncServer).port)

        const watched: Array<ViewingEvent> = []
        const tvs = []
        for (const [n, port] of [ports[0]!, ports[0]!, ports[1]!, ports[1]!].entries()) {
          const context = yield* Layer.build(
            tv(`tv-${n}`, port).pipe(Layer.provide(Layer.succeed(SyncTransport, memory)))
          )
          const brain = Context.get(context, OmegaBrain)
          yield* brain.addContent(catalog)
          for (const item of catalog.filter((c) => c.contentId.startsWith("western-")).slice(0, 3)) {
            for (let r = 0; r < 2; r++) {
              const event: ViewingEvent = {
                contentId: item.contentId,
                title: item.title,
                genres: item.genres,
                watchedAt: 1_600_000_000_000 + n * 1_000 + r,
                watchShare: 0.9,
                context: evening
              }
              watched.push(event)
              yield* brain.observe(event)
            }
          }
          const client = Context.get(context, SyncClient)
          yield* client.awaitConnected
          assert.strictEqual((yield* client.syncNow)._tag, "Acknowledged")
          tvs.push(brain)
        }

        // Two devices per shard: below k = 3, so no shard publishes the taste on its own.
        for (const s of shards) {
          const ingestion = Context.get(s, Ingestion)
          yield* ingestion.refresh(true)
          assert.strictEqual((yield* ingestion.snapshot(REGION)).similar.length, 0)
        }

        // The worker, asked for a round through a shard (what POST /api/v1/federation/trigger does).
        const worker = yield* Layer.build(
          FederationWorker.layer({
            workerId: "w1",
            fleetSecret: SECRET,
            shards: ports.map((port, i) => ({ shardId: `shard-${"ab"[i]}`, endpoint: { host: "127.0.0.1", port } })),
            every: Duration.hours(1),
            roundTimeout: Duration.seconds(5),
            maxPatternsPerShard: 500,
            federate: federateAcrossShards()
          }).pipe(Layer.provide(Layer.succeed(SyncTransport, memory)))
        )
        const federationWorker = Context.get(worker, FederationWorker)
        yield* eventually(
          Effect.map(federationWorker.connectedShards, (n) => n === 2),
          "the worker is connected to both shards"
        )
        const before = yield* federationWorker.lastRound
        yield* Context.get(shards[0]!, Federation).runRound
        yield* eventually(
          Effect.map(federationWorker.lastRound, (r) => r !== undefined && r.round !== before?.round),
          "the requested round ran"
        )
        const report = (yield* federationWorker.lastRound)!
        assert.strictEqual(report.shardsAnswered, 2)
        assert.isAbove(report.patternsOut, 0)

        for (const s of shards) {
          // The worker has sent RegionUpdate; the shard applies it on its own session fiber.
          const snapshot = Effect.map(Context.get(s, Ingestion).snapshot(REGION), (g) => g.similar)
          yield* eventually(
            Effect.map(snapshot, (similar) => similar.length > 0),
            "each shard serves the federated taste"
          )
          const similar = yield* snapshot
          for (const p of similar) assert.isAtLeast(p.deviceCount, 3, "nothing below k devices is redistributed")
        }
        for (const brain of tvs) {
          yield* eventually(
            Effect.map(brain.stats, (s) => s.collectivePatterns > 0),
            "every TV got the federated patterns"
          )
        }

        // The privacy audit: decode every frame any shard received.
        let uploads = 0
        for (const bytes of received) {
          const frame = yield* decodeFrame(bytes)
          if (frame._tag !== "DeltaUpload") continue
          uploads += 1
          const text = JSON.stringify(frame, (_, v) => (v instanceof Float32Array ? Array.from(v) : v))
          for (const event of watched) {
            assert.notInclude(text, event.contentId)
            assert.notInclude(text, event.title)
            assert.notInclude(text, String(event.watchedAt))
          }
        }
        assert.strictEqual(uploads, 4)
        const storage = Context.get(shards[0]!, ShardStorage)
        assert.isAtLeast((yield* storage.counts).loggedDeltas, 2)
      }).pipe(Effect.scoped),
    60_000
  )
})
