/**
 * Durable state of one constellation shard: registered devices, the latest shared patterns
 * of each device, aggregated patterns per region (searched by cosine similarity), trends,
 * content embeddings and global versions. One implementation over effect's `SqlClient` runs
 * the same SQL on PostgreSQL + pgvector (@effect/sql-pg) and on in-process PGlite with its
 * vector extension. Vectors travel as pgvector text ('[0.1,...]') cast with `::vector`, and
 * come back as `embedding::text`; batches travel as one JSON parameter expanded by
 * `jsonb_to_recordset`, so a write of many rows is one statement whatever the driver.
 * Timestamps are written from the Effect clock and read back as float8 epoch milliseconds.
 */
import { PgClient } from "@effect/sql-pg"
import { PGlite } from "@electric-sql/pglite"
import { vector } from "@electric-sql/pglite-pgvector"
import {
  type ContentEmbedding,
  type ContentId,
  EMBEDDING_DIMENSIONS,
  type GlobalPattern,
  type PatternContext,
  type PatternId,
  type SharedPattern,
  type TrendSignal
} from "@omega/protocol"
import { Clock, Context, Effect, Layer, Option, Redacted, Schema } from "effect"
import { Reactivity } from "effect/reactivity"
import { Migrator, SqlClient } from "effect/sql"
import { isSqlError, type SqlError } from "effect/sql/SqlError"
import { fileURLToPath } from "node:url"
import { makePgliteSqlClient } from "./internal/PgliteSqlClient.ts"
import { type PgliteQueryable, startPgliteThread } from "./internal/PgliteThread.ts"
import { sqlFileLoader } from "./internal/SqlFileMigrations.ts"

/** A device as the shard knows it; the token itself is never stored. */
export interface DeviceRecord {
  readonly id: string
  readonly tokenHash: string
  readonly region: string
  /** Epoch milliseconds. */
  readonly registeredAt: number
  readonly lastSyncAt: number | undefined
  /** Highest pattern-delta version applied. */
  readonly lastVersion: number
}

export interface NewDevice {
  readonly id: string
  readonly tokenHash: string
  readonly region: string
}

/** One device's pattern delta as the shard stores it. */
export interface DevicePatternsUpdate {
  readonly deviceId: string
  readonly patterns: ReadonlyArray<SharedPattern>
  readonly removed: ReadonlyArray<PatternId>
  readonly version: number
}

/** What `upsertDevicePatterns` did. `applied: false` means the delta was older than one already applied. */
export interface DevicePatternsWrite {
  readonly applied: boolean
  /** The device's version after the call. */
  readonly version: number
  readonly upserted: number
  readonly removed: number
}

/** A device's pattern as stored, with the delta version and time (epoch ms) it was last written. */
export interface StoredDevicePattern extends SharedPattern {
  readonly version: number
  readonly updatedAt: number
}

export interface NearestPattern {
  readonly pattern: GlobalPattern
  /** Cosine distance (`<=>`), 0 for the same direction, up to 2 for the opposite. */
  readonly distance: number
}

/** A content item with the time it was added or last changed (epoch milliseconds). */
export interface StoredContent extends ContentEmbedding {
  readonly addedAt: number
}

export interface StorageCounts {
  readonly devices: number
  readonly devicePatterns: number
  readonly aggregatedPatterns: number
  /** Deltas in the durable log, and the patterns they carried. */
  readonly loggedDeltas: number
  readonly loggedPatterns: number
}

/** One accepted delta for the durable log: the frame as received, and what it carried. */
export interface LoggedDelta {
  readonly deviceId: string
  readonly version: number
  readonly region: string
  /** Quality patterns accepted from it. */
  readonly patterns: number
  readonly frame: Uint8Array
}

