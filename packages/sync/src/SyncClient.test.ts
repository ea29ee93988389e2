import { assert, describe, it } from "@effect/vitest"
import { defaultBrainConfig, OmegaBrain } from "@omega/brain"
import {
  type ContentId,
  decodeFrame,
  encodeFrame,
  type GlobalPatterns,
  hashContent,
  type PatternId,
  type ViewingEvent
} from "@omega/protocol"
import { Context, Duration, Effect, Exit, Fiber, Layer, Scope, Stream } from "effect"
import { defaultSyncTiming, SyncClient, type SyncEvent } from "./SyncClient.ts"
import { SyncTransport } from "./SyncTransport.ts"

const evening = { timeOfDay: "evening", dayType: "weekday", recentWatches: [] } as const

const watch = (n: number): ViewingEvent => ({
  contentId: `film-${n % 3}` as ViewingEvent["contentId"],
  title: `Film ${["Harbor", "Winter", "Signal"][n % 3]} (1999)`,
  genres: ["Drama"],
  watchedAt: 1_700_000_000_000 + n,
  watchShare: 0.9,
  context: evening
})

/**
 * A stand-in shard on the memory transport ("mock hardware"): welcomes every TV, acknowledges
 * deltas by version (a replay is a duplicate) and records what it saw.
 */
const fakeShard = (
  transport: SyncTransport["Service"],
  port: number,
  seen: { deltas: Array<number>; duplicates: number; sessions: number }
) =>
  Effect.gen(function*() {
    let acknowledged = 0
    return yield* transport.listen({ port }, (connection) =>
      Stream.runForEach(connection.incoming, (bytes) =>
        Effect.gen(function*() {
          const frame = yield* decodeFrame(bytes)
          if (frame._tag === "Hello") {
            seen.sessions += 1
            yield* connection.send(
              encodeFrame({ _tag: "Welcome", sessionId: "s" as never, serverTime: 0, globalVersion: 0 })
            )
          } else if (frame._tag === "DeltaUpload") {
            const duplicate = frame.delta.version <= acknowledged
            if (duplicate) {
              seen.duplicates += 1
            } else seen.deltas.push(frame.delta.version)
            acknowledged = Math.max(acknowledged, frame.delta.version)
            yield* connection.send(encodeFrame({
              _tag: "DeltaAck",
              version: frame.delta.version,
              accepted: duplicate ? 0 : frame.delta.added.length + frame.delta.updated.length,
              duplicate
            }))
          }
        })).pipe(Effect.ignore))
  })

const client = (port: number) =>
  SyncClient.layer({
    deviceId: "tv-1",
    token: "t",
    region: "eu",
    endpoint: { host: "127.0.0.1", port },
    ...defaultSyncTiming,
    minInterval: Duration.hours(1),
    maxInterval: Duration.hours(2),
    reconnectBase: Duration.millis(20),
    reconnectMax: Duration.millis(200)
  })

