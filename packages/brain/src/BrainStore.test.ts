import { assert, describe, it } from "@effect/vitest"
import {
  type ContentEmbedding,
  type ContentId,
  EMBEDDING_DIMENSIONS,
  type GlobalPattern,
  type PatternDelta,
  type PatternId,
  type SharedPattern,
  type TrendSignal,
  type ViewingEvent
} from "@omega/protocol"
import Database from "better-sqlite3"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { BrainStore, type LocalPattern } from "./BrainStore.ts"

const T0 = 1_700_000_000_000

/** A deterministic embedding with a different direction per seed. */
const embedding = (seed: number) => {
  const v = new Float32Array(EMBEDDING_DIMENSIONS)
  for (let i = 0; i < v.length; i++) v[i] = Math.sin(seed * 7.3 + i * 0.11)
  return v
}

const event = (n: number, contentId = `item-${n}`): ViewingEvent => ({
  contentId: contentId as ContentId,
  title: `Title ${n}`,
  genres: ["Drama", "Mystery"],
  watchedAt: T0 + n * 60_000,
  watchShare: 0.8,
  context: { timeOfDay: "evening", dayType: "weekday", recentWatches: ["item-0" as ContentId], mood: "relaxed" }
})

const pattern = (id: string, version: number, overrides: Partial<LocalPattern> = {}): LocalPattern => ({
  id: id as PatternId,
  embedding: embedding(version),
  successRate: 0.75,
  sampleCount: 2.5,
  context: { timeOfDay: "evening", dayType: "weekday" },
  createdAt: T0,
  updatedAt: T0 + version,
  version,
  createdVersion: version,
  exemplar: `item-${version}` as ContentId,
  ...overrides
})

const removal = (id: string, version: number) => ({ id: id as PatternId, version })

const shared = (id: string, seed: number): SharedPattern => ({
  id: id as PatternId,
  embedding: embedding(seed),
  successRate: 0.9,
  sampleCount: 4,
  context: { mood: "social" }
})

const delta = (baseVersion: number, version: number, added: ReadonlyArray<SharedPattern> = []): PatternDelta => ({
  baseVersion,
  version,
  added,
  updated: [],
  removed: []
})

const globalPattern = (id: string, seed: number): GlobalPattern => ({
  id: id as PatternId,
  embedding: embedding(seed),
  successRate: 0.8,
  sampleCount: 120,
  deviceCount: 9,
  context: { timeOfDay: "night" }
})

const trend = (contentId: string, region: string, score: number): TrendSignal => ({
  contentId: contentId as ContentId,
  region,
  score,
  velocity: -0.5
})

const catalogItem = (n: number): ContentEmbedding => ({
  contentId: `item-${n}` as ContentId,
  title: `Title ${n}`,
  genres: ["Drama"],
  embedding: embedding(100 + n)
})

const versionsOf = (entries: ReadonlyArray<{ readonly delta: PatternDelta }>) => entries.map((e) => e.delta.version)

/** The same bits, not just equal numbers (tells -0 from 0). */
const assertSameBits = (actual: Float32Array, expected: Float32Array) => {
  assert.instanceOf(actual, Float32Array)
  assert.deepStrictEqual(
    new Uint8Array(actual.buffer, actual.byteOffset, actual.byteLength),
    new Uint8Array(expected.buffer, expected.byteOffset, expected.byteLength)
  )
}

/** A fresh in-memory store per test. */
const withMemoryStore = <A, E>(body: Effect.Effect<A, E, BrainStore>) => Effect.provide(body, BrainStore.layerTest)

const tempDir = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "brain-store-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
)

/** Reads the file with a separate connection, outside BrainStore. */
const inspect = <A>(path: string, read: (db: Database.Database) => A) =>
  Effect.acquireUseRelease(
    Effect.sync(() => new Database(path, { readonly: true })),
    (db) => Effect.sync(() => read(db)),
    (db) => Effect.sync(() => db.close())
  )

