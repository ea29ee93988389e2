/**
 * The Promise SDK end to end: TVs opened with `OmegaTv.open` hold real QUIC sessions to a shard on
 * PGlite, push their deltas, receive each other's aggregated patterns by server push, and a TV
 * reopened from its SQLite file carries on where it stopped (its acknowledged version included).
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { makeHashing } from "@omega/brain"
import { Ingestion, ShardStorage } from "@omega/constellation"
import type { ContentEmbedding, ContentId } from "@omega/protocol"
import { type ContentInput, OmegaTv, type TvEvent } from "@omega/sdk"
import { Context, Duration, Effect } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { eventually, testShardForSdk } from "./support.ts"

const SECRET = "sdk-fleet-secret"
const REGION = "eu-west"
const hashing = makeHashing()

// The TVs get titles and genres only: the SDK embeds them with the brain's own (hashing) embedder.
const titles: Array<ContentInput> = ["Comedy", "Horror"].flatMap((genre) =>
  ["Harbor", "Winter", "Signal", "Meadow", "Copper"].map((word, i) => ({
    contentId: `${genre.toLowerCase()}-${i}`,
    title: `${genre} ${word} (199${i})`,
    genres: [genre]
  }))
)
// The shard is given the same items with embeddings, as POST /api/v1/content would give them.
const catalog: Array<ContentEmbedding> = titles.map((t) => ({
  contentId: t.contentId as ContentId,
  title: t.title,
  genres: t.genres,
  embedding: Effect.runSync(hashing.embedContent(t))
}))

const directory = mkdtempSync(join(tmpdir(), "omega-sdk-e2e-"))
afterEach(() => rmSync(directory, { recursive: true, force: true }))

describe("the Promise SDK against a shard over QUIC", () => {
  it.live(
    "TVs sync through OmegaTv, learn each other's patterns, and resume from their files",
    () =>
      Effect.gen(function*() {
        const { context, tvOptions } = yield* testShardForSdk({
          shardId: "sdk-e2e",
          fleetSecret: SECRET,
          region: REGION,
          snapshotEvery: Duration.millis(200)
        })
        const ingestion = Context.get(context, Ingestion)
        const storage = Context.get(context, ShardStorage)
        yield* ingestion.addContent(catalog)
        // Each TV is closed with the test's scope, so a failed assertion leaves no session or file open.
        const open = (n: number) =>
          Effect.acquireRelease(
            Effect.promise(() =>
              OmegaTv.open({ path: join(directory, `tv-${n}.db`), learningLoops: false, shard: tvOptions(`tv-${n}`) })
            ),
            (tv) => Effect.promise(() => tv.close())
          )

        // Four TVs whose viewers watch comedies, each twice: a pattern worth sharing on every TV.
        const tvs: Array<OmegaTv> = []
        // What the app of each TV is told; TV 3's app also has a listener that throws, and one it removed.
        const events: Array<Array<TvEvent>> = []
        let removedCalls = 0
        let accepted = 0
        for (let n = 0; n < 4; n++) {
          const tv = yield* open(n)
          tvs.push(tv)
          const told: Array<TvEvent> = []
          events.push(told)
          if (n === 3) {
            tv.onEvent(() => {
              throw new Error("a bug in the app")
            })
            tv.onEvent(() => removedCalls++)()
          }
          tv.onEvent((event) => told.push(event))
          yield* Effect.promise(async () => {
            await tv.addContent(titles)
            for (const [i, id] of ["comedy-0", "comedy-1", "comedy-2", "comedy-0", "comedy-1"].entries()) {
              const item = titles.find((t) => t.contentId === id)!
              await tv.observe({
                ...item,
                watchedAt: 1_700_000_000_000 + i * 3_600_000,
                watchShare: 0.95,
                context: { timeOfDay: "evening", dayType: "weekday", recentWatches: [] }
              })
            }
            await tv.connected()
            const result = await tv.syncNow()
            assert.strictEqual(result.status, "acknowledged")
            if (result.status === "acknowledged") {
              assert.isFalse(result.duplicate)
              assert.isAbove(result.accepted, 0)
              accepted += result.accepted
            }
          })
        }
        assert.strictEqual((yield* storage.counts).loggedPatterns, accepted, "durable before acknowledged")

        // The shard's snapshot (groups of at least k = 3 devices) reaches every TV by server push.
        yield* ingestion.refresh(true)
        for (const tv of tvs) {
          yield* eventually(
            Effect.map(Effect.promise(() => tv.status()), (s) => s.brain.collectivePatterns > 0),
            "every TV has global patterns"
          )
        }
        // And each TV's app was told: its session opened, then the snapshot the brain took in.
        const collective = (yield* Effect.promise(() => tvs[0]!.status())).brain.collectivePatterns
        for (const told of events) {
          // Listeners are called on a fiber of their own, just after the brain took the update in.
          yield* eventually(
            Effect.sync(() => told.some((e) => e.type === "global-patterns")),
            "every app is told of the global patterns"
          )
          assert.deepStrictEqual(told[0], { type: "connected", session: 1 })
          assert.deepInclude(told.findLast((e) => e.type === "global-patterns"), { patterns: collective })
        }
        assert.strictEqual(removedCalls, 0, "a removed listener is not called")

        // A TV restarted from its file holds its acknowledged version: nothing is sent twice.
        const before = yield* Effect.promise(() => tvs[0]!.status())
        yield* Effect.promise(() => tvs[0]!.close())
        const reopened = yield* open(0)
        tvs[0] = reopened
        const after = yield* Effect.promise(async () => {
          await reopened.connected()
          return reopened.status()
        })
        assert.deepStrictEqual(after.brain.versions, before.brain.versions)
        assert.strictEqual(after.brain.pendingDeltas, 0)
        assert.deepStrictEqual(yield* Effect.promise(() => reopened.syncNow()), { status: "nothing-to-send" })
        assert.strictEqual((yield* storage.counts).loggedPatterns, accepted)

        const suggestions = yield* Effect.promise(() =>
          reopened.recommend({ timeOfDay: "evening", dayType: "weekday", recentWatches: ["comedy-0"] }, 3)
        )
        assert.lengthOf(suggestions, 3)
      }),
    60_000
  )
})
