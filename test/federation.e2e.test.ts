/**
 * Federation across shards, end to end: two shards on PGlite, two TVs on each, a federation
 * worker holding sessions to both. Neither shard alone has k = 3 devices behind a taste, so
 * neither may publish it; federated across shards the group has four devices and reaches every
 * TV by server push. Every frame the shards received is decoded and audited: no content id,
 * title or watch timestamp of anything watched ever left a TV. Trends too: each shard decodes its
 * own uploads against its catalog, and what k of one shard's TVs watch trends on every shard.
 */
import { assert, describe, it } from "@effect/vitest"
import { makeHashing, MemoryTiers, OmegaBrain } from "@omega/brain"
import {
  federateAcrossShards,
  Federation,
  FederationWorker,
  Ingestion,
  ShardStorage,
  SyncServer
} from "@omega/constellation"
import {
  type ContentEmbedding,
  type ContentId,
  decodeFrame,
  type TrendSignal,
  type ViewContext,
  type ViewingEvent
} from "@omega/protocol"
import { SyncClient, SyncTransport } from "@omega/sync"
import { Context, Duration, Effect, Layer, Stream } from "effect"
import { eventually, testShard, testTv } from "./support.ts"

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

const horror: Array<ContentEmbedding> = ["Cellar", "Lantern", "Hollow"].map((word, i) => {
  const title = `Horror ${word} (197${i})`
  return {
    contentId: `horror-${i}` as ContentId,
    title,
    genres: ["Horror"],
    embedding: Effect.runSync(hashing.embedContent({ title, genres: ["Horror"] }))
  }
})

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
  testShard({
    shardId,
    fleetSecret: SECRET,
    region: REGION,
    sync: { port: 0 },
    snapshotEvery: Duration.millis(100),
    federationEvery: Duration.hours(1)
  }).pipe(Layer.provide(Layer.succeed(SyncTransport, transport)))

const tv = (deviceId: string, port: number) =>
  testTv({ deviceId, fleetSecret: SECRET, region: REGION, endpoint: { host: "127.0.0.1", port } })

/** Every frame any shard received, decoded; fails if one carries a watched item's id, title or time. */
const auditUploads = (received: ReadonlyArray<Uint8Array>, watched: ReadonlyArray<ViewingEvent>) =>
  Effect.gen(function*() {
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
    return uploads
  })

/** A viewing of `item` in the evening, `n`-th of the test. */
const viewing = (item: ContentEmbedding, n: number): ViewingEvent => ({
  contentId: item.contentId,
  title: item.title,
  genres: item.genres,
  watchedAt: 1_600_000_000_000 + n * 1_000,
  watchShare: 0.9,
  context: evening
})