export class ShardStorage extends Context.Service<ShardStorage, {
  /** Applies pending `schema/NNN_name.sql` files; returns the names applied (none when up to date). */
  readonly migrate: Effect.Effect<ReadonlyArray<string>, StorageError>
  /** Registers a device; `false` when the id already exists (its token and region stay as they were). */
  readonly registerDevice: (device: NewDevice) => Effect.Effect<boolean, StorageError>
  /** `registerDevice` for many in one statement; returns the ids that were new. */
  readonly registerDevices: (devices: ReadonlyArray<NewDevice>) => Effect.Effect<ReadonlyArray<string>, StorageError>
  readonly findDevice: (id: string) => Effect.Effect<Option.Option<DeviceRecord>, StorageError>
  /** `findDevice` for many in one statement; ids not registered are simply absent. */
  readonly findDevices: (ids: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<DeviceRecord>, StorageError>
  /** Highest pattern-delta version applied for the device, for idempotent ingestion. */
  readonly deviceVersion: (id: string) => Effect.Effect<Option.Option<number>, StorageError>
  /**
   * Replaces the stored state of `patterns` and deletes `removed`, all in one transaction at
   * `version`. Replaying a delta stores the same rows again; a delta older than the device's
   * version changes nothing.
   */
  readonly upsertDevicePatterns: (
    deviceId: string,
    patterns: ReadonlyArray<SharedPattern>,
    removed: ReadonlyArray<PatternId>,
    version: number
  ) => Effect.Effect<DevicePatternsWrite, StorageError>
  /**
   * `upsertDevicePatterns` for many devices in one transaction of a few statements, results in
   * input order. Several updates of one device apply in the order given. An unregistered device
   * fails the whole batch.
   */
  readonly upsertDevicePatternsBatch: (
    updates: ReadonlyArray<DevicePatternsUpdate>
  ) => Effect.Effect<ReadonlyArray<DevicePatternsWrite>, StorageError>
  /**
   * Appends deltas to the durable log and advances each device's version, in one transaction.
   * Returns, per entry, whether it was new (false: that device and version were logged before).
   * `at` (epoch ms, default now) is their received time, which restart replay compares with
   * snapshot times.
   */
  readonly appendDeltas: (
    deltas: ReadonlyArray<LoggedDelta>,
    at?: number
  ) => Effect.Effect<ReadonlyArray<boolean>, StorageError>
  /** Logged deltas not yet applied to device_patterns, oldest first. */
  readonly unmaterialized: (limit: number) => Effect.Effect<ReadonlyArray<LoggedDelta>, StorageError>
  /**
   * Logged deltas of each region received after its last written snapshot was taken (all of a
   * region that has none), newest first: what a restarted shard folds back into its aggregation.
   */
  readonly deltasSinceSnapshots: (limit: number) => Effect.Effect<ReadonlyArray<LoggedDelta>, StorageError>
  /** Marks logged deltas as applied to device_patterns. */
  readonly markMaterialized: (
    keys: ReadonlyArray<{ readonly deviceId: string; readonly version: number }>
  ) => Effect.Effect<void, StorageError>
  /** The stored patterns of one device, by id. */
  readonly loadDevicePatterns: (deviceId: string) => Effect.Effect<ReadonlyArray<StoredDevicePattern>, StorageError>
  /** A region's aggregated patterns, most devices first. */
  readonly loadAggregated: (region: string, limit: number) => Effect.Effect<ReadonlyArray<GlobalPattern>, StorageError>
  /**
   * Upserts and deletes a region's aggregated patterns in one transaction; returns the region's new
   * global version: one more than before, or, given `version`, at least that (a shard that numbers
   * its snapshots itself). `at` (epoch ms, default now) is when the snapshot was taken.
   */
  readonly upsertAggregated: (
    region: string,
    patterns: ReadonlyArray<GlobalPattern>,
    removed?: ReadonlyArray<PatternId>,
    version?: number,
    at?: number
  ) => Effect.Effect<number, StorageError>
  /** The `k` aggregated patterns of a region nearest to `embedding` by cosine distance, nearest first. */
  readonly nearestAggregated: (
    region: string,
    embedding: Float32Array,
    k: number
  ) => Effect.Effect<ReadonlyArray<NearestPattern>, StorageError>
  /** Regions that have global patterns (a global version), sorted. */
  readonly regions: Effect.Effect<ReadonlyArray<string>, StorageError>
  /** Version of a region's global patterns; 0 before the first aggregation. */
  readonly globalVersion: (region: string) => Effect.Effect<number, StorageError>
  readonly upsertTrends: (trends: ReadonlyArray<TrendSignal>) => Effect.Effect<void, StorageError>
  /** A region's trends, hottest first. */
  readonly loadTrends: (region: string, limit: number) => Effect.Effect<ReadonlyArray<TrendSignal>, StorageError>
  /** Adds or replaces catalog items; a replaced item counts as added now, so TVs fetch it again. */
  readonly addContent: (items: ReadonlyArray<ContentEmbedding>) => Effect.Effect<void, StorageError>
  /** Items added at or after `since` (epoch ms, inclusive: a TV may see an item twice, never miss one), oldest first. */
  readonly listContentSince: (since: number, limit: number) => Effect.Effect<ReadonlyArray<StoredContent>, StorageError>
  /** Exact row counts for stats (each a scan of its table). */
  readonly counts: Effect.Effect<StorageCounts, StorageError>
  /** One trivial query: whether the database answers, for /health. */
  readonly ping: Effect.Effect<void, StorageError>
}>()("omega/constellation/ShardStorage") {
  /** PostgreSQL + pgvector through @effect/sql-pg; `schema` keeps the tables in their own schema. */
  static readonly layerPg = (options: PgOptions) =>
    Layer.effect(
      ShardStorage,
      Effect.gen(function*() {
        const schema = options.schema
        if (schema !== undefined && !SCHEMA_NAME.test(schema)) {
          return yield* new StorageError({ operation: "connect", message: `invalid schema name ${schema}` })
        }
        const client = yield* PgClient.make({
          url: Redacted.isRedacted(options.url) ? options.url : Redacted.make(options.url),
          maxConnections: options.maxConnections ?? 8,
          ...(schema === undefined ? {} : { startupParameters: { search_path: `"${schema}", public` } })
        }).pipe(Effect.mapError((error) => fromSqlError("connect", error)))
        if (schema !== undefined) {
          yield* client.unsafe(`create schema if not exists "${schema}"`).pipe(
            Effect.mapError((error) => fromSqlError("connect", error))
          )
        }
        return yield* make(options).pipe(Effect.provideService(SqlClient.SqlClient, client))
      })
    ).pipe(Layer.provide(Reactivity.layer))

  /** In-process PGlite with pgvector: in memory, or persisted under `dataDir`. The embedded default. */
  static readonly layerPglite = (options: PgliteOptions = {}) =>
    Layer.effect(
      ShardStorage,
      Effect.gen(function*() {
        const pglite = yield* Effect.acquireRelease(
          Effect.tryPromise({
            try: async (): Promise<PgliteQueryable & { readonly close: () => Promise<void> }> => {
              if (options.ownThread === true) return startPgliteThread(options.dataDir)
              const db = new PGlite({
                ...(options.dataDir === undefined ? {} : { dataDir: options.dataDir }),
                extensions: { vector }
              })
              await db.waitReady
              return db
            },
            catch: (cause) =>
              new StorageError({ operation: "open", message: `PGlite did not start: ${describe(cause)}` })
          }),
          (db) => Effect.promise(() => db.close())
        )
        const client = yield* makePgliteSqlClient(pglite)
        return yield* make(options).pipe(Effect.provideService(SqlClient.SqlClient, client))
      })
    ).pipe(Layer.provide(Reactivity.layer))

  /** An in-memory PGlite, migrated, for tests. */
  static readonly layerTest = ShardStorage.layerPglite()

  /**
   * Drops PostgreSQL schemas and everything in them: what a run in a throw-away schema (a test
   * suite, a benchmark, a load test) leaves behind on a shared database. Returns the schemas that
   * existed, in the order given.
   */
  static readonly dropPgSchemas = (url: string, schemas: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const bad = schemas.find((schema) => !SCHEMA_NAME.test(schema))
      if (bad !== undefined) {
        return yield* new StorageError({ operation: "dropSchemas", message: `invalid schema name ${bad}` })
      }
      const sql = yield* PgClient.make({ url: Redacted.make(url), maxConnections: 1 })
      const dropped: Array<string> = []
      for (const schema of schemas) {
        const found = yield* sql<
          { readonly nspname: string }
        >`select nspname from pg_namespace where nspname = ${schema}`
        if (found.length === 0) continue
        yield* sql.unsafe(`drop schema if exists "${schema}" cascade`)
        dropped.push(schema)
      }
      return dropped
    }).pipe(
      Effect.mapError((error) => error instanceof StorageError ? error : fromSqlError("dropSchemas", error)),
      Effect.scoped,
      Effect.provide(Reactivity.layer)
    )

