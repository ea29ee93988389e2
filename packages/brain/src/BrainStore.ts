/**
 * Durable state of one TV brain in SQLite (better-sqlite3, WAL): viewing events, learned
 * patterns, catalog, collective patterns and trends, versions, and the outbox of deltas not
 * yet acknowledged. Every write is one transaction, so a crash at any point loses no
 * committed event and never leaves a pattern half-written.
 */
import {
  type ContentEmbedding,
  type ContentId,
  type CoWatchRow,
  type GlobalPattern,
  type PatternContext,
  type PatternDelta,
  type PatternId,
  type SharedPattern,
  type TrendSignal,
  type ViewingEvent,
  type ViewingPattern
} from "@omega/protocol"
import Database from "better-sqlite3"
import { Context, Data, Effect, Layer } from "effect"

/** A pattern as the brain keeps it: the protocol pattern plus what never leaves the TV. */
export interface LocalPattern extends ViewingPattern {
  /** Local version at which the pattern last changed. */
  readonly version: number
  /** Local version at which the pattern was created. */
  readonly createdVersion: number
  /** Last successfully watched item folded in; used to explain ("Because you watched X"). */
  readonly exemplar: ContentId | undefined
}

/** Versions that let a restarted brain continue where it left off. */
export interface BrainVersions {
  /** Bumped by every local pattern change. */
  readonly local: number
  /** Highest local version the constellation acknowledged. */
  readonly acknowledged: number
  /** Version of the last global patterns applied. */
  readonly global: number
  /** Bumped by every catalog change. */
  readonly catalog: number
  /** Version of the newest co-watch rows applied. */
  readonly coWatch: number
}

/** A catalog item without its embedding (those stay in SQLite and the index until needed). */
export interface CatalogItem {
  readonly contentId: ContentId
  readonly title: string
  readonly genres: ReadonlyArray<string>
}

/** Everything a brain loads at start-up. */
export interface BrainSnapshot {
  readonly versions: BrainVersions
  readonly patterns: ReadonlyArray<LocalPattern>
  readonly catalog: ReadonlyArray<CatalogItem>
  readonly collective: ReadonlyArray<GlobalPattern>
  readonly trends: ReadonlyArray<TrendSignal>
  /** Co-watch rows learned across the fleet, and the version of the newest applied. */
  readonly coWatch: ReadonlyArray<CoWatchRow>
  readonly watched: ReadonlyArray<ContentId>
  readonly recentEvents: ReadonlyArray<ViewingEvent>
}

/** A pattern deleted at a local version: its tombstone tells the constellation to drop it too. */
export interface Removal {
  readonly id: PatternId
  readonly version: number
}

/** A delta waiting in the outbox until the constellation acknowledges it. */
export interface OutboxEntry {
  readonly delta: PatternDelta
  readonly createdAt: number
}

