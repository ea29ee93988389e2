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
import { Array as Arr, Cause, Clock, Context, Duration, Effect, Exit, Fiber, Layer, Queue, Scope, Stream } from "effect"
import { TestClock } from "effect/testing"
import { defaultSyncTiming, SyncClient, type SyncClientConfig, type SyncEvent } from "./SyncClient.ts"
import { SyncTransport } from "./SyncTransport.ts"
import { TransportError } from "./TransportError.ts"

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

const client = (port: number, timing: Partial<SyncClientConfig> = {}) =>
  SyncClient.layer({
    deviceId: "tv-1",
    token: "t",
    region: "eu",
    endpoint: { host: "127.0.0.1", port },
    ...defaultSyncTiming,
    minInterval: Duration.hours(1),
    maxInterval: Duration.hours(2),
    reconnectBase: Duration.millis(20),
    reconnectMax: Duration.millis(200),
    ...timing
  })

/**
 * A shard behind a transport made of plain queues, with no real I/O, so that the TestClock alone
 * decides when the TV reconnects. It answers the n-th Hello (from 1) as `answer(n)` says, noting
 * when each came; "welcome-and-close" ends the session right after the Welcome. While `online`
 * is false, connecting fails as if nothing listened.
 */
const scriptedShard = (
  answer: (hello: number) => "refuse" | "welcome" | "welcome-and-close" | "welcome-for-two-minutes"
) => {
  const shard = { online: true, hellos: [] as Array<number> }
  const transport: SyncTransport["Service"] = {
    kind: "memory",
    listen: () => Effect.die("the scripted shard only takes connections"),
    connect: () =>
      Effect.gen(function*() {
        if (!shard.online) {
          return yield* new TransportError({ reason: "connect-failed", message: "the shard is offline" })
        }
        const incoming = yield* Queue.unbounded<Uint8Array, Cause.Done>()
        const reply = (frame: Parameters<typeof encodeFrame>[0]) => Queue.offer(incoming, encodeFrame(frame))
        return {
          id: `scripted-${shard.hellos.length}`,
          peer: {},
          send: (bytes) =>
            Effect.gen(function*() {
              if ((yield* Effect.orDie(decodeFrame(bytes)))._tag !== "Hello") return
              shard.hellos.push(yield* Clock.currentTimeMillis)
              const answered = answer(shard.hellos.length)
              if (answered === "refuse") {
                yield* reply({ _tag: "ErrorFrame", code: "overloaded", message: "busy" })
                yield* Queue.end(incoming)
                return
              }
              yield* reply({ _tag: "Welcome", sessionId: "s" as never, serverTime: 0, globalVersion: 0 })
              if (answered === "welcome-and-close") yield* Queue.end(incoming)
              if (answered === "welcome-for-two-minutes") {
                yield* Effect.forkDetach(Effect.andThen(Effect.sleep("2 minutes"), Queue.end(incoming)))
              }
            }),
          incoming: Stream.fromQueue(incoming),
          close: Effect.asVoid(Queue.end(incoming))
        }
      })
  }
  return { shard, transport }
}

/** A SyncClient (and its test brain) on `transport`, for the scope. */
const clientOn = (transport: SyncTransport["Service"], timing: Partial<SyncClientConfig>) =>
  Layer.build(
    client(1, timing).pipe(
      Layer.provideMerge(OmegaBrain.layerTest({ ...defaultBrainConfig, runLearningLoops: false })),
      Layer.provide(Layer.succeed(SyncTransport, transport))
    )
  )

/** Gaps between consecutive times, in seconds. */
const gaps = (times: ReadonlyArray<number>) =>
  Arr.zipWith(times.slice(1), times, (later, earlier) => (later - earlier) / 1000)