describe("federation across shards", () => {
  it.live(
    "TVs on different shards learn a taste none of their shards could publish alone",
    () =>
      Effect.gen(function*() {
        const { memory, ports, received, shards } = yield* startShards

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
        const federationWorker = yield* startWorker("w1", ports, memory)
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
        assert.strictEqual(yield* auditUploads(received, watched), 4)
        const storage = Context.get(shards[0]!, ShardStorage)
        assert.isAtLeast((yield* storage.counts).loggedDeltas, 2)
      }).pipe(Effect.scoped),
    60_000
  )

  it.live(
    "what k TVs of one shard watch trends on every TV of every shard, decoded from uploads without content ids",
    () =>
      Effect.gen(function*() {
        const { memory, ports, received, shards } = yield* startShards
        const items = [...catalog, ...horror]
        const item = (id: string) => items.find((c) => c.contentId === id)!
        // What POST /api/v1/content does on each shard: store the items and announce them.
        for (const s of shards) {
          yield* Context.get(s, ShardStorage).addContent(items)
          yield* Context.get(s, Federation).announceContent(items)
        }

        // Three TVs on shard-a watch western-0 and three on shard-b musical-1. horror-2 has three
        // viewers too, but never k = 3 on one shard: no shard may report it, so it never trends.
        const plan: ReadonlyArray<{ readonly shard: number; readonly watches: ReadonlyArray<string> }> = [
          { shard: 0, watches: ["western-0", "horror-2"] },
          { shard: 0, watches: ["western-0", "horror-2"] },
          { shard: 0, watches: ["western-0"] },
          { shard: 1, watches: ["musical-1", "horror-2"] },
          { shard: 1, watches: ["musical-1"] },
          { shard: 1, watches: ["musical-1"] }
        ]
        const watched: Array<ViewingEvent> = []
        const tvs: Array<{ readonly shard: number; readonly tiers: MemoryTiers["Service"] }> = []
        for (const [n, { shard: home, watches }] of plan.entries()) {
          const context = yield* Layer.build(
            tv(`trend-tv-${n}`, ports[home]!).pipe(Layer.provide(Layer.succeed(SyncTransport, memory)))
          )
          const brain = Context.get(context, OmegaBrain)
          yield* brain.addContent(items)
          for (const id of watches) {
            for (let r = 0; r < 2; r++) {
              const event = viewing(item(id), watched.length)
              watched.push(event)
              yield* brain.observe(event)
            }
          }
          const client = Context.get(context, SyncClient)
          yield* client.awaitConnected
          assert.strictEqual((yield* client.syncNow)._tag, "Acknowledged")
          tvs.push({ shard: home, tiers: Context.get(context, MemoryTiers) })
        }

        // Each shard alone trends what its own TVs watched (a quantized pattern may also credit a
        // little to look-alike items, so the hottest item is what is checked).
        const local = yield* Effect.forEach(shards, (s) => Context.get(s, Ingestion).localTrends(REGION, 20))
        const ids = (trends: ReadonlyArray<TrendSignal>) => trends.map((t) => t.contentId as string)
        assert.strictEqual(ids(local[0]!)[0], "western-0")
        assert.strictEqual(ids(local[1]!)[0], "musical-1")
        assert.notInclude(ids(local[1]!), "western-0", "no TV of shard-b watched western-0")

        const federationWorker = yield* startWorker("w2", ports, memory)
        yield* federationWorker.runRound

        // Through the worker, both shards' trends reach every TV, on the TV's own shard or not.
        for (const [n, { shard: home, tiers }] of tvs.entries()) {
          const trending = Effect.sync(() => ids(tiers.collective.trends()))
          yield* eventually(
            Effect.map(trending, (t) => t.includes("western-0") && t.includes("musical-1")),
            `TV ${n} on shard-${"ab"[home]} got both shards' trends`
          )
          for (const id of yield* trending) assert.isFalse(id.startsWith("horror-"), `${id} trends below k`)
        }
        assert.strictEqual(yield* auditUploads(received, watched), plan.length)
      }).pipe(Effect.scoped),
    60_000
  )
  it.live(
    "a co-watch pair that reaches k only across shards reaches the TVs of every shard",
    () =>
      Effect.gen(function*() {
        const { memory, ports, shards } = yield* startShards
        for (const s of shards) {
          yield* Context.get(s, ShardStorage).addContent(catalog)
          yield* Context.get(s, Federation).announceContent(catalog)
        }
        // Two TVs of shard-a and one of shard-b watch the same three westerns; a fourth TV, on
        // shard-b, watches musicals. Each pair of westerns has two devices on shard-a, one on b.
        const plan = [
          { shard: 0, watches: ["western-0", "western-1", "western-2"] },
          { shard: 0, watches: ["western-0", "western-1", "western-2"] },
          { shard: 1, watches: ["western-0", "western-1", "western-2"] },
          { shard: 1, watches: ["musical-1", "musical-2"] }
        ]
        const brains: Array<OmegaBrain["Service"]> = []
        const clients: Array<SyncClient["Service"]> = []
        for (const [n, { shard: home, watches }] of plan.entries()) {
          const context = yield* Layer.build(
            tv(`cowatch-tv-${n}`, ports[home]!).pipe(Layer.provide(Layer.succeed(SyncTransport, memory)))
          )
          const brain = Context.get(context, OmegaBrain)
          yield* brain.addContent(catalog)
          for (const [i, id] of watches.entries()) {
            for (let r = 0; r < 2; r++) {
              yield* brain.observe(viewing(catalog.find((c) => c.contentId === id)!, 10 * n + 2 * i + r))
            }
          }
          const client = Context.get(context, SyncClient)
          yield* client.awaitConnected
          assert.strictEqual((yield* client.syncNow)._tag, "Acknowledged")
          brains.push(brain)
          clients.push(client)
        }
        const westernRow = (s: Context.Context<Ingestion>) =>
          Effect.map(
            Context.get(s, Ingestion).coWatchSince(0),
            ({ rows }) =>
              rows.find((r) => r.contentId === "western-0")?.neighbours.map((n): string => n.contentId) ?? []
          )

        // Alone, no shard has k = 3 devices behind a pair of westerns.
        for (const s of shards) {
          yield* Context.get(s, Ingestion).publishCoWatch
          assert.deepStrictEqual(yield* westernRow(s), [])
        }

        const federationWorker = yield* startWorker("w3", ports, memory)
        const report = yield* federationWorker.runRound
        assert.isAbove(report.coWatchRows, 0)
        for (const s of shards) {
          yield* eventually(
            Effect.map(westernRow(s), (neighbours) => neighbours.includes("western-1")),
            "each shard serves the row federated across shards"
          )
        }
        for (const [n, brain] of brains.entries()) {
          const version = (yield* Context.get(shards[plan[n]!.shard]!, Ingestion).coWatchSince(Number.MAX_SAFE_INTEGER))
            .version
          yield* eventually(
            Effect.map(brain.stats, (s) => s.versions.coWatch === version),
            `TV ${n} holds its shard's federated co-watch rows`
          )
        }

        // One TV keeps watching and syncing: round after round a single device changed, and no new
        // table goes out (it would differ from the last by that device's viewing alone).
        for (let r = 0; r < 4; r++) {
          yield* brains[0]!.observe(viewing(catalog.find((c) => c.contentId === "western-3")!, 100 + r))
          assert.strictEqual((yield* clients[0]!.syncNow)._tag, "Acknowledged")
          assert.strictEqual((yield* federationWorker.runRound).coWatchRows, 0, `round ${r + 2}`)
        }
        // Two more devices change (a pattern is shared from its second viewing on): k of them
        // since the last table, and the next one goes out.
        for (const n of [1, 2]) {
          for (let r = 0; r < 2; r++) {
            yield* brains[n]!.observe(viewing(catalog.find((c) => c.contentId === "western-3")!, 200 + 10 * n + r))
          }
          assert.strictEqual((yield* clients[n]!.syncNow)._tag, "Acknowledged")
        }
        assert.isAbove((yield* federationWorker.runRound).coWatchRows, 0)
      }).pipe(Effect.scoped),
    60_000
  )
})

/** A federation worker with sessions to both shards (on the memory transport), once it holds both. */
const startWorker = (workerId: string, ports: ReadonlyArray<number>, memory: SyncTransport["Service"]) =>
  Effect.gen(function*() {
    const worker = yield* Layer.build(
      FederationWorker.layer({
        workerId,
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
    return federationWorker
  })

/** Shards a and b on one memory transport; `received` collects every frame they are sent. */
const startShards = Effect.gen(function*() {
  const memory = Context.get(yield* Layer.build(SyncTransport.layerMemory), SyncTransport)
  const received: Array<Uint8Array> = []
  const shards = [
    yield* Layer.build(shard("shard-a", tapped(memory, received))),
    yield* Layer.build(shard("shard-b", tapped(memory, received)))
  ]
  return { memory, received, shards, ports: shards.map((s) => Context.get(s, SyncServer).port) }
})