export class BrainStore extends Context.Service<BrainStore, {
  /** The database file, or undefined for an in-memory store (nothing to keep beside it). */
  readonly location: string | undefined
  /** Reads everything needed to resume; `recentEvents` holds at most `recentLimit` events, oldest first. */
  readonly load: (recentLimit: number) => Effect.Effect<BrainSnapshot, StoreError>
  /** Durably records one viewing event and the pattern it changed, and bumps the local version. */
  readonly recordObservation: (event: ViewingEvent, pattern: LocalPattern) => Effect.Effect<void, StoreError>
  /**
   * Writes consolidated or decayed patterns and deletes merged/evicted ones, leaving a tombstone at
   * each removal's version, and records `version` as the local version.
   */
  readonly rewritePatterns: (
    changed: ReadonlyArray<LocalPattern>,
    removed: ReadonlyArray<Removal>,
    version: number
  ) => Effect.Effect<void, StoreError>
  /** Patterns removed after `sinceVersion`, oldest first (for a delta; acknowledged ones are pruned). */
  readonly removedSince: (sinceVersion: number) => Effect.Effect<ReadonlyArray<Removal>, StoreError>
  readonly upsertCatalog: (items: ReadonlyArray<ContentEmbedding>) => Effect.Effect<void, StoreError>
  /** The stored embedding of one catalog item. */
  readonly catalogEmbedding: (id: ContentId) => Effect.Effect<Float32Array | undefined, StoreError>
  /** Every catalog item with its embedding (rebuilding the catalog index). */
  readonly catalogWithEmbeddings: Effect.Effect<ReadonlyArray<ContentEmbedding>, StoreError>
  /** Replaces collective patterns and trends with a newer global version; a repeated id keeps the last. */
  readonly saveGlobal: (
    version: number,
    patterns: ReadonlyArray<GlobalPattern>,
    trends: ReadonlyArray<TrendSignal>
  ) => Effect.Effect<void, StoreError>
  /** Replaces the co-watch rows named (an empty row deletes one) and records `version`. */
  readonly saveCoWatch: (version: number, rows: ReadonlyArray<CoWatchRow>) => Effect.Effect<void, StoreError>
  /** Keeps a delta until it is acknowledged; replaces an entry of the same version. */
  readonly enqueueDelta: (delta: PatternDelta, createdAt: number) => Effect.Effect<void, StoreError>
  readonly outbox: Effect.Effect<ReadonlyArray<OutboxEntry>, StoreError>
  /** Drops outbox entries and tombstones up to `version` and records it as acknowledged. */
  readonly acknowledge: (version: number) => Effect.Effect<void, StoreError>
  /** Deletes all but the newest `keep` raw events (the watched set is kept separately). */
  readonly trimEvents: (keep: number) => Effect.Effect<number, StoreError>
  readonly eventCount: Effect.Effect<number, StoreError>
  /** Moves committed WAL pages into the database file without blocking writers (session loop). */
  readonly checkpoint: Effect.Effect<void, StoreError>
}>()("omega/brain/BrainStore") {
  /** A brain database file; `synchronous: "full"` also survives power loss at some cost per write. */
  static readonly layer = (options: { readonly path: string; readonly synchronous?: "normal" | "full" }) =>
    Layer.effect(BrainStore, make(options.path, options.synchronous ?? "normal"))

  /** An in-memory database, for tests and throw-away brains. */
  static readonly layerTest = Layer.effect(BrainStore, make(":memory:", "normal"))
}

/** SQLite failed; `operation` names what was being done. Nothing partial was committed. */
export class StoreError extends Data.TaggedError("StoreError")<{
  readonly operation: string
  readonly message: string
  readonly cause?: unknown
}> {}

const MIGRATIONS = [
  `create table meta (key text primary key, value integer not null)`,
  `create table events (
    seq integer primary key autoincrement,
    content_id text not null,
    watched_at integer not null,
    body text not null
  )`,
  `create table watched (content_id text primary key, last_at integer not null, views integer not null)`,
  `create table patterns (
    id text primary key,
    embedding blob not null,
    success_rate real not null,
    sample_count real not null,
    context text not null,
    exemplar text,
    created_at integer not null,
    updated_at integer not null,
    version integer not null,
    created_version integer not null
  )`,
  `create index patterns_by_version on patterns (version)`,
  `create table tombstones (id text primary key, version integer not null)`,
  `create table catalog (content_id text primary key, title text not null, genres text not null, embedding blob not null)`,
  `create table collective (
    id text primary key,
    embedding blob not null,
    success_rate real not null,
    sample_count real not null,
    device_count integer not null,
    context text not null
  )`,
  `create table trends (content_id text not null, region text not null, score real not null, velocity real not null,
    primary key (content_id, region))`,
  `create table outbox (version integer primary key, body text not null, created_at integer not null)`,
  `create table cowatch (content_id text primary key, neighbours text not null)`,
  `create index tombstones_by_version on tombstones (version)`
]