/** Asserts `actual` is `expected` give or take the ±20% jitter. */
const assertJittered = (actual: number, expected: number, message: string) => {
  assert.isAtLeast(actual, expected * 0.8, message)
  assert.isAtMost(actual, expected * 1.2, message)
}

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
        // The shard notes the delta before its DeltaAck reaches the TV.
        for (let i = 0; i < 50 && (yield* brain.pendingDeltas).length > 0; i++) yield* Effect.sleep(Duration.millis(20))
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

  it.effect("backs off while the shard refuses, and starts over once a session lasted", () =>
    Effect.gen(function*() {
      // Refused four times, welcomed for two minutes (longer than reconnectMax), then refused again.
      const { shard, transport } = scriptedShard((n) => n === 5 ? "welcome-for-two-minutes" : "refuse")
      yield* clientOn(transport, { reconnectBase: "1 second", reconnectMax: "1 minute" })
      while (shard.hellos.length < 8) yield* TestClock.adjust("1 second")
      // The session reset the backoff: 1 s after it, then 1 s and 2 s between refusals again.
      const expected = [1, 2, 4, 8, 120 + 1, 1, 2]
      const waited = gaps(shard.hellos)
      assert.strictEqual(waited.length, expected.length)
      for (const [i, [actual, wanted]] of Arr.zip(waited, expected).entries()) {
        if (i === 4) assert.closeTo(actual, wanted, 0.5, "two minutes of session, then the first delay")
        else assertJittered(actual, wanted, `wait before attempt ${i + 2}`)
      }
    }).pipe(Effect.scoped))

  it.effect("keeps backing off from a shard that welcomes sessions and drops them at once", () =>
    Effect.gen(function*() {
      const { shard, transport } = scriptedShard(() => "welcome-and-close")
      yield* clientOn(transport, { reconnectBase: "1 second", reconnectMax: "1 minute" })
      while (shard.hellos.length < 6) yield* TestClock.adjust("1 second")
      const expected = [1, 2, 4, 8, 16]
      const waited = gaps(shard.hellos)
      for (const [i, [actual, wanted]] of Arr.zip(waited, expected).entries()) {
        assertJittered(actual, wanted, `wait before attempt ${i + 2}`)
      }
    }).pipe(Effect.scoped))

  it.effect("keeps reconnect delays jittered at the cap, so TVs do not come back in lockstep", () =>
    Effect.gen(function*() {
      const { shard, transport } = scriptedShard(() => "refuse")
      yield* clientOn(transport, { reconnectBase: "1 second", reconnectMax: "4 seconds" })
      while (shard.hellos.length < 20) yield* TestClock.adjust("1 second")
      const atCap = gaps(shard.hellos).slice(3)
      for (const waited of atCap) assertJittered(waited, 4, "a delay at the cap")
      assert.isAbove(new Set(atCap).size, atCap.length / 2, "delays at the cap differ from one another")
    }).pipe(Effect.scoped))

  it.effect("resolves awaitConnected when a refused attempt is followed by a welcomed one", () =>
    Effect.gen(function*() {
      const { shard, transport } = scriptedShard((n) => n === 1 ? "refuse" : "welcome")
      shard.online = false
      const sync = Context.get(yield* clientOn(transport, { reconnectBase: "1 second" }), SyncClient)
      // Waiting since before the first Hello, which the shard refuses.
      const waiting = yield* Effect.forkChild(sync.awaitConnected)
      yield* Effect.yieldNow
      shard.online = true
      while (shard.hellos.length < 2) yield* TestClock.adjust("1 second")
      assert.isTrue((yield* sync.status).connected)
      const waited = waiting.pollUnsafe()
      assert.isTrue(waited !== undefined && Exit.isSuccess(waited), "the early waiter saw the welcome")
    }).pipe(Effect.scoped))

  it.effect("ends a session whose DeltaAck does not come, reconnects and has the delta acknowledged", () =>
    Effect.gen(function*() {
      const transport = Context.get(yield* Layer.build(SyncTransport.layerMemory), SyncTransport)
      const port = 47_003
      // The first session never acknowledges (a half-open path); the next one does.
      const uploads: Array<{ session: number; version: number }> = []
      let sessions = 0
      yield* transport.listen({ port }, (connection) => {
        let session = 0
        return Stream.runForEach(connection.incoming, (bytes) =>
          Effect.gen(function*() {
            const frame = yield* decodeFrame(bytes)
            if (frame._tag === "Hello") {
              session = ++sessions
              yield* connection.send(
                encodeFrame({ _tag: "Welcome", sessionId: "s" as never, serverTime: 0, globalVersion: 0 })
              )
            } else if (frame._tag === "DeltaUpload") {
              uploads.push({ session, version: frame.delta.version })
              if (session === 1) return
              yield* connection.send(encodeFrame({
                _tag: "DeltaAck",
                version: frame.delta.version,
                accepted: frame.delta.added.length + frame.delta.updated.length,
                duplicate: false
              }))
            }
          })).pipe(Effect.ignore)
      })
      const tv = yield* Layer.build(
        client(port, { ackTimeout: "1 second", reconnectBase: "100 millis", reconnectMax: "1 second" }).pipe(
          Layer.provideMerge(OmegaBrain.layerTest({ ...defaultBrainConfig, runLearningLoops: false })),
          Layer.provide(Layer.succeed(SyncTransport, transport))
        )
      )
      const brain = Context.get(tv, OmegaBrain)
      const sync = Context.get(tv, SyncClient)
      const seen: Array<SyncEvent> = []
      yield* (yield* sync.events).pipe(
        Stream.runForEach((event) => Effect.sync(() => seen.push(event))),
        Effect.forkScoped
      )
      // Learned before the session opens, so its replay pushes it.
      for (let n = 0; n < 6; n++) yield* brain.observe(watch(n))
      // The memory transport runs on real promises: step the clock and let them settle in between.
      for (let i = 0; i < 500 && (yield* sync.status).deltasAcknowledged === 0; i++) {
        yield* TestClock.adjust("50 millis")
        yield* TestClock.withLive(Effect.sleep("2 millis"))
      }
      assert.deepStrictEqual(uploads, [{ session: 1, version: 6 }, { session: 2, version: 6 }])
      assert.strictEqual((yield* brain.pendingDeltas).length, 0, "the re-sent delta was acknowledged")
      assert.deepStrictEqual(
        seen.filter((e) => e._tag === "Disconnected"),
        [{ _tag: "Disconnected", reason: "error", message: "no DeltaAck for version 6" }]
      )
      const status = yield* sync.status
      assert.isTrue(status.connected)
      assert.strictEqual(status.sessions, 2)
      assert.strictEqual(status.deltasAcknowledged, 1)
    }).pipe(Effect.scoped))
})