  /** A layer that drops `schemas` when it is released (see `dropPgSchemas`). */
  static readonly layerDropPgSchemas = (url: string, schemas: ReadonlyArray<string>) =>
    Layer.effectDiscard(Effect.addFinalizer(() => Effect.orDie(ShardStorage.dropPgSchemas(url, schemas))))
}

/**
 * The PostgreSQL that tests, benchmarks and the load test use when one is configured:
 * OMEGA_DATABASE_URL, else POSTGRES_URL (empty counts as unset); undefined means PGlite.
 */
export const databaseUrlFromEnv = (env: Record<string, string | undefined> = process.env): string | undefined =>
  env["OMEGA_DATABASE_URL"] || env["POSTGRES_URL"] || undefined

/** The database failed or refused the input; `operation` names what was being done. Nothing partial was committed. */
export class StorageError extends Schema.TaggedError<StorageError>()("StorageError", {
  operation: Schema.String,
  message: Schema.String
}) {}

interface CommonOptions {
  /** Directory of `NNN_name.sql` migrations; defaults to the repository's `schema/`. */
  readonly migrationsDir?: string
  /** Apply pending migrations when the layer is built (default true). */
  readonly migrate?: boolean
}

export interface PgOptions extends CommonOptions {
  readonly url: string | Redacted.Redacted
  /** A schema of its own (created if missing), searched before `public` where pgvector lives. */
  readonly schema?: string
  readonly maxConnections?: number
}

export interface PgliteOptions extends CommonOptions {
  /**
   * Runs PGlite on a worker thread of its own (statements travel as messages), so its work does
   * not stall the sessions on the main thread; a shard's default. Tests keep it on their thread.
   */
  readonly ownThread?: boolean
  /** Directory of a persistent database; in memory when absent. */
  readonly dataDir?: string
}

const DEFAULT_MIGRATIONS_DIR = fileURLToPath(new URL("../../../schema/", import.meta.url))
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/
/** Rows per multi-row statement: large enough to amortise a round trip, small enough to bound a JSON parameter. */
const BATCH_ROWS = 500