/** Opens (and migrates) the database at `path`. */
function make(path: string, synchronous: "normal" | "full") {
  return Effect.gen(function*() {
    const db = yield* Effect.acquireRelease(
      attempt("open", () => openDatabase(path, synchronous)),
      (opened) => Effect.sync(() => opened.close())
    )
    const statements = prepare(db)

    const tx = <A>(operation: string, body: () => A) => attempt(operation, () => db.transaction(body).immediate())

    const load = Effect.fn("BrainStore.load")(function*(recentLimit: number) {
      return yield* attempt("load", () => {
        const meta = new Map(statements.allMeta.all().map((row) => [row.key, row.value]))
        return {
          versions: {
            local: meta.get("local_version") ?? 0,
            acknowledged: meta.get("acknowledged_version") ?? 0,
            global: meta.get("global_version") ?? 0,
            catalog: meta.get("catalog_version") ?? 0,
            coWatch: meta.get("cowatch_version") ?? 0
          },
          patterns: rowsOf(statements.allPatterns, patternFromRow),
          catalog: rowsOf(statements.catalogItems, (row): CatalogItem => ({
            contentId: row.content_id as ContentId,
            title: row.title,
            genres: JSON.parse(row.genres) as Array<string>
          })),
          collective: rowsOf(statements.allCollective, (row) => ({
            id: row.id as PatternId,
            embedding: vectorFromBlob(row.embedding),
            successRate: row.success_rate,
            sampleCount: row.sample_count,
            deviceCount: row.device_count,
            context: JSON.parse(row.context) as PatternContext
          })),
          trends: statements.allTrends.all().map((row) => ({
            contentId: row.content_id as ContentId,
            region: row.region,
            score: row.score,
            velocity: row.velocity
          })),
          coWatch: rowsOf(statements.allCoWatch, (row): CoWatchRow => ({
            contentId: row.content_id as ContentId,
            neighbours: JSON.parse(row.neighbours) as CoWatchRow["neighbours"]
          })),
          watched: statements.allWatched.all().map((row) => row.content_id as ContentId),
          recentEvents: statements.recentEvents.all(recentLimit).reverse().map((row) => eventFromJson(row.body))
        } satisfies BrainSnapshot
      })
    })

    const recordObservation = Effect.fn("BrainStore.recordObservation")(
      function*(event: ViewingEvent, pattern: LocalPattern) {
        yield* tx("recordObservation", () => {
          statements.insertEvent.run(event.contentId, event.watchedAt, eventToJson(event))
          statements.upsertWatched.run(event.contentId, event.watchedAt)
          statements.upsertPattern.run(patternToRow(pattern))
          statements.setMeta.run("local_version", pattern.version)
        })
      }
    )

    const rewritePatterns = Effect.fn("BrainStore.rewritePatterns")(
      function*(changed: ReadonlyArray<LocalPattern>, removed: ReadonlyArray<Removal>, version: number) {
        yield* tx("rewritePatterns", () => {
          for (const pattern of changed) statements.upsertPattern.run(patternToRow(pattern))
          for (const removal of removed) {
            statements.deletePattern.run(removal.id)
            statements.insertTombstone.run(removal.id, removal.version)
          }
          statements.setMeta.run("local_version", version)
        })
      }
    )

    const removedSince = Effect.fn("BrainStore.removedSince")(function*(sinceVersion: number) {
      return yield* attempt(
        "removedSince",
        () =>
          statements.tombstonesSince.all(sinceVersion).map((row) => ({ id: row.id as PatternId, version: row.version }))
      )
    })

    const upsertCatalog = Effect.fn("BrainStore.upsertCatalog")(function*(items: ReadonlyArray<ContentEmbedding>) {
      yield* tx("upsertCatalog", () => {
        for (const item of items) {
          statements.upsertCatalog.run(
            item.contentId,
            item.title,
            JSON.stringify(item.genres),
            blobFromVector(item.embedding)
          )
        }
        statements.bumpMeta.run("catalog_version")
      })
    })

    const catalogEmbedding = (id: ContentId) =>
      attempt("catalogEmbedding", () => {
        const row = statements.catalogEmbedding.get(id)
        return row === undefined ? undefined : vectorFromBlob(row.embedding)
      })

    const catalogWithEmbeddings = attempt(
      "catalogWithEmbeddings",
      () =>
        statements.allCatalog.all().map((row): ContentEmbedding => ({
          contentId: row.content_id as ContentId,
          title: row.title,
          genres: JSON.parse(row.genres) as Array<string>,
          embedding: vectorFromBlob(row.embedding)
        }))
    )

    const saveGlobal = Effect.fn("BrainStore.saveGlobal")(
      function*(version: number, patterns: ReadonlyArray<GlobalPattern>, trends: ReadonlyArray<TrendSignal>) {
        yield* tx("saveGlobal", () => {
          statements.clearCollective.run()
          statements.clearTrends.run()
          for (const p of patterns) {
            statements.upsertCollective.run(
              p.id,
              blobFromVector(p.embedding),
              p.successRate,
              p.sampleCount,
              p.deviceCount,
              JSON.stringify(p.context)
            )
          }
          for (const t of trends) statements.upsertTrend.run(t.contentId, t.region, t.score, t.velocity)
          statements.setMeta.run("global_version", version)
        })
      }
    )

    const saveCoWatch = Effect.fn("BrainStore.saveCoWatch")(
      function*(version: number, rows: ReadonlyArray<CoWatchRow>) {
        yield* tx("saveCoWatch", () => {
          for (const row of rows) {
            if (row.neighbours.length === 0) statements.deleteCoWatch.run(row.contentId)
            else statements.upsertCoWatch.run(row.contentId, JSON.stringify(row.neighbours))
          }
          statements.setMetaMax.run("cowatch_version", version)
        })
      }
    )

    const enqueueDelta = Effect.fn("BrainStore.enqueueDelta")(function*(delta: PatternDelta, createdAt: number) {
      yield* attempt("enqueueDelta", () => statements.upsertOutbox.run(delta.version, deltaToJson(delta), createdAt))
    })

    const outbox = attempt("outbox", () =>
      statements.allOutbox.all().map((row): OutboxEntry => ({
        delta: deltaFromJson(row.body),
        createdAt: row.created_at
      })))

    const acknowledge = Effect.fn("BrainStore.acknowledge")(function*(version: number) {
      yield* tx("acknowledge", () => {
        statements.deleteOutboxUpTo.run(version)
        // The constellation has these removals: no later delta needs their tombstones.
        statements.deleteTombstonesUpTo.run(version)
        statements.setMetaMax.run("acknowledged_version", version)
      })
    })

    const trimEvents = Effect.fn("BrainStore.trimEvents")(function*(keep: number) {
      // SQLite reads a negative OFFSET as 0, which would delete every event.
      if (!(Number.isSafeInteger(keep) && keep >= 0)) {
        return yield* new StoreError({
          operation: "trimEvents",
          message: `keep must be a whole number >= 0, got ${keep}`
        })
      }
      return yield* attempt("trimEvents", () => statements.trimEvents.run(keep).changes)
    })

    const eventCount = attempt("eventCount", () => statements.countEvents.get()?.n ?? 0)

    const checkpoint = attempt("checkpoint", () => {
      db.pragma("wal_checkpoint(PASSIVE)")
    })

    return BrainStore.of({
      location: path === ":memory:" ? undefined : path,
      load,
      recordObservation,
      rewritePatterns,
      removedSince,
      upsertCatalog,
      catalogEmbedding,
      catalogWithEmbeddings,
      saveGlobal,
      saveCoWatch,
      enqueueDelta,
      outbox,
      acknowledge,
      trimEvents,
      eventCount,
      checkpoint
    })
  })
}