const TABLES = [
  "catalog",
  "collective",
  "cowatch",
  "events",
  "meta",
  "outbox",
  "patterns",
  "tombstones",
  "trends",
  "watched"
]

describe("BrainStore on a file", () => {
  it.effect("migrates once: reopening keeps every table and row, and the file is in WAL mode", () =>
    Effect.gen(function*() {
      const path = Path.join(yield* tempDir, "brain.db")
      const open = (synchronous: "normal" | "full") => <A, E>(body: Effect.Effect<A, E, BrainStore>) =>
        Effect.provide(body, BrainStore.layer({ path, synchronous }))

      yield* open("normal")(Effect.gen(function*() {
        const s = yield* BrainStore
        yield* s.recordObservation(event(1), pattern("p-a", 1))
        yield* s.upsertCatalog([catalogItem(1)])
      }))
      const first = yield* inspect(path, (db) => ({
        journal: db.pragma("journal_mode", { simple: true }),
        schema: db.pragma("user_version", { simple: true }),
        tables: db.prepare<[], { name: string }>(
          `select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by name`
        ).all().map((row) => row.name)
      }))
      assert.strictEqual(first.journal, "wal")
      assert.deepStrictEqual(first.tables, TABLES)

      // A second and third open must neither re-run a migration (it would fail on "table exists") nor lose data.
      for (const [round, synchronous] of [[2, "full"], [3, "normal"]] as const) {
        const snapshot = yield* open(synchronous)(Effect.gen(function*() {
          const s = yield* BrainStore
          const before = yield* s.load(10)
          yield* s.recordObservation(event(round), pattern("p-a", round, { createdVersion: 1 }))
          return before
        }))
        assert.strictEqual(snapshot.versions.local, round - 1)
        assert.deepStrictEqual(
          snapshot.recentEvents.map((e) => e.contentId as string),
          ["item-1", "item-2"].slice(0, round - 1)
        )
        assert.strictEqual(snapshot.catalog.length, 1)
        const again = yield* inspect(path, (db) => ({
          journal: db.pragma("journal_mode", { simple: true }),
          schema: db.pragma("user_version", { simple: true }),
          tables: db.prepare<[], { name: string }>(
            `select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by name`
          ).all().map((row) => row.name)
        }))
        assert.deepStrictEqual(again, first)
      }

      const final = yield* open("normal")(Effect.flatMap(BrainStore, (s) => s.load(10)))
      assert.strictEqual(final.versions.local, 3)
      assert.strictEqual(final.recentEvents.length, 3)
      assert.strictEqual(final.patterns.length, 1)
      assert.strictEqual(final.patterns[0]!.version, 3)
      assert.strictEqual(final.patterns[0]!.createdVersion, 1)
    }))

  it.effect("gives a database from before the tombstone index that index when it opens", () =>
    Effect.gen(function*() {
      const path = Path.join(yield* tempDir, "brain.db")
      const indexes = (db: Database.Database) =>
        db.prepare<[], { name: string }>(
          `select name from sqlite_master where type = 'index' and tbl_name = 'tombstones' and name not like 'sqlite_%'`
        ).all().map((row) => row.name)
      yield* Effect.provide(Effect.asVoid(BrainStore), BrainStore.layer({ path }))
      // Back to the schema before the index, as a TV updated from an older release has it.
      const schema = yield* Effect.acquireUseRelease(
        Effect.sync(() => new Database(path)),
        (db) =>
          Effect.sync(() => {
            db.exec(`drop index tombstones_by_version`)
            const current = db.pragma("user_version", { simple: true }) as number
            db.pragma(`user_version = ${current - 1}`)
            return current
          }),
        (db) => Effect.sync(() => db.close())
      )
      yield* Effect.provide(Effect.asVoid(BrainStore), BrainStore.layer({ path }))
      const after = yield* inspect(path, (db) => ({
        schema: db.pragma("user_version", { simple: true }),
        indexes: indexes(db)
      }))
      assert.deepStrictEqual(after, { schema, indexes: ["tombstones_by_version"] })
    }))

  it.effect("refuses a file that is not a brain database with a StoreError and leaves its bytes alone", () =>
    Effect.gen(function*() {
      const path = Path.join(yield* tempDir, "notes.db")
      const bytes = Buffer.from("these are someone's notes, not a SQLite database\n".repeat(200))
      Fs.writeFileSync(path, bytes)
      const error = yield* Effect.flip(Effect.provide(Effect.asVoid(BrainStore), BrainStore.layer({ path })))
      assert.strictEqual(error._tag, "StoreError")
      assert.strictEqual(error.operation, "open")
      assert.deepStrictEqual(Fs.readFileSync(path), bytes)
    }))
})

