import { assert, describe, it } from "@effect/vitest"
import {
  decodeFrame,
  type DeviceId,
  EMBEDDING_DIMENSIONS,
  encodeFrame,
  normalizeEmbedding,
  type PatternId,
  PROTOCOL_VERSION,
  seededRandom
} from "@omega/protocol"
import { type Connection, SyncTransport } from "@omega/sync"
import { Context, Duration, Effect, Layer, Stream } from "effect"
import { shardCore } from "./Shard.ts"
import { deviceToken } from "./ShardManager.ts"
import { ShardStorage } from "./ShardStorage.ts"
import { SyncServer } from "./SyncServer.ts"

const SECRET = "push-test-secret"
const REGION = "eu-west"
const SESSIONS = 120

const shard = shardCore({
  shardId: "push",
  region: REGION,
  maxDevices: 1_000,
  fleetSecret: SECRET,
  transport: "memory",
  sync: { host: "127.0.0.1", port: 0 },
  host: "127.0.0.1",
  httpPort: 0,
  metricsPort: 0,
  ingestion: {
    minSyncInterval: Duration.zero,
    pushEvery: Duration.zero,
    pushSpread: Duration.millis(400),
    snapshotEvery: Duration.millis(100)
  }
}).pipe(Layer.provideMerge(Layer.mergeAll(ShardStorage.layerTest, SyncTransport.layerMemory)))

describe("SyncServer push", () => {
  it.live(
    "a changed snapshot reaches every session of the region, in slices over the spread, once per version",
    () =>
      Effect.gen(function*() {
        const context = yield* Layer.build(shard)
        const server = Context.get(context, SyncServer)
        const transport = Context.get(context, SyncTransport)
        // Every GlobalUpdate each session receives: the version and when.
        const received = Array.from({ length: SESSIONS }, () => [] as Array<{ version: number; at: number }>)
        const connections: Array<Connection> = []
        for (let n = 0; n < SESSIONS; n++) {
          const connection = yield* transport.connect({ host: "127.0.0.1", port: server.port })
          yield* connection.send(encodeFrame({
            _tag: "Hello",
            deviceId: `tv-${n}` as DeviceId,
            token: deviceToken(SECRET, `tv-${n}`),
            region: REGION,
            protocolVersion: PROTOCOL_VERSION
          }))
          yield* connection.incoming.pipe(
            Stream.runForEach((bytes) =>
              Effect.map(decodeFrame(bytes), (frame) => {
                if (frame._tag === "GlobalUpdate") received[n]!.push({ version: frame.global.version, at: Date.now() })
              })
            ),
            Effect.ignore,
            Effect.forkScoped
          )
          connections.push(connection)
        }
        // Three devices upload the same taste: a group of k = 3 devices, so the snapshot changes.
        const random = seededRandom(7)
        const taste = normalizeEmbedding(Float32Array.from({ length: EMBEDDING_DIMENSIONS }, () => random() - 0.5))
        const uploaded = Date.now()
        for (const n of [0, 1, 2]) {
          yield* connections[n]!.send(encodeFrame({
            _tag: "DeltaUpload",
            delta: {
              baseVersion: 0,
              version: 1,
              added: [{
                id: `tv-${n}-p` as PatternId,
                embedding: taste,
                successRate: 0.9,
                sampleCount: 10,
                context: { timeOfDay: "evening", dayType: "weekday" }
              }],
              updated: [],
              removed: []
            }
          }))
        }
        for (let i = 0; i < 100 && received.some((r) => r.length === 0); i++) yield* Effect.sleep("50 millis")
        const missing = received.filter((r) => r.length === 0).length
        assert.strictEqual(missing, 0, `${missing} of ${SESSIONS} sessions got no push`)
        const first = received.map((r) => r[0]!)
        assert.strictEqual(new Set(first.map((r) => r.version)).size, 1, "all got the same version")
        for (const r of received) {
          assert.strictEqual(new Set(r.map((x) => x.version)).size, r.length, "no version twice to one session")
        }
        // Spread: the deliveries are not all in one turn; the last comes well after the first.
        const times = first.map((r) => r.at).sort((a, b) => a - b)
        assert.isAbove(times.at(-1)! - times[0]!, 200, "spread over the push's window")
        assert.isBelow(times.at(-1)! - uploaded, 3_000)
      }).pipe(Effect.scoped),
    30_000
  )
})