/**
 * Every row of a statement, converted one at a time: a brain of 10K patterns would otherwise hold
 * all its raw rows (a Buffer per embedding) beside their conversions while it opens.
 */
const rowsOf = <Row, A>(statement: Database.Statement<[], Row>, convert: (row: Row) => A): Array<A> => {
  const out: Array<A> = []
  for (const row of statement.iterate()) out.push(convert(row))
  return out
}

const attempt = <A>(operation: string, body: () => A) =>
  Effect.try({
    try: body,
    catch: (cause) =>
      new StoreError({ operation, message: cause instanceof Error ? cause.message : String(cause), cause })
  })

function openDatabase(path: string, synchronous: "normal" | "full"): Database.Database {
  const opened = new Database(path)
  try {
    opened.pragma("journal_mode = WAL")
    opened.pragma(`synchronous = ${synchronous}`)
    // SQLite's default checkpoint every 1,000 pages lands inside some observe and costs it
    // milliseconds; the brain checkpoints every session instead, with this as a backstop.
    opened.pragma("wal_autocheckpoint = 10000")
    opened.pragma("foreign_keys = on")
    // 2 MB of page cache, not better-sqlite3's 16 MB: the brain reads its tables once, when it
    // opens, and then writes small rows; the larger cache only held RSS (measured: +14 MB).
    opened.pragma("cache_size = -2000")
    const current = opened.pragma("user_version", { simple: true }) as number
    opened.transaction(() => {
      for (let i = current; i < MIGRATIONS.length; i++) opened.exec(MIGRATIONS[i]!)
      opened.pragma(`user_version = ${MIGRATIONS.length}`)
    }).immediate()
    return opened
  } catch (error) {
    opened.close()
    throw error
  }
}