describe("BrainStore", () => {
  it.effect("recordObservation stores the event, the pattern and the local version; load returns them", () =>
    withMemoryStore(Effect.gen(function*() {
      const s = yield* BrainStore
      const empty = yield* s.load(10)
      assert.strictEqual(empty.versions.local, 0)
      assert.strictEqual(empty.versions.acknowledged, 0)
      assert.strictEqual(empty.versions.global, 0)
      assert.deepStrictEqual(empty.recentEvents, [])
      assert.deepStrictEqual(empty.patterns, [])

      const events = [event(1), event(2), event(3, "item-1"), event(4), event(5)]
      const a5 = pattern("p-a", 5, { createdVersion: 1, sampleCount: 3.25, exemplar: undefined })
      const b4 = pattern("p-b", 4, { createdVersion: 2, successRate: 0.125 })
      const written = [pattern("p-a", 1), pattern("p-b", 2), pattern("p-a", 3, { createdVersion: 1 }), b4, a5]
      for (let i = 0; i < events.length; i++) yield* s.recordObservation(events[i]!, written[i]!)

      const snapshot = yield* s.load(3)
      assert.strictEqual(snapshot.versions.local, 5)
      // The newest three, oldest first, exactly as recorded.
      assert.deepStrictEqual(snapshot.recentEvents, events.slice(2))
      assert.deepStrictEqual((yield* s.load(10)).recentEvents, events)
      assert.deepStrictEqual((yield* s.load(0)).recentEvents, [])
      assert.strictEqual(yield* s.eventCount, 5)
      assert.sameMembers([...snapshot.watched], ["item-1", "item-2", "item-4", "item-5"])

      const byId = new Map(snapshot.patterns.map((p) => [p.id as string, p]))
      assert.strictEqual(byId.size, 2)
      for (const expected of [a5, b4]) {
        const actual = byId.get(expected.id)!
        assert.deepStrictEqual(actual, expected)
        assertSameBits(actual.embedding, expected.embedding)
      }
      assert.isUndefined(byId.get("p-a")!.exemplar)
    })))

  it.effect("rewritePatterns updates and deletes patterns and leaves tombstones that removedSince lists by version", () =>
    withMemoryStore(Effect.gen(function*() {
      const s = yield* BrainStore
      for (const [n, id] of ["p-a", "p-m", "p-z", "p-k"].entries()) {
        yield* s.recordObservation(event(n + 1), pattern(id, n + 1))
      }
      const changedA = pattern("p-a", 5, { createdVersion: 1, successRate: 0.5, sampleCount: 1.25 })
      // Ids sort the other way round from versions, so only ordering by version gives z, m, k.
      yield* s.rewritePatterns([changedA], [removal("p-z", 5)], 5)
      yield* s.rewritePatterns([], [removal("p-m", 6)], 6)
      yield* s.rewritePatterns([], [removal("p-k", 7)], 7)

      assert.deepStrictEqual(yield* s.removedSince(0), [
        { id: "p-z" as PatternId, version: 5 },
        { id: "p-m" as PatternId, version: 6 },
        { id: "p-k" as PatternId, version: 7 }
      ])
      assert.deepStrictEqual(yield* s.removedSince(5), [
        { id: "p-m" as PatternId, version: 6 },
        { id: "p-k" as PatternId, version: 7 }
      ])
      assert.deepStrictEqual(yield* s.removedSince(7), [])

      const snapshot = yield* s.load(10)
      assert.strictEqual(snapshot.versions.local, 7)
      assert.deepStrictEqual(snapshot.patterns, [changedA])
      // Events are history, not patterns: rewriting patterns keeps them all.
      assert.strictEqual(yield* s.eventCount, 4)
    })))

  it.effect("the outbox keeps deltas by version until acknowledged, and acknowledged never goes backwards", () =>
    withMemoryStore(Effect.gen(function*() {
      const s = yield* BrainStore
      yield* s.enqueueDelta(delta(5, 8), T0 + 3)
      yield* s.enqueueDelta(delta(0, 3), T0 + 1)
      yield* s.enqueueDelta(delta(3, 5), T0 + 2)
      // Same version again: replaces the entry instead of adding one.
      const replacement = delta(3, 5, [shared("p-x", 1)])
      yield* s.enqueueDelta(replacement, T0 + 4)

      const all = yield* s.outbox
      assert.deepStrictEqual(versionsOf(all), [3, 5, 8])
      assert.deepStrictEqual(all.map((e) => e.createdAt), [T0 + 1, T0 + 4, T0 + 3])
      assert.deepStrictEqual(all[1]!.delta, replacement)

      yield* s.acknowledge(5)
      assert.deepStrictEqual(versionsOf(yield* s.outbox), [8])
      assert.strictEqual((yield* s.load(0)).versions.acknowledged, 5)

      yield* s.acknowledge(3)
      assert.deepStrictEqual(versionsOf(yield* s.outbox), [8])
      assert.strictEqual((yield* s.load(0)).versions.acknowledged, 5)

      yield* s.acknowledge(8)
      assert.deepStrictEqual(yield* s.outbox, [])
      assert.strictEqual((yield* s.load(0)).versions.acknowledged, 8)
    })))

  it.effect("acknowledge prunes the tombstones it covers and keeps the ones not yet acknowledged", () =>
    withMemoryStore(Effect.gen(function*() {
      const s = yield* BrainStore
      for (const [n, id] of ["p-a", "p-b", "p-c"].entries()) {
        yield* s.recordObservation(event(n + 1), pattern(id, n + 1))
      }
      yield* s.rewritePatterns([], [removal("p-a", 4), removal("p-b", 5), removal("p-c", 6)], 6)
      yield* s.acknowledge(5)
      assert.deepStrictEqual(yield* s.removedSince(0), [removal("p-c", 6)])
      yield* s.acknowledge(6)
      assert.deepStrictEqual(yield* s.removedSince(0), [])
    })))

  it.effect("deltas come back from the outbox bit-exactly, Float32 embeddings included", () =>
    withMemoryStore(Effect.gen(function*() {
      const s = yield* BrainStore
      const awkward = embedding(3)
      awkward.set([-0, 1e-45, -1e-45, 1.1754943508222875e-38, 3.4028234663852886e38, -3.4028234663852886e38, 1 / 3])
      // A view into a larger buffer, at an offset: only its own 384 floats may be stored.
      const backing = new Float32Array(EMBEDDING_DIMENSIONS * 3)
      backing.fill(42)
      const view = backing.subarray(EMBEDDING_DIMENSIONS, 2 * EMBEDDING_DIMENSIONS)
      view.set(embedding(9))
      const sent: PatternDelta = {
        baseVersion: 7,
        version: 12,
        added: [{ ...shared("p-add", 1), embedding: awkward, successRate: 0.1 + 0.2, sampleCount: 1e-300 }],
        updated: [{ ...shared("p-upd", 2), embedding: view, sampleCount: 123_456.789 }],
        removed: ["p-gone" as PatternId, "p-old" as PatternId]
      }
      yield* s.enqueueDelta(sent, T0)
      const [entry] = yield* s.outbox
      const got = entry!.delta
      assert.deepStrictEqual(got, sent)
      assertSameBits(got.added[0]!.embedding, awkward)
      assertSameBits(got.updated[0]!.embedding, view)
      assert.strictEqual(got.added[0]!.successRate, 0.1 + 0.2)
      assert.strictEqual(got.added[0]!.sampleCount, 1e-300)

      // What was read is a copy: changing it, or the original, does not change what is stored.
      got.added[0]!.embedding[0] = 5
      awkward[1] = 6
      const [again] = yield* s.outbox
      assert.isTrue(Object.is(again!.delta.added[0]!.embedding[0], -0))
      assert.strictEqual(again!.delta.added[0]!.embedding[1], Math.fround(1e-45))
    })))

  it.effect("saveGlobal replaces the collective patterns and trends and records the global version", () =>
    withMemoryStore(Effect.gen(function*() {
      const s = yield* BrainStore
      yield* s.saveGlobal(
        1,
        [globalPattern("g-1", 1), globalPattern("g-2", 2)],
        [trend("item-1", "eu-west", 3), trend("item-2", "eu-west", 2)]
      )
      const first = yield* s.load(0)
      assert.strictEqual(first.versions.global, 1)
      assert.sameMembers(first.collective.map((p) => p.id as string), ["g-1", "g-2"])
      assert.strictEqual(first.trends.length, 2)

      const g3 = globalPattern("g-3", 3)
      const t3 = trend("item-3", "us-east", 7.5)
      yield* s.saveGlobal(2, [g3], [t3])
      const second = yield* s.load(0)
      assert.strictEqual(second.versions.global, 2)
      assert.deepStrictEqual(second.collective, [g3])
      assertSameBits(second.collective[0]!.embedding, g3.embedding)
      assert.deepStrictEqual(second.trends, [t3])

      yield* s.saveGlobal(3, [], [])
      const third = yield* s.load(0)
      assert.strictEqual(third.versions.global, 3)
      assert.deepStrictEqual(third.collective, [])
      assert.deepStrictEqual(third.trends, [])
    })))

  it.effect("saveGlobal keeps the last of patterns that repeat an id instead of failing", () =>
    withMemoryStore(Effect.gen(function*() {
      const s = yield* BrainStore
      const last = { ...globalPattern("g-1", 3), deviceCount: 9 }
      yield* s.saveGlobal(1, [globalPattern("g-1", 1), globalPattern("g-2", 2), last], [])
      const saved = yield* s.load(0)
      assert.strictEqual(saved.versions.global, 1)
      assert.deepStrictEqual(saved.collective.find((p) => p.id === "g-1"), last)
      assert.sameMembers(saved.collective.map((p) => p.id as string), ["g-1", "g-2"])
    })))

  it.effect("upsertCatalog adds and updates items", () =>
    withMemoryStore(Effect.gen(function*() {
      const s = yield* BrainStore
      yield* s.upsertCatalog([catalogItem(1), catalogItem(2)])
      const renamed = { ...catalogItem(2), title: "Renamed", genres: ["Comedy", "Drama"], embedding: embedding(77) }
      yield* s.upsertCatalog([renamed])
      // Start-up loads items without embeddings; those are read one by one or all at once for a rebuild.
      const { catalog } = yield* s.load(0)
      const byId = new Map(catalog.map((c) => [c.contentId as string, c]))
      assert.strictEqual(byId.size, 2)
      const { embedding: _one, ...item1 } = catalogItem(1)
      const { embedding: _two, ...item2 } = renamed
      assert.deepStrictEqual(byId.get("item-1"), item1)
      assert.deepStrictEqual(byId.get("item-2"), item2)
      assert.deepStrictEqual(yield* s.catalogEmbedding(renamed.contentId), renamed.embedding)
      assert.isUndefined(yield* s.catalogEmbedding("item-9" as ContentId))
      const full = new Map((yield* s.catalogWithEmbeddings).map((c) => [c.contentId as string, c]))
      assert.deepStrictEqual(full.get("item-1"), catalogItem(1))
      assert.deepStrictEqual(full.get("item-2"), renamed)
    })))

  it.effect("trimEvents keeps the newest N events and every watched item", () =>
    withMemoryStore(Effect.gen(function*() {
      const s = yield* BrainStore
      const events = Array.from({ length: 10 }, (_, i) => event(i + 1))
      for (const [i, e] of events.entries()) yield* s.recordObservation(e, pattern("p-a", i + 1, { createdVersion: 1 }))

      assert.strictEqual(yield* s.trimEvents(4), 6)
      assert.strictEqual(yield* s.eventCount, 4)
      const snapshot = yield* s.load(100)
      assert.deepStrictEqual(snapshot.recentEvents, events.slice(6))
      assert.sameMembers([...snapshot.watched], events.map((e) => e.contentId))
      assert.strictEqual(snapshot.versions.local, 10)

      assert.strictEqual(yield* s.trimEvents(4), 0)
      assert.strictEqual(yield* s.trimEvents(100), 0)
      assert.strictEqual(yield* s.eventCount, 4)

      // New events after a trim are still the newest.
      yield* s.recordObservation(event(11), pattern("p-a", 11, { createdVersion: 1 }))
      assert.strictEqual(yield* s.trimEvents(2), 3)
      assert.deepStrictEqual(
        (yield* s.load(100)).recentEvents.map((e) => e.contentId as string),
        ["item-10", "item-11"]
      )
      assert.strictEqual((yield* s.load(0)).watched.length, 11)

      // A bad count is refused rather than read by SQLite as "keep nothing".
      for (const bad of [-1, 2.5, NaN]) {
        const error = yield* Effect.flip(s.trimEvents(bad))
        assert.strictEqual(error._tag, "StoreError")
        assert.strictEqual(error.operation, "trimEvents")
      }
      assert.strictEqual(yield* s.eventCount, 2)
    })))

  it.effect("a write SQLite rejects fails with a StoreError and changes nothing already stored", () =>
    withMemoryStore(Effect.gen(function*() {
      const s = yield* BrainStore
      yield* s.recordObservation(event(1), pattern("p-a", 1))
      yield* s.recordObservation(event(2), pattern("p-b", 2))
      yield* s.enqueueDelta(delta(0, 2), T0)
      const before = yield* s.load(100)

      // A NaN from a broken learning step: SQLite stores NaN as NULL, which the NOT NULL column refuses.
      const broken = pattern("p-a", 3, { createdVersion: 1, successRate: NaN })
      const failed = yield* Effect.flip(s.recordObservation(event(3), broken))
      assert.strictEqual(failed._tag, "StoreError")
      assert.strictEqual(failed.operation, "recordObservation")
      assert.include(failed.message, "NOT NULL")

      // The event went in before the pattern failed; the transaction must have taken it back out.
      const after = yield* s.load(100)
      assert.deepStrictEqual(after, before)
      assert.strictEqual(yield* s.eventCount, 2)
      assert.notInclude(after.watched.map((id): string => id), "item-3")

      // A rewrite with one bad pattern among good ones applies none of it: no update, no delete, no tombstone.
      const rewrite = yield* Effect.flip(s.rewritePatterns(
        [pattern("p-a", 4, { createdVersion: 1, successRate: 0.1 }), { ...broken, id: "p-b" as PatternId }],
        [removal("p-a", 4)],
        4
      ))
      assert.strictEqual(rewrite.operation, "rewritePatterns")
      assert.deepStrictEqual(yield* s.load(100), before)
      assert.deepStrictEqual(yield* s.removedSince(0), [])
      assert.strictEqual((yield* s.outbox).length, 1)

      // The store still works afterwards.
      yield* s.recordObservation(event(3), pattern("p-a", 3, { createdVersion: 1 }))
      assert.strictEqual((yield* s.load(0)).versions.local, 3)
    })))
})
