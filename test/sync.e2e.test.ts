/**
 * End to end on loopback: TV brains keep WebTransport sessions to a shard on PGlite, push
 * their deltas, and receive each other's aggregated patterns by server push; a TV that joins
 * later gets them on its first session. Bad input at the sync endpoint is refused with a
 * typed ErrorFrame and changes nothing stored.
 */
import { assert, describe, it } from "@effect/vitest"
import { makeHashing, OmegaBrain } from "@omega/brain"
import { deviceToken, Ingestion, ShardStorage, SyncServer } from "@omega/constellation"
import {
  type ContentEmbedding,
  type ContentId,
  decodeFrame,
  type DeviceId,
  encodeFrame,
  PROTOCOL_VERSION,
  type SyncFrame,
  type ViewContext
} from "@omega/protocol"
import { makeDevCertificate, SyncClient, SyncTransport } from "@omega/sync"
import { Context, Duration, Effect, Layer, Stream } from "effect"
import { eventually, testShard, testTv } from "./support.ts"

const SECRET = "e2e-fleet-secret"
const REGION = "eu-west"
const hashing = makeHashing()

const catalog: Array<ContentEmbedding> = ["Comedy", "Horror", "Documentary"].flatMap((genre) =>
  ["Harbor", "Winter", "Signal", "Meadow", "Copper", "Lantern"].map((word, i) => {
    const title = `${genre} ${word} (199${i})`
    return {
      contentId: `${genre.toLowerCase()}-${i}` as ContentId,
      title,
      genres: [genre],
      embedding: Effect.runSync(hashing.embedContent({ title, genres: [genre] }))
    }
  })
)
const evening: ViewContext = { timeOfDay: "evening", dayType: "weekday", recentWatches: [] }

/** Everything a shard needs, on PGlite in memory and real WebTransport on 127.0.0.1. */
const shard = (certificate: { certificate: string; privateKey: string }) =>
  testShard({
    shardId: "e2e",
    fleetSecret: SECRET,
    region: REGION,
    sync: { host: "127.0.0.1", port: 0, certificate },
    snapshotEvery: Duration.millis(200)
  }).pipe(Layer.provideMerge(SyncTransport.layerWebTransport()))

/** One TV: a brain and a sync client holding a session to the shard. */
const tv = (deviceId: string, port: number, pin: Uint8Array) =>
  testTv({ deviceId, fleetSecret: SECRET, region: REGION, endpoint: { host: "127.0.0.1", port, certificateHash: pin } })