interface PatternRow {
  readonly id: string
  readonly embedding: Buffer
  readonly success_rate: number
  readonly sample_count: number
  readonly context: string
  readonly exemplar: string | null
  readonly created_at: number
  readonly updated_at: number
  readonly version: number
  readonly created_version: number
}

function prepare(db: Database.Database) {
  return {
    allMeta: db.prepare<[], { key: string; value: number }>(`select key, value from meta`),
    setMeta: db.prepare<[string, number]>(
      `insert into meta (key, value) values (?, ?) on conflict (key) do update set value = excluded.value`
    ),
    bumpMeta: db.prepare<[string]>(
      `insert into meta (key, value) values (?, 1) on conflict (key) do update set value = value + 1`
    ),
    setMetaMax: db.prepare<[string, number]>(
      `insert into meta (key, value) values (?, ?)
       on conflict (key) do update set value = max(value, excluded.value)`
    ),
    insertEvent: db.prepare<[string, number, string]>(
      `insert into events (content_id, watched_at, body) values (?, ?, ?)`
    ),
    recentEvents: db.prepare<[number], { body: string }>(`select body from events order by seq desc limit ?`),
    countEvents: db.prepare<[], { n: number }>(`select count(*) as n from events`),
    trimEvents: db.prepare<[number]>(
      `delete from events where seq <= (select seq from events order by seq desc limit 1 offset ?)`
    ),
    upsertWatched: db.prepare<[string, number]>(
      `insert into watched (content_id, last_at, views) values (?, ?, 1)
       on conflict (content_id) do update set last_at = max(last_at, excluded.last_at), views = views + 1`
    ),
    // Oldest last watch first: the episodes tier reads the order as the history's (co-watch recency).
    allWatched: db.prepare<[], { content_id: string }>(`select content_id from watched order by last_at, content_id`),
    allPatterns: db.prepare<[], PatternRow>(`select * from patterns`),
    upsertPattern: db.prepare<[PatternRow]>(
      `insert into patterns (id, embedding, success_rate, sample_count, context, exemplar, created_at, updated_at, version,
         created_version)
       values (@id, @embedding, @success_rate, @sample_count, @context, @exemplar, @created_at, @updated_at, @version,
         @created_version)
       on conflict (id) do update set embedding = excluded.embedding, success_rate = excluded.success_rate,
         sample_count = excluded.sample_count, context = excluded.context, exemplar = excluded.exemplar,
         updated_at = excluded.updated_at, version = excluded.version`
    ),
    deletePattern: db.prepare<[string]>(`delete from patterns where id = ?`),
    insertTombstone: db.prepare<[string, number]>(
      `insert into tombstones (id, version) values (?, ?) on conflict (id) do update set version = excluded.version`
    ),
    deleteTombstonesUpTo: db.prepare<[number]>(`delete from tombstones where version <= ?`),
    tombstonesSince: db.prepare<[number], { id: string; version: number }>(
      `select id, version from tombstones where version > ? order by version`
    ),
    allCatalog: db.prepare<[], { content_id: string; title: string; genres: string; embedding: Buffer }>(
      `select * from catalog`
    ),
    catalogItems: db.prepare<[], { content_id: string; title: string; genres: string }>(
      `select content_id, title, genres from catalog`
    ),
    catalogEmbedding: db.prepare<[string], { embedding: Buffer }>(`select embedding from catalog where content_id = ?`),
    upsertCatalog: db.prepare<[string, string, string, Buffer]>(
      `insert into catalog (content_id, title, genres, embedding) values (?, ?, ?, ?)
       on conflict (content_id) do update set title = excluded.title, genres = excluded.genres, embedding = excluded.embedding`
    ),
    allCollective: db.prepare<[], {
      id: string
      embedding: Buffer
      success_rate: number
      sample_count: number
      device_count: number
      context: string
    }>(`select * from collective`),
    clearCollective: db.prepare(`delete from collective`),
    // A snapshot that repeats an id (a shard bug) keeps the last one instead of failing the whole update.
    upsertCollective: db.prepare<[string, Buffer, number, number, number, string]>(
      `insert into collective (id, embedding, success_rate, sample_count, device_count, context) values (?, ?, ?, ?, ?, ?)
       on conflict (id) do update set embedding = excluded.embedding, success_rate = excluded.success_rate,
         sample_count = excluded.sample_count, device_count = excluded.device_count, context = excluded.context`
    ),
    allTrends: db.prepare<[], { content_id: string; region: string; score: number; velocity: number }>(
      `select * from trends`
    ),
    clearTrends: db.prepare(`delete from trends`),
    upsertTrend: db.prepare<[string, string, number, number]>(
      `insert into trends (content_id, region, score, velocity) values (?, ?, ?, ?)
       on conflict (content_id, region) do update set score = excluded.score, velocity = excluded.velocity`
    ),
    allCoWatch: db.prepare<[], { content_id: string; neighbours: string }>(`select * from cowatch`),
    upsertCoWatch: db.prepare<[string, string]>(
      `insert into cowatch (content_id, neighbours) values (?, ?)
       on conflict (content_id) do update set neighbours = excluded.neighbours`
    ),
    deleteCoWatch: db.prepare<[string]>(`delete from cowatch where content_id = ?`),
    allOutbox: db.prepare<[], { version: number; body: string; created_at: number }>(
      `select * from outbox order by version`
    ),
    upsertOutbox: db.prepare<[number, string, number]>(
      `insert into outbox (version, body, created_at) values (?, ?, ?)
       on conflict (version) do update set body = excluded.body, created_at = excluded.created_at`
    ),
    deleteOutboxUpTo: db.prepare<[number]>(`delete from outbox where version <= ?`)
  }
}