/** The one implementation, over whichever SqlClient the layer provides. */
const make = (options: CommonOptions) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const runMigrations = Migrator.make({})({
      loader: sqlFileLoader(options.migrationsDir ?? DEFAULT_MIGRATIONS_DIR),
      table: "schema_migrations"
    })

    const migrate = runMigrations.pipe(
      Effect.map((applied) => applied.map(([id, name]) => `${String(id).padStart(3, "0")}_${name}`)),
      Effect.mapError((error) =>
        error._tag === "SqlError" ? fromSqlError("migrate", error) : new StorageError({
          operation: "migrate",
          message: `${error.message}${error.cause === undefined ? "" : `: ${describe(error.cause)}`}`
        })
      ),
      Effect.provideService(SqlClient.SqlClient, sql),
      Effect.withSpan("ShardStorage.migrate")
    )

    const registerDevices = Effect.fn("ShardStorage.registerDevices")(function*(devices: ReadonlyArray<NewDevice>) {
      if (devices.length === 0) return []
      const now = yield* Clock.currentTimeMillis
      const inserted: Array<string> = []
      for (let start = 0; start < devices.length; start += BATCH_ROWS) {
        const rows = devices.slice(start, start + BATCH_ROWS).map((d) => ({
          id: d.id,
          token_hash: d.tokenHash,
          region: d.region
        }))
        const returned = yield* sql<{ readonly id: string }>`
          insert into devices (id, token_hash, region, registered_at)
          select r.id, r.token_hash, r.region, to_timestamp(${now}::float8 / 1000)
          from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as r(id text, token_hash text, region text)
          on conflict (id) do nothing
          returning id`.pipe(sqlFailure("registerDevices"))
        for (const row of returned) inserted.push(row.id)
      }
      return inserted
    })

    const registerDevice = (device: NewDevice) =>
      Effect.map(registerDevices([device]), (inserted) => inserted.length > 0)

    // The group commit only appends to delta_log; a device's last version and sync time are the
    // newest of what devices holds (kept by the materializer) and what the log holds for it.
    const findDevices = Effect.fn("ShardStorage.findDevices")(function*(ids: ReadonlyArray<string>) {
      if (ids.length === 0) return []
      const found: Array<DeviceRecord> = []
      for (let start = 0; start < ids.length; start += BATCH_ROWS) {
        const rows = yield* sql<DeviceRow>`
          select d.id, d.token_hash, d.region,
            round(extract(epoch from d.registered_at) * 1000)::float8 as registered_at,
            round(extract(epoch from greatest(d.last_sync_at, l.last_sync_at)) * 1000)::float8 as last_sync_at,
            greatest(d.last_version, coalesce(l.last_version, 0)) as last_version
          from devices d
          left join lateral (
            select max(version) as last_version, max(received_at) as last_sync_at
            from delta_log where device_id = d.id
          ) l on true
          where d.id in (select jsonb_array_elements_text(${
          JSON.stringify(ids.slice(start, start + BATCH_ROWS))
        }::jsonb))`.pipe(sqlFailure("findDevices"))
        for (const row of rows) found.push(deviceFromRow(row))
      }
      return found
    })

    const findDevice = (id: string) =>
      Effect.map(findDevices([id]), (found) => Option.fromNullishOr(found.find((device) => device.id === id)))

    const deviceVersion = (id: string) => Effect.map(findDevice(id), Option.map((device) => device.lastVersion))

    /** Validates and encodes before any transaction opens, so bad input never reaches the database. */
    const writeDeviceUpdates = (operation: string, updates: ReadonlyArray<DevicePatternsUpdate>) =>
      Effect.gen(function*() {
        for (const update of updates) yield* requireCount(operation, "version", update.version)
        const encoded = yield* Effect.try({
          try: () => updates.map((update) => encodeDeviceUpdate(update)),
          catch: (error) =>
            new StorageError({ operation, message: error instanceof InvalidRow ? error.message : describe(error) })
        })
        const now = yield* Clock.currentTimeMillis
        return yield* sql.withTransaction(Effect.gen(function*() {
          const results: Array<DevicePatternsWrite> = []
          for (const round of rounds(encoded)) {
            // Locks the devices' rows in id order: two syncs of one device apply one after the other.
            const locked = yield* sql<{ readonly id: string; readonly last_version: unknown }>`
              select id, last_version from devices
              where id in (select jsonb_array_elements_text(${JSON.stringify(round.map((u) => u.deviceId))}::jsonb))
              order by id
              for update`
            const current = new Map(locked.map((row) => [row.id, toNumber(row.last_version)]))
            const unknown = round.find((u) => !current.has(u.deviceId))
            if (unknown !== undefined) {
              return yield* new StorageError({ operation, message: `device ${unknown.deviceId} is not registered` })
            }
            const applied = round.filter((u) => u.version >= current.get(u.deviceId)!)
            for (const u of round) {
              if (u.version < current.get(u.deviceId)!) {
                results[u.index] = { applied: false, version: current.get(u.deviceId)!, upserted: 0, removed: 0 }
              }
            }
            if (applied.length === 0) continue
            const removedRows = applied.flatMap((u) =>
              u.removed.map((id) => ({ device_id: u.deviceId, pattern_id: id }))
            )
            const removed = removedRows.length === 0 ? [] : yield* sql<{ readonly device_id: string }>`
              delete from device_patterns p
              using jsonb_to_recordset(${JSON.stringify(removedRows)}::jsonb) as r(device_id text, pattern_id text)
              where p.device_id = r.device_id and p.pattern_id = r.pattern_id
              returning p.device_id`
            const upserted: Array<{ readonly device_id: string }> = []
            const rows = applied.flatMap((u) => u.rows)
            for (let start = 0; start < rows.length; start += BATCH_ROWS) {
              upserted.push(
                ...yield* sql<{ readonly device_id: string }>`
                  insert into device_patterns
                    (device_id, pattern_id, embedding, success_rate, sample_count, context, version, updated_at)
                  select r.device_id, r.id, r.embedding::vector, r.success_rate, r.sample_count,
                    coalesce(r.context, '{}'::jsonb), r.version, to_timestamp(${now}::float8 / 1000)
                  from jsonb_to_recordset(${JSON.stringify(rows.slice(start, start + BATCH_ROWS))}::jsonb) as r(
                    device_id text, id text, embedding text, success_rate float8, sample_count float8, context jsonb,
                    version bigint)
                  on conflict (device_id, pattern_id) do update set
                    embedding = excluded.embedding, success_rate = excluded.success_rate,
                    sample_count = excluded.sample_count, context = excluded.context,
                    version = excluded.version, updated_at = excluded.updated_at
                  where device_patterns.version <= excluded.version
                  returning device_id`
              )
            }
            yield* sql`
              update devices d set last_version = greatest(d.last_version, r.version),
                last_sync_at = to_timestamp(${now}::float8 / 1000)
              from jsonb_to_recordset(${
              JSON.stringify(applied.map((u) => ({ id: u.deviceId, version: u.version })))
            }::jsonb) as r(id text, version bigint)
              where d.id = r.id`
            const removedBy = countBy(removed)
            const upsertedBy = countBy(upserted)
            for (const u of applied) {
              results[u.index] = {
                applied: true,
                version: u.version,
                upserted: upsertedBy.get(u.deviceId) ?? 0,
                removed: removedBy.get(u.deviceId) ?? 0
              }
            }
          }
          return results
        })).pipe(sqlFailure(operation))
      })

    const upsertDevicePatterns = Effect.fn("ShardStorage.upsertDevicePatterns")(function*(
      deviceId: string,
      patterns: ReadonlyArray<SharedPattern>,
      removed: ReadonlyArray<PatternId>,
      version: number
    ) {
      const [result] = yield* writeDeviceUpdates("upsertDevicePatterns", [{ deviceId, patterns, removed, version }])
      return result!
    })

    const upsertDevicePatternsBatch = Effect.fn("ShardStorage.upsertDevicePatternsBatch")(function*(
      updates: ReadonlyArray<DevicePatternsUpdate>
    ) {
      return yield* writeDeviceUpdates("upsertDevicePatternsBatch", updates)
    })

    const loadDevicePatterns = Effect.fn("ShardStorage.loadDevicePatterns")(function*(deviceId: string) {
      const rows = yield* sql<PatternRow & { readonly version: unknown; readonly updated_at: unknown }>`
        select pattern_id as id, embedding::text as embedding, success_rate, sample_count, context::text as context,
          version, round(extract(epoch from updated_at) * 1000)::float8 as updated_at
        from device_patterns where device_id = ${deviceId}
        order by pattern_id`.pipe(sqlFailure("loadDevicePatterns"))
      return rows.map((row): StoredDevicePattern => ({
        ...sharedPatternFromRow(row),
        version: toNumber(row.version),
        updatedAt: toNumber(row.updated_at)
      }))
    })

    const loadAggregated = Effect.fn("ShardStorage.loadAggregated")(function*(region: string, limit: number) {
      yield* requireCount("loadAggregated", "limit", limit)
      const rows = yield* sql<AggregatedRow>`
        select id, embedding::text as embedding, success_rate, sample_count, device_count, context::text as context
        from aggregated_patterns where region = ${region}
        order by device_count desc, success_rate desc, id
        limit ${limit}`.pipe(sqlFailure("loadAggregated"))
      return rows.map(globalPatternFromRow)
    })

    const upsertAggregated = Effect.fn("ShardStorage.upsertAggregated")(function*(
      region: string,
      patterns: ReadonlyArray<GlobalPattern>,
      removed: ReadonlyArray<PatternId> = [],
      version?: number,
      at?: number
    ) {
      const operation = "upsertAggregated"
      if (version !== undefined) yield* requireCount(operation, "version", version)
      if (at !== undefined) yield* requireCount(operation, "at", at)
      const batches = yield* jsonBatches(operation, lastById(patterns), (p) => ({
        id: p.id,
        embedding: embeddingText(p.embedding, `pattern ${p.id}`),
        success_rate: p.successRate,
        sample_count: p.sampleCount,
        device_count: p.deviceCount,
        context: p.context
      }))
      const removedIds = JSON.stringify([...new Set(removed)])
      const now = at ?? (yield* Clock.currentTimeMillis)
      return yield* sql.withTransaction(Effect.gen(function*() {
        // Taken first: concurrent writers of one region queue here instead of deadlocking on patterns.
        const versions = version === undefined ?
          yield* sql<{ readonly version: unknown }>`
            insert into global_versions (region, version, updated_at)
            values (${region}, 1, to_timestamp(${now}::float8 / 1000))
            on conflict (region) do update set version = global_versions.version + 1, updated_at = excluded.updated_at
            returning version` :
          yield* sql<{ readonly version: unknown }>`
            insert into global_versions (region, version, updated_at)
            values (${region}, ${version}, to_timestamp(${now}::float8 / 1000))
            on conflict (region) do update set version = greatest(global_versions.version, excluded.version),
              updated_at = excluded.updated_at
            returning version`
        if (removed.length > 0) {
          yield* sql`
            delete from aggregated_patterns
            where region = ${region} and id in (select jsonb_array_elements_text(${removedIds}::jsonb))`
        }
        for (const batch of batches) {
          yield* sql`
            insert into aggregated_patterns
              (region, id, embedding, success_rate, sample_count, device_count, context, updated_at)
            select ${region}::text, r.id, r.embedding::vector, r.success_rate, r.sample_count, r.device_count,
              coalesce(r.context, '{}'::jsonb), to_timestamp(${now}::float8 / 1000)
            from jsonb_to_recordset(${batch}::jsonb)
              as r(id text, embedding text, success_rate float8, sample_count float8, device_count integer, context jsonb)
            on conflict (region, id) do update set
              embedding = excluded.embedding, success_rate = excluded.success_rate,
              sample_count = excluded.sample_count, device_count = excluded.device_count,
              context = excluded.context, updated_at = excluded.updated_at`
        }
        return toNumber(versions[0]?.version)
      })).pipe(sqlFailure(operation))
    })

    const nearestAggregated = Effect.fn("ShardStorage.nearestAggregated")(function*(
      region: string,
      embedding: Float32Array,
      k: number
    ) {
      const operation = "nearestAggregated"
      yield* requireCount(operation, "k", k)
      const query = vectorText(embedding)
      if (typeof query !== "string") return yield* new StorageError({ operation, message: query.problem })
      const rows = yield* sql.withTransaction(Effect.gen(function*() {
        // Without it HNSW stops after ef_search candidates, and a region filter could leave fewer than k.
        yield* sql`select set_config('hnsw.iterative_scan', 'strict_order', true)`
        return yield* sql<AggregatedRow & { readonly distance: unknown }>`
          select id, embedding::text as embedding, success_rate, sample_count, device_count,
            context::text as context, embedding <=> ${query}::vector as distance
          from aggregated_patterns where region = ${region}
          order by distance
          limit ${k}`
      })).pipe(sqlFailure(operation))
      return rows.map((row): NearestPattern => ({
        pattern: globalPatternFromRow(row),
        distance: toNumber(row.distance)
      }))
    })

    const globalVersion = Effect.fn("ShardStorage.globalVersion")(function*(region: string) {
      const rows = yield* sql<{ readonly version: unknown }>`
        select version from global_versions where region = ${region}`.pipe(sqlFailure("globalVersion"))
      return rows[0] === undefined ? 0 : toNumber(rows[0].version)
    })

    const regions = sql<{ readonly region: string }>`select region from global_versions order by region`.pipe(
      sqlFailure("regions"),
      Effect.map((rows) => rows.map((row) => row.region)),
      Effect.withSpan("ShardStorage.regions")
    )

    const upsertTrends = Effect.fn("ShardStorage.upsertTrends")(function*(trends: ReadonlyArray<TrendSignal>) {
      const unique = [...new Map(trends.map((t) => [`${t.region}\u0000${t.contentId}`, t])).values()]
      const batches = yield* jsonBatches("upsertTrends", unique, (t) => ({
        region: t.region,
        content_id: t.contentId,
        score: t.score,
        velocity: t.velocity
      }))
      const now = yield* Clock.currentTimeMillis
      yield* sql.withTransaction(Effect.forEach(batches, (batch) =>
        sql`
          insert into trends (region, content_id, score, velocity, updated_at)
          select r.region, r.content_id, r.score, r.velocity, to_timestamp(${now}::float8 / 1000)
          from jsonb_to_recordset(${batch}::jsonb) as r(region text, content_id text, score float8, velocity float8)
          on conflict (region, content_id) do update set
            score = excluded.score, velocity = excluded.velocity, updated_at = excluded.updated_at`, {
        discard: true
      })).pipe(sqlFailure("upsertTrends"))
    })

    const loadTrends = Effect.fn("ShardStorage.loadTrends")(function*(region: string, limit: number) {
      yield* requireCount("loadTrends", "limit", limit)
      const rows = yield* sql<{ content_id: string; region: string; score: unknown; velocity: unknown }>`
        select content_id, region, score, velocity from trends where region = ${region}
        order by score desc, content_id
        limit ${limit}`.pipe(sqlFailure("loadTrends"))
      return rows.map((row): TrendSignal => ({
        contentId: row.content_id as ContentId,
        region: row.region,
        score: toNumber(row.score),
        velocity: toNumber(row.velocity)
      }))
    })

    const addContent = Effect.fn("ShardStorage.addContent")(function*(items: ReadonlyArray<ContentEmbedding>) {
      const unique = [...new Map(items.map((item) => [item.contentId, item])).values()]
      const batches = yield* jsonBatches("addContent", unique, (item) => ({
        content_id: item.contentId,
        title: item.title,
        genres: item.genres,
        embedding: embeddingText(item.embedding, `content ${item.contentId}`)
      }))
      const now = yield* Clock.currentTimeMillis
      yield* sql.withTransaction(Effect.forEach(batches, (batch) =>
        sql`
          insert into content (content_id, title, genres, embedding, added_at)
          select r.content_id, r.title, r.genres, r.embedding::vector, to_timestamp(${now}::float8 / 1000)
          from jsonb_to_recordset(${batch}::jsonb) as r(content_id text, title text, genres jsonb, embedding text)
          on conflict (content_id) do update set
            title = excluded.title, genres = excluded.genres, embedding = excluded.embedding,
            added_at = excluded.added_at`, { discard: true })).pipe(sqlFailure("addContent"))
    })

    const listContentSince = Effect.fn("ShardStorage.listContentSince")(function*(since: number, limit: number) {
      yield* requireCount("listContentSince", "limit", limit)
      const rows = yield* sql<
        { content_id: string; title: string; genres: string; embedding: string; added_at: unknown }
      >`
        select content_id, title, genres::text as genres, embedding::text as embedding,
          round(extract(epoch from added_at) * 1000)::float8 as added_at
        from content where added_at >= to_timestamp(${since}::float8 / 1000)
        order by added_at, content_id
        limit ${limit}`.pipe(sqlFailure("listContentSince"))
      return rows.map((row): StoredContent => ({
        contentId: row.content_id as ContentId,
        title: row.title,
        genres: JSON.parse(row.genres) as Array<string>,
        embedding: parseVector(row.embedding),
        addedAt: toNumber(row.added_at)
      }))
    })

    const appendDeltas = Effect.fn("ShardStorage.appendDeltas")(function*(
      deltas: ReadonlyArray<LoggedDelta>,
      at?: number
    ) {
      if (deltas.length === 0) return []
      for (const d of deltas) {
        yield* requireCount("appendDeltas", "version", d.version)
        yield* requireCount("appendDeltas", "patterns", d.patterns)
      }
      if (at !== undefined) yield* requireCount("appendDeltas", "at", at)
      const now = at ?? (yield* Clock.currentTimeMillis)
      const rows = JSON.stringify(deltas.map((d) => ({
        device_id: d.deviceId,
        version: d.version,
        region: d.region,
        patterns: d.patterns,
        frame: Buffer.from(d.frame.buffer, d.frame.byteOffset, d.frame.byteLength).toString("base64")
      })))
      // One statement, so one implicit transaction: the whole batch is durable or none of it.
      const inserted = yield* sql<{ readonly device_id: string; readonly version: unknown }>`
        insert into delta_log (device_id, version, region, received_at, patterns, frame)
        select r.device_id, r.version, r.region, to_timestamp(${now}::float8 / 1000), r.patterns,
          decode(r.frame, 'base64')
        from jsonb_to_recordset(${rows}::jsonb) as r(device_id text, version bigint, region text, patterns int,
          frame text)
        on conflict (device_id, version) do nothing
        returning device_id, version`.pipe(sqlFailure("appendDeltas"))
      const fresh = new Set(inserted.map((row) => `${row.device_id}\u0000${toNumber(row.version)}`))
      return deltas.map((d) => fresh.has(`${d.deviceId}\u0000${d.version}`))
    })

    type LoggedRow = {
      readonly device_id: string
      readonly version: unknown
      readonly region: string
      readonly patterns: unknown
      readonly frame: string
    }
    const loggedDelta = (row: LoggedRow): LoggedDelta => ({
      deviceId: row.device_id,
      version: toNumber(row.version),
      region: row.region,
      patterns: toNumber(row.patterns),
      frame: new Uint8Array(Buffer.from(row.frame, "base64"))
    })

    const unmaterialized = Effect.fn("ShardStorage.unmaterialized")(function*(limit: number) {
      yield* requireCount("unmaterialized", "limit", limit)
      const rows = yield* sql<LoggedRow>`
        select device_id, version, region, patterns, encode(frame, 'base64') as frame
        from delta_log where not materialized
        order by received_at, device_id, version
        limit ${limit}`.pipe(sqlFailure("unmaterialized"))
      return rows.map(loggedDelta)
    })

    const deltasSinceSnapshots = Effect.fn("ShardStorage.deltasSinceSnapshots")(function*(limit: number) {
      yield* requireCount("deltasSinceSnapshots", "limit", limit)
      const rows = yield* sql<LoggedRow>`
        select l.device_id, l.version, l.region, l.patterns, encode(l.frame, 'base64') as frame
        from delta_log l left join global_versions g on g.region = l.region
        where g.updated_at is null or l.received_at > g.updated_at
        order by l.received_at desc, l.device_id, l.version
        limit ${limit}`.pipe(sqlFailure("deltasSinceSnapshots"))
      return rows.map(loggedDelta)
    })

    const markMaterialized = Effect.fn("ShardStorage.markMaterialized")(function*(
      keys: ReadonlyArray<{ readonly deviceId: string; readonly version: number }>
    ) {
      if (keys.length === 0) return
      yield* sql`
        update delta_log l set materialized = true
        from jsonb_to_recordset(${
        JSON.stringify(keys.map((k) => ({ device_id: k.deviceId, version: k.version })))
      }::jsonb)
          as r(device_id text, version bigint)
        where l.device_id = r.device_id and l.version = r.version`.pipe(sqlFailure("markMaterialized"))
    })

    const counts = sql<{
      devices: unknown
      device_patterns: unknown
      aggregated_patterns: unknown
      logged_deltas: unknown
      logged_patterns: unknown
    }>`
      select (select count(*) from devices) as devices,
        (select count(*) from device_patterns) as device_patterns,
        (select count(*) from aggregated_patterns) as aggregated_patterns,
        (select count(*) from delta_log) as logged_deltas,
        (select coalesce(sum(patterns), 0) from delta_log) as logged_patterns`.pipe(
      sqlFailure("counts"),
      Effect.map(([row]): StorageCounts => ({
        devices: toNumber(row?.devices),
        devicePatterns: toNumber(row?.device_patterns),
        aggregatedPatterns: toNumber(row?.aggregated_patterns),
        loggedDeltas: toNumber(row?.logged_deltas),
        loggedPatterns: toNumber(row?.logged_patterns)
      })),
      Effect.withSpan("ShardStorage.counts")
    )

    const ping = sql`select 1`.pipe(sqlFailure("ping"), Effect.asVoid, Effect.withSpan("ShardStorage.ping"))

    if (options.migrate ?? true) yield* migrate

    return ShardStorage.of({
      migrate,
      appendDeltas,
      unmaterialized,
      deltasSinceSnapshots,
      markMaterialized,
      registerDevice,
      registerDevices,
      findDevice,
      findDevices,
      deviceVersion,
      upsertDevicePatterns,
      upsertDevicePatternsBatch,
      loadDevicePatterns,
      loadAggregated,
      upsertAggregated,
      nearestAggregated,
      regions,
      globalVersion,
      upsertTrends,
      loadTrends,
      addContent,
      listContentSince,
      counts,
      ping
    })
  })