describe("sync end to end over WebTransport", () => {
  it.live(
    "TVs learn each other's aggregated patterns through the shard, and a new TV gets them at once",
    () =>
      Effect.gen(function*() {
        const certificate = yield* makeDevCertificate()
        const context = yield* Layer.build(shard(certificate))
        const server = Context.get(context, SyncServer)
        const storage = Context.get(context, ShardStorage)
        const ingestion = Context.get(context, Ingestion)
        const transport = Layer.succeed(SyncTransport, Context.get(context, SyncTransport))
        // The catalog the shard distributes: uploads are decoded against it (trends, co-watch rows).
        yield* ingestion.addContent(catalog)

        // Five TVs whose viewers love comedies: each learns a comedy pattern worth sharing.
        const accepted: Array<number> = []
        const tvs = []
        for (let n = 0; n < 5; n++) {
          const tvContext = yield* Layer.build(
            tv(`tv-${n}`, server.port, certificate.sha256).pipe(Layer.provide(transport))
          )
          const brain = Context.get(tvContext, OmegaBrain)
          const client = Context.get(tvContext, SyncClient)
          yield* brain.addContent(catalog)
          for (const id of ["comedy-0", "comedy-1", "comedy-2"]) {
            const item = catalog.find((c) => c.contentId === id)!
            for (let r = 0; r < 2; r++) {
              yield* brain.observe({
                contentId: item.contentId,
                title: item.title,
                genres: item.genres,
                watchedAt: 1_700_000_000_000 + r,
                watchShare: 0.95,
                context: evening
              })
            }
          }
          yield* client.awaitConnected
          const outcome = yield* client.syncNow
          assert.strictEqual(outcome._tag, "Acknowledged")
          if (outcome._tag === "Acknowledged") {
            assert.isFalse(outcome.ack.duplicate)
            assert.isAbove(outcome.ack.accepted, 0)
            assert.isBelow(outcome.bytes, 1_024, "an upload of a few patterns stays under 1 KB")
            accepted.push(outcome.ack.accepted)
          }
          tvs.push({ brain, client })
        }

        // Durable before acknowledged: the log holds every accepted pattern.
        const counts = yield* storage.counts
        assert.strictEqual(counts.loggedPatterns, accepted.reduce((a, b) => a + b, 0))

        // The shard's next snapshot is pushed to every open session without the TVs asking.
        yield* ingestion.refresh(true)
        for (const { brain } of tvs) {
          yield* eventually(Effect.map(brain.stats, (s) => s.collectivePatterns > 0), "every TV has global patterns")
        }
        const [global] = (yield* ingestion.snapshot(REGION)).similar
        assert.isAtLeast(global!.deviceCount, 3, "only groups of at least k devices are redistributed")

        // Co-watch rows decoded from the five TVs' patterns are pushed to every open session.
        const coWatch = yield* ingestion.publishCoWatch
        // (The hashing embedder makes comedies alike, so a neighbouring comedy may decode in too.)
        assert.includeMembers(coWatch.rows.map((r): string => r.contentId), ["comedy-0", "comedy-1", "comedy-2"])
        for (const { brain } of tvs) {
          yield* eventually(
            Effect.map(brain.stats, (s) => s.versions.coWatch === coWatch.version),
            "every TV has the co-watch rows"
          )
        }

        // A TV with no history joins and gets the global patterns on its first session.
        const newcomer = yield* Layer.build(
          tv("tv-new", server.port, certificate.sha256).pipe(Layer.provide(transport))
        )
        const newBrain = Context.get(newcomer, OmegaBrain)
        yield* newBrain.addContent(catalog)
        yield* eventually(
          Effect.map(newBrain.stats, (s) => s.collectivePatterns > 0),
          "the newcomer has global patterns"
        )
        const recs = yield* newBrain.recommend(evening, 5)
        assert.isTrue(recs.length > 0)
        assert.isTrue(recs[0]!.contentId.startsWith("comedy-"), `newcomer's top pick ${recs[0]!.contentId}`)
        assert.strictEqual(recs[0]!.reason, "Popular with viewers who share your taste")
        const status = yield* Context.get(newcomer, SyncClient).status
        assert.isTrue(status.connected)
        // It got the co-watch rows on connecting too.
        yield* eventually(
          Effect.map(newBrain.stats, (s) => s.versions.coWatch === coWatch.version),
          "the newcomer has the co-watch rows"
        )
      }).pipe(Effect.scoped),
    60_000
  )

  it.live(
    "refuses bad input at the sync endpoint with a typed ErrorFrame, storing nothing",
    () =>
      Effect.gen(function*() {
        const certificate = yield* makeDevCertificate()
        const context = yield* Layer.build(shard(certificate))
        const server = Context.get(context, SyncServer)
        const storage = Context.get(context, ShardStorage)
        const transport = Context.get(context, SyncTransport)

        /** Opens a raw session, sends `frames`, and returns the decoded answers until the shard closes it. */
        const exchange = (frames: ReadonlyArray<Uint8Array>) =>
          Effect.scoped(Effect.gen(function*() {
            const connection = yield* transport.connect({
              host: "127.0.0.1",
              port: server.port,
              certificateHash: certificate.sha256
            })
            for (const frame of frames) yield* connection.send(frame)
            const answers = yield* connection.incoming.pipe(
              Stream.take(3),
              Stream.timeout(Duration.seconds(3)),
              Stream.runCollect
            )
            return yield* Effect.forEach(answers, (bytes) => decodeFrame(bytes))
          }))
        const hello = (deviceId: string, token: string): SyncFrame => ({
          _tag: "Hello",
          deviceId: deviceId as DeviceId,
          token,
          region: REGION,
          protocolVersion: PROTOCOL_VERSION
        })
        const errorCode = (answers: ReadonlyArray<SyncFrame>) => {
          const error = answers.find((f) => f._tag === "ErrorFrame")
          return error?._tag === "ErrorFrame" ? error.code : "none"
        }

        assert.strictEqual(errorCode(yield* exchange([new Uint8Array([1, 2, 3, 4, 5])])), "bad-frame")
        assert.strictEqual(errorCode(yield* exchange([encodeFrame(hello("tv-x", "forged-token"))])), "unauthorized")
        assert.strictEqual(
          errorCode(yield* exchange([encodeFrame({ _tag: "Ping", nonce: 1 })])),
          "bad-frame",
          "a session must start with Hello"
        )
        const welcomed = yield* exchange([
          encodeFrame(hello("tv-y", deviceToken(SECRET, "tv-y"))),
          new Uint8Array(200).fill(0xff)
        ])
        assert.strictEqual(welcomed[0]?._tag, "Welcome")
        assert.strictEqual(errorCode(welcomed), "bad-frame")
        const counts = yield* storage.counts
        assert.strictEqual(counts.loggedDeltas, 0)
        assert.strictEqual(counts.devices, 1, "only the device with a valid token was registered")
      }).pipe(Effect.scoped),
    60_000
  )
})