/** Little-endian f32 bytes; copied so the vector does not alias SQLite's buffer. */
export const blobFromVector = (v: Float32Array): Buffer => Buffer.from(v.buffer, v.byteOffset, v.byteLength)

export const vectorFromBlob = (blob: Uint8Array): Float32Array => {
  const copy = new Uint8Array(blob.byteLength)
  copy.set(blob)
  return new Float32Array(copy.buffer)
}

const patternToRow = (p: LocalPattern): PatternRow => ({
  id: p.id,
  embedding: blobFromVector(p.embedding),
  success_rate: p.successRate,
  sample_count: p.sampleCount,
  context: JSON.stringify(p.context),
  exemplar: p.exemplar ?? null,
  created_at: p.createdAt,
  updated_at: p.updatedAt,
  version: p.version,
  created_version: p.createdVersion
})

const patternFromRow = (row: PatternRow): LocalPattern => ({
  id: row.id as PatternId,
  embedding: vectorFromBlob(row.embedding),
  successRate: row.success_rate,
  sampleCount: row.sample_count,
  context: JSON.parse(row.context) as PatternContext,
  exemplar: (row.exemplar ?? undefined) as ContentId | undefined,
  createdAt: row.created_at,
  updatedAt: row.updated_at,
  version: row.version,
  createdVersion: row.created_version
})

const eventToJson = (event: ViewingEvent): string => JSON.stringify(event)
const eventFromJson = (body: string): ViewingEvent => JSON.parse(body) as ViewingEvent

// Embeddings travel through the outbox as base64 f32 so a delta round-trips bit-exactly.
const sharedToJson = (p: SharedPattern) => ({ ...p, embedding: blobFromVector(p.embedding).toString("base64") })
const sharedFromJson = (p: ReturnType<typeof sharedToJson>): SharedPattern => ({
  ...p,
  id: p.id,
  embedding: vectorFromBlob(Buffer.from(p.embedding, "base64"))
})

const deltaToJson = (delta: PatternDelta): string =>
  JSON.stringify({ ...delta, added: delta.added.map(sharedToJson), updated: delta.updated.map(sharedToJson) })

const deltaFromJson = (body: string): PatternDelta => {
  const raw = JSON.parse(body) as Omit<PatternDelta, "added" | "updated"> & {
    added: Array<ReturnType<typeof sharedToJson>>
    updated: Array<ReturnType<typeof sharedToJson>>
  }
  return { ...raw, added: raw.added.map(sharedFromJson), updated: raw.updated.map(sharedFromJson) }
}