interface DeviceRow {
  readonly id: string
  readonly token_hash: string
  readonly region: string
  readonly registered_at: unknown
  readonly last_sync_at: unknown
  readonly last_version: unknown
}

interface PatternRow {
  readonly id: string
  readonly embedding: string
  readonly success_rate: unknown
  readonly sample_count: unknown
  readonly context: string
}

interface AggregatedRow extends PatternRow {
  readonly device_count: unknown
}

const deviceFromRow = (row: DeviceRow): DeviceRecord => ({
  id: row.id,
  tokenHash: row.token_hash,
  region: row.region,
  registeredAt: toNumber(row.registered_at),
  lastSyncAt: row.last_sync_at === null ? undefined : toNumber(row.last_sync_at),
  lastVersion: toNumber(row.last_version)
})

const sharedPatternFromRow = (row: PatternRow): SharedPattern => ({
  id: row.id as PatternId,
  embedding: parseVector(row.embedding),
  successRate: toNumber(row.success_rate),
  sampleCount: toNumber(row.sample_count),
  context: JSON.parse(row.context) as PatternContext
})

const globalPatternFromRow = (row: AggregatedRow): GlobalPattern => ({
  ...sharedPatternFromRow(row),
  deviceCount: toNumber(row.device_count)
})

/** int8 arrives as bigint from @effect/sql-pg and as number from PGlite. */
const toNumber = (value: unknown): number => (typeof value === "bigint" ? Number(value) : Number(value))

