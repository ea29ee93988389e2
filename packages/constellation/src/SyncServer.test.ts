import { assert, describe, it } from "@effect/vitest"
import {
  type ContentId,
  type CoWatchRow,
  decodeFrame,
  type DeviceId,
  EMBEDDING_DIMENSIONS,
  encodeFrame,
  MAX_COWATCH_ROWS,
  MAX_FRAME_BYTES,
  normalizeEmbedding,
  type PatternId,
  PROTOCOL_VERSION,
  seededRandom,
  type SyncFrame
} from "@omega/protocol"
import { type Connection, SyncTransport } from "@omega/sync"
import { Context, Duration, Effect, Layer, Stream } from "effect"
import { Ingestion } from "./Ingestion.ts"
import { coWatchSlices } from "./internal/chunks.ts"
import { shardCore } from "./Shard.ts"
import { deviceToken } from "./ShardManager.ts"
import { ShardStorage } from "./ShardStorage.ts"
import { coWatchUpdateFrames, SyncServer } from "./SyncServer.ts"

const SECRET = "push-test-secret"
const REGIONS = ["eu-west", "us-east"]
/** Sessions per region. */
const SESSIONS = 60

const shard = shardCore({
  shardId: "push",
  region: REGIONS[0]!,
  maxDevices: 1_000,
  fleetSecret: SECRET,
  sync: { host: "127.0.0.1", port: 0 },
  ingestion: {
    minSyncInterval: Duration.zero,
    pushEvery: Duration.zero,
    pushSpread: Duration.seconds(3),
    snapshotEvery: Duration.millis(100)
  }
}).pipe(Layer.provideMerge(Layer.mergeAll(ShardStorage.layerTest, SyncTransport.layerMemory)))

/** Opens a session as `id` (a TV, or a worker in the "federation:" namespace) and hands `onFrame` every frame it receives. */
const openSession = Effect.fnUntraced(function*(
  transport: SyncTransport["Service"],
  port: number,
  id: string,
  region: string,
  onFrame: (frame: SyncFrame) => void
) {
  const connection = yield* transport.connect({ host: "127.0.0.1", port })
  yield* connection.incoming.pipe(
    Stream.runForEach((bytes) => Effect.map(decodeFrame(bytes), onFrame)),
    Effect.ignore,
    Effect.forkScoped
  )
  yield* connection.send(encodeFrame({
    _tag: "Hello",
    deviceId: id as DeviceId,
    token: deviceToken(SECRET, id),
    region,
    protocolVersion: PROTOCOL_VERSION
  }))
  return connection
})