describe("SyncClient", () => {
  it.live(
    "works offline without failing the brain, then connects, pushes and is acknowledged",
    () =>
      Effect.gen(function*() {
        const transport = Context.get(yield* Layer.build(SyncTransport.layerMemory), SyncTransport)
        const provideTransport = Layer.succeed(SyncTransport, transport)
        // Nothing listens on this port yet: the TV is offline.
        const port = 47_001
        const brainLayer = Layer.succeedContext(
          yield* Layer.build(OmegaBrain.layerTest({ ...defaultBrainConfig, runLearningLoops: false }))
        )
        const clientScope = yield* Scope.make()
        const tv = yield* Layer.buildWithScope(
          client(port).pipe(Layer.provideMerge(brainLayer), Layer.provide(provideTransport)),
          clientScope
        )
        const brain = Context.get(tv, OmegaBrain)
        const sync = Context.get(tv, SyncClient)
        // Two dramas the TV has not watched yet, for it to recommend.
        yield* brain.addContent(["Harbor Lights (2001)", "Winter Signal (2003)"].map((title, i) => ({
          contentId: `new-${i}` as ViewingEvent["contentId"],
          title,
          genres: ["Drama"],
          embedding: hashContent({ title, genres: ["Drama"] })
        })))
        for (let n = 0; n < 6; n++) yield* brain.observe(watch(n))
        assert.deepStrictEqual(yield* sync.syncNow, { _tag: "Offline" })
        // Recommending never depends on the network: the brain's own patterns answer offline.
        const recs = yield* brain.recommend(evening, 3)
        assert.isAbove(recs.length, 0)
        assert.isFalse((yield* sync.status).connected)

        // The shard comes up; the client reconnects by itself (backoff) and pushes what changed.
        const seen = { deltas: [] as Array<number>, duplicates: 0, sessions: 0 }
        yield* fakeShard(transport, port, seen)
        yield* sync.awaitConnected
        for (let i = 0; i < 50 && seen.deltas.length === 0; i++) yield* Effect.sleep(Duration.millis(20))
        assert.deepStrictEqual(seen.deltas, [6], "the replay on connect pushed everything learned offline")
        assert.strictEqual((yield* brain.pendingDeltas).length, 0, "acknowledged deltas leave the outbox")
        assert.deepStrictEqual(yield* sync.syncNow, { _tag: "NothingToSend" })

        // The TV restarts with a delta prepared but never acknowledged in its outbox: the new session
        // replays it, and the shard acknowledges it as a duplicate instead of counting it again.
        const stale = yield* brain.prepareSyncDelta(0)
        assert.strictEqual(stale.version, 6)
        yield* Scope.close(clientScope, Exit.void)
        const restarted = Context.get(
          yield* Layer.build(client(port).pipe(Layer.provide(Layer.merge(brainLayer, provideTransport)))),
          SyncClient
        )
        yield* restarted.awaitConnected
        for (let i = 0; i < 50 && seen.duplicates === 0; i++) yield* Effect.sleep(Duration.millis(20))
        assert.strictEqual(seen.duplicates, 1)
        assert.strictEqual(seen.sessions, 2)
        for (let i = 0; i < 50 && (yield* brain.pendingDeltas).length > 0; i++) yield* Effect.sleep(Duration.millis(20))
        assert.strictEqual((yield* brain.pendingDeltas).length, 0, "the duplicate ack clears the outbox too")
        yield* brain.observe(watch(7))
        assert.strictEqual((yield* restarted.syncNow)._tag, "Acknowledged")
        assert.deepStrictEqual(seen.deltas, [6, 7], "every version counted exactly once")
      }).pipe(Effect.scoped),
    30_000
  )

  it.live(
    "reports sessions and the pushed updates the brain applied, not the ones it ignored",
    () =>
      Effect.gen(function*() {
        const transport = Context.get(yield* Layer.build(SyncTransport.layerMemory), SyncTransport)
        const port = 47_002
        const embedding = hashContent({ title: "Harbor Lights (2001)", genres: ["Drama"] })
        const global: GlobalPatterns = {
          version: 5,
          similar: [{
            id: "g-1" as PatternId,
            embedding,
            successRate: 0.9,
            sampleCount: 40,
            deviceCount: 3,
            context: {}
          }],
          trending: [{ contentId: "new-0" as ContentId, region: "eu", score: 3, velocity: 1 }]
        }
        const item = { contentId: "new-0" as ContentId, title: "Harbor Lights (2001)", genres: ["Drama"], embedding }
        const tv = yield* Layer.build(
          client(port).pipe(
            Layer.provideMerge(OmegaBrain.layerTest({ ...defaultBrainConfig, runLearningLoops: false })),
            Layer.provide(Layer.succeed(SyncTransport, transport))
          )
        )
        const sync = Context.get(tv, SyncClient)
        const seen: Array<SyncEvent> = []
        // Subscribed before the shard is up, so the first Connected is seen too.
        const listening = yield* (yield* sync.events).pipe(
          Stream.runForEach((event) => Effect.sync(() => seen.push(event))),
          Effect.forkScoped
        )
        let sessions = 0
        // The first session is given a snapshot (twice: the second is stale), an item and co-watch
        // rows, then the shard ends it; the second is only welcomed.
        yield* transport.listen({ port }, (connection) =>
          Stream.runForEach(connection.incoming, (bytes) =>
            Effect.gen(function*() {
              if ((yield* decodeFrame(bytes))._tag !== "Hello") {
                return
              }
              sessions += 1
              const send = (frame: Parameters<typeof encodeFrame>[0]) =>
                connection.send(encodeFrame(frame))
              yield* send({ _tag: "Welcome", sessionId: "s" as never, serverTime: 0, globalVersion: 5 })
              if (sessions > 1) return
              yield* send({ _tag: "GlobalUpdate", global })
              yield* send({ _tag: "GlobalUpdate", global })
              yield* send({ _tag: "ContentUpdate", items: [item] })
              yield* send({
                _tag: "CoWatchUpdate",
                version: 2,
                rows: [{ contentId: "new-0" as ContentId, neighbours: [] }]
              })
              yield* connection.close
            })).pipe(Effect.ignore))
        for (
          let i = 0;
          i < 100 && seen.filter((e) =>
              e._tag === "Connected"
            ).length < 2;
          i++
        ) {
          yield* Effect.sleep(Duration.millis(20))
        }
        assert.deepStrictEqual(seen, [
          { _tag: "Connected", session: 1 },
          { _tag: "GlobalPatternsApplied", version: 5, patterns: 1, trends: 1 },
          { _tag: "ContentAdded", items: 1 },
          { _tag: "CoWatchApplied", version: 2, rows: 1 },
          { _tag: "Disconnected", reason: "shard-closed", message: "the shard ended the session" },
          { _tag: "Connected", session: 2 }
        ])
        const status = yield* sync.status
        assert.strictEqual(status.globalUpdates, 1, "the stale snapshot was not applied")
        assert.strictEqual((yield* Context.get(tv, OmegaBrain).stats).collectivePatterns, 1)
        yield* Fiber.interrupt(listening)
      }).pipe(Effect.scoped),
    30_000
  )
})