/** Why an embedding cannot be stored, or its pgvector text form. Mirrors the protocol's Embedding rules. */
const vectorText = (v: Float32Array): string | { readonly problem: string } => {
  if (!(v instanceof Float32Array)) return { problem: "embedding is not a Float32Array" }
  if (v.length !== EMBEDDING_DIMENSIONS) {
    return { problem: `embedding has ${v.length} dimensions, expected ${EMBEDDING_DIMENSIONS}` }
  }
  const parts: Array<string> = []
  let norm = 0
  for (let i = 0; i < v.length; i++) {
    const x = v[i]!
    if (!Number.isFinite(x)) return { problem: `embedding component ${i} is ${x}; every component must be finite` }
    norm += x * x
    // Nine significant digits always round-trip a float32 through pgvector's strtof.
    parts[i] = x.toPrecision(9)
  }
  if (norm === 0) return { problem: "embedding is the zero vector, which has no direction" }
  return `[${parts.join(",")}]`
}

/** pgvector's text output ('[0.1,0.2]') as a Float32Array. */
const parseVector = (text: string): Float32Array => {
  const body = text.slice(1, -1)
  return body.length === 0 ? new Float32Array(0) : Float32Array.from(body.split(","), Number)
}

class InvalidRow {
  readonly message: string
  constructor(message: string) {
    this.message = message
  }
}