describe("SyncServer push", () => {
  it.live(
    "a changed snapshot reaches every session of its region once, in slices over the spread; regions do not wait for each other",
    () =>
      Effect.gen(function*() {
        const context = yield* Layer.build(shard)
        const server = Context.get(context, SyncServer)
        const transport = Context.get(context, SyncTransport)
        // Every GlobalUpdate each session receives: the version and when.
        const received = new Map<string, Array<{ version: number; at: number }>>()
        const connections = new Map<string, Connection>()
        for (const region of REGIONS) {
          for (let n = 0; n < SESSIONS; n++) {
            const deviceId = `${region}-tv-${n}`
            const log: Array<{ version: number; at: number }> = []
            received.set(deviceId, log)
            const connection = yield* openSession(transport, server.port, deviceId, region, (frame) => {
              if (frame._tag === "GlobalUpdate") log.push({ version: frame.global.version, at: Date.now() })
            })
            connections.set(deviceId, connection)
          }
        }
        // In each region three devices upload one taste: a group of k = 3, so both snapshots change.
        const random = seededRandom(7)
        const taste = normalizeEmbedding(Float32Array.from({ length: EMBEDDING_DIMENSIONS }, () => random() - 0.5))
        const uploaded = Date.now()
        for (const region of REGIONS) {
          for (const n of [0, 1, 2]) {
            yield* connections.get(`${region}-tv-${n}`)!.send(encodeFrame({
              _tag: "DeltaUpload",
              delta: {
                baseVersion: 0,
                version: 1,
                added: [{
                  id: `${region}-${n}-p` as PatternId,
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
        }
        const all = [...received.values()]
        for (let i = 0; i < 200 && all.some((log) => log.length === 0); i++) yield* Effect.sleep("50 millis")
        for (const region of REGIONS) {
          const logs = [...received.entries()].filter(([id]) => id.startsWith(region)).map(([, log]) => log)
          const missing = logs.filter((log) => log.length === 0).length
          assert.strictEqual(missing, 0, `${missing} of ${SESSIONS} sessions in ${region} got no push`)
          assert.strictEqual(new Set(logs.map((log) => log[0]!.version)).size, 1, `one version in ${region}`)
          for (const log of logs) {
            assert.strictEqual(new Set(log.map((x) => x.version)).size, log.length, "no version twice to one session")
          }
          const times = logs.map((log) => log[0]!.at).sort((a, b) => a - b)
          assert.isBelow(times[0]! - uploaded, 1_500, `${region}'s push starts at once, not behind the other region's`)
          assert.isAbove(times.at(-1)! - times[0]!, 1_000, `${region}'s push is spread over its window`)
        }
      }).pipe(Effect.scoped),
    30_000
  )
})

describe("coWatchUpdateFrames", () => {
  const row = (n: number) => ({ contentId: `m${n}` as never, neighbours: [] })

  it("gives the new version to the last chunk only, so a TV cut off between chunks resumes from its own", () => {
    const frames = coWatchUpdateFrames(7, { version: 12, rows: Array.from({ length: 5 }, (_, n) => row(n)) }, 2)
    assert.deepStrictEqual(frames.map((f) => [f.version, f.rows.length]), [[7, 2], [7, 2], [12, 1]])
    assert.deepStrictEqual(frames.flatMap((f) => f.rows.map((r): string => r.contentId)), [
      "m0",
      "m1",
      "m2",
      "m3",
      "m4"
    ])
  })

  it("sends one frame with the new version when the rows fit", () => {
    assert.deepStrictEqual(coWatchUpdateFrames(0, { version: 3, rows: [row(1)] }).map((f) => f.version), [3])
  })

  it("splits rows by size too, so every frame encodes under the wire's cap whatever the ids", () => {
    // 512 rows of 64 neighbours, every id of the longest kind the schema takes: ~4 MB of rows.
    const id = (n: number) => `${"x".repeat(120)}-${String(n).padStart(7, "0")}` as never
    const rows = Array.from({ length: 512 }, (_, n) => ({
      contentId: id(n),
      neighbours: Array.from({ length: 64 }, (_item, m) => ({ contentId: id(1_000 + m), weight: 1000 - m }))
    }))
    const frames = coWatchUpdateFrames(0, { version: 9, rows })
    assert.isAbove(frames.length, 1)
    assert.strictEqual(frames.reduce((n, f) => n + f.rows.length, 0), 512)
    for (const frame of frames) assert.isAtMost(encodeFrame(frame).length, MAX_FRAME_BYTES)
  })
})

describe("federated co-watch tables from a worker", () => {
  it.live(
    "takes a table once its last slice arrives, and refuses one over the row cap whole, keeping the table before",
    () =>
      Effect.gen(function*() {
        const context = yield* Layer.build(shard)
        const server = Context.get(context, SyncServer)
        const transport = Context.get(context, SyncTransport)
        const ingestion = Context.get(context, Ingestion)
        const errors: Array<string> = []
        const worker = yield* openSession(transport, server.port, "federation:cap-test", REGIONS[0]!, (frame) => {
          if (frame._tag === "ErrorFrame") errors.push(`${frame.code}: ${frame.message}`)
        })
        const sendTable = Effect.fnUntraced(function*(round: number, rows: ReadonlyArray<CoWatchRow>) {
          for (const slice of coWatchSlices(rows, MAX_COWATCH_ROWS)) {
            yield* worker.send(encodeFrame({ _tag: "FederatedCoWatch", round, rows: slice.rows, last: slice.last }))
          }
        })
        /** Polls until the shard's co-watch table satisfies `done`. */
        const table = Effect.fnUntraced(function*(done: (rows: ReadonlyArray<string>) => boolean) {
          let rows: ReadonlyArray<string> = []
          for (let i = 0; i < 100; i++) {
            rows = (yield* ingestion.coWatchSince(0)).rows.map((r) => r.contentId)
            if (done(rows)) break
            yield* Effect.sleep("20 millis")
          }
          return rows
        })
        const pair = (a: string, b: string): CoWatchRow => ({
          contentId: a as ContentId,
          neighbours: [{ contentId: b as ContentId, weight: 500 }]
        })
        yield* sendTable(1, [pair("m1", "m2"), pair("m2", "m1")])
        assert.deepStrictEqual(yield* table((rows) => rows.length === 2), ["m1", "m2"])
        // Over what a table may hold, with slices still to come after the one that crosses it: the
        // refusal holds for them too, or the last would publish the rows sent after it.
        const tooMany = Array.from({ length: 200_000 + 2 * MAX_COWATCH_ROWS }, (_, n) => pair(`x${n}`, "m1"))
        yield* sendTable(2, tooMany)
        for (let i = 0; i < 100 && errors.length === 0; i++) yield* Effect.sleep("20 millis")
        assert.strictEqual(errors.length, 1)
        assert.match(errors[0]!, /^bad-frame: a federated co-watch table holds at most 200000 rows/)
        // Nothing of it was taken, not even the slices before the cap: the first table stands.
        yield* Effect.sleep("100 millis")
        assert.deepStrictEqual(yield* table(() => true), ["m1", "m2"])
      }).pipe(Effect.scoped),
    60_000
  )
})