/** An embedding's text inside a row builder of `jsonBatches`; `what` names the row in the error. */
const embeddingText = (v: Float32Array, what: string): string => {
  const result = vectorText(v)
  if (typeof result === "string") return result
  throw new InvalidRow(`${what}: ${result.problem}`)
}

/** Rows as JSON arrays of at most BATCH_ROWS, or a StorageError naming the first invalid row. */
const jsonBatches = <A>(operation: string, items: ReadonlyArray<A>, toRow: (item: A) => object) =>
  Effect.try({
    try: () => {
      const batches: Array<string> = []
      for (let start = 0; start < items.length; start += BATCH_ROWS) {
        batches.push(JSON.stringify(items.slice(start, start + BATCH_ROWS).map(toRow)))
      }
      return batches
    },
    catch: (error) =>
      new StorageError({ operation, message: error instanceof InvalidRow ? error.message : describe(error) })
  })

interface EncodedUpdate {
  readonly index: number
  readonly deviceId: string
  readonly version: number
  readonly removed: ReadonlyArray<string>
  readonly rows: ReadonlyArray<object>
}

/** An update's rows as JSON-ready objects; throws InvalidRow for an embedding that cannot be stored. */
const encodeDeviceUpdate = (update: DevicePatternsUpdate): Omit<EncodedUpdate, "index"> => ({
  deviceId: update.deviceId,
  version: update.version,
  removed: [...new Set(update.removed)],
  rows: lastById(update.patterns).map((p) => ({
    device_id: update.deviceId,
    id: p.id,
    embedding: embeddingText(p.embedding, `pattern ${p.id} of device ${update.deviceId}`),
    success_rate: p.successRate,
    sample_count: p.sampleCount,
    context: p.context,
    version: update.version
  }))
})

/** Splits updates so each round holds at most one per device, in input order; rounds sorted by device id. */
const rounds = (updates: ReadonlyArray<Omit<EncodedUpdate, "index">>): Array<Array<EncodedUpdate>> => {
  const result: Array<Array<EncodedUpdate>> = []
  const seen = new Map<string, number>()
  updates.forEach((update, index) => {
    const round = seen.get(update.deviceId) ?? 0
    seen.set(update.deviceId, round + 1)
    ;(result[round] ??= []).push({ ...update, index })
  })
  for (const round of result) round.sort((a, b) => compare(a.deviceId, b.deviceId))
  return result
}

const countBy = (rows: ReadonlyArray<{ readonly device_id: string }>) => {
  const counts = new Map<string, number>()
  for (const row of rows) counts.set(row.device_id, (counts.get(row.device_id) ?? 0) + 1)
  return counts
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

/** The last occurrence of each id, sorted by id so concurrent writers lock rows in the same order. */
const lastById = <A extends { readonly id: string }>(items: ReadonlyArray<A>): ReadonlyArray<A> =>
  [...new Map(items.map((item) => [item.id, item])).values()].sort((a, b) => compare(a.id, b.id))

const requireCount = (operation: string, name: string, value: number) =>
  Number.isSafeInteger(value) && value >= 0
    ? Effect.void
    : Effect.fail(new StorageError({ operation, message: `${name} must be a whole number >= 0, got ${value}` }))

const describe = (cause: unknown): string =>
  isSqlError(cause)
    ? fromSqlError("", cause).message
    : cause instanceof Error
    ? cause.message
    : typeof cause === "string"
    ? cause
    : String(cause)

/** The server's own message (same text from PostgreSQL and PGlite) rather than the driver's summary. */
const fromSqlError = (operation: string, error: SqlError): StorageError => {
  const cause = error.reason.cause
  const code = typeof cause === "object" && cause !== null && "code" in cause ? ` (SQLSTATE ${String(cause.code)})` : ""
  const message = cause instanceof Error && cause.message !== "" ? cause.message : error.reason.message
  return new StorageError({ operation, message: `${message}${code}` })
}

const sqlFailure = (operation: string) => <A, R>(effect: Effect.Effect<A, SqlError | StorageError, R>) =>
  Effect.catchTag(effect, "SqlError", (error) => Effect.fail(fromSqlError(operation, error)))
