/**
 * Takes pattern deltas from TVs: rate limit, idempotency by version, then a group commit (every
 * delta waiting when the writer is free goes to the database in one statement) and only then the
 * acknowledgement. Patterns arrive in the quantizer's rotated basis (as `ingestCodec` decodes
 * them). The quality ones (success rate at least `qualityThreshold`) are accepted: folded into
 * the in-memory Aggregator. Every pattern with enough samples, quality or not, is viewing:
 * buffered for trend and co-watch decoding (ShardTrends, decoded off the ack path when snapshots
 * are rebuilt). Each region's global patterns and trends are answered from a cached snapshot,
 * rebuilt every few seconds, pushed to open sessions (at most once per `pushEvery` unless
 * federated), written to the database once per `persistEvery`; a restarted shard starts from
 * those and the log after them.
 */
import {
  type ContentEmbedding,
  type CoWatchCount,
  type CoWatchRow,
  type DeltaAck,
  fromRotatedBasis,
  type GlobalPattern,
  type GlobalPatterns,
  makeWireCodec,
  MAX_GLOBAL_PATTERNS,
  type PatternDelta,
  type PatternId,
  type SharedPattern,
  SUCCESS_THRESHOLD,
  toRotatedBasis,
  type TrendSignal,
  type WireCodec
} from "@omega/protocol"
import {
  Clock,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Layer,
  Metric,
  PubSub,
  Queue,
  Schedule,
  Semaphore
} from "effect"
import { Aggregator, type AggregatorConfig, defaultAggregatorConfig } from "./Aggregator.ts"
import type { DeviceState } from "./ShardManager.ts"
import { type DevicePatternsUpdate, ShardStorage, type StorageError } from "./ShardStorage.ts"
import { defaultShardTrendsConfig, ShardTrends, type ShardTrendsConfig } from "./ShardTrends.ts"

export interface IngestionConfig {
  /** Shortest time between two accepted deltas of one device (the product brief: 1 per minute). */
  readonly minSyncInterval: Duration.Input
  /**
   * Patterns below this success rate are not aggregated into global patterns (nor counted as
   * stored). They still count as viewing for trends and co-watch, weighted by their success rate:
   * what devices watch matters there whether or not they finished it.
   */
  readonly qualityThreshold: number
  /** Patterns with less evidence are ignored altogether. */
  readonly minSamples: number
  /** Most deltas written in one transaction. */
  readonly maxBatch: number
  /** How often regions' global patterns are recomputed (when something changed). */
  readonly snapshotEvery: Duration.Input
  readonly snapshotPatterns: number
  readonly snapshotTrends: number
  /**
   * Shortest time between two pushes of a region's own changed snapshot to its open sessions
   * (each push is one frame to every session of the region). Federated results are pushed at
   * once, and a TV that connects gets the current snapshot either way.
   */
  readonly pushEvery: Duration.Input
  /** How long one push of a region's own snapshot is spread over its sessions. */
  readonly pushSpread: Duration.Input
  /**
   * How often changed snapshots are written to the database, where a restarted shard starts from
   * them. Kept off the refresh: writing 100 HNSW-indexed patterns took ~230 ms on PGlite (when it
   * still shared the shard's thread; it now has a worker thread of its own, where the write still
   * holds up the group commits queued behind it). Snapshot versions are numbered here, at least the
   * clock in ms, so they keep rising across restarts.
   */
  readonly persistEvery: Duration.Input
  /** Most logged deltas (the newest) a restarted shard folds back into its aggregation, of those after its last snapshots. */
  readonly replayLimit: number
  readonly aggregator: AggregatorConfig
  /** Trends (and co-watch rows) decoded from this shard's uploads (trends served when no federated ones are). */
  readonly trends: ShardTrendsConfig
  /**
   * How often co-watch rows are recounted and the changed ones pushed to every open session
   * (recounting walks every co-watched pair once).
   */
  readonly coWatchEvery: Duration.Input
  /**
   * How often logged deltas are applied to device_patterns, off the acknowledgement path; undefined
   * leaves them in the log only. Each pass writes pattern rows into an HNSW index; on PGlite (one
   * connection, on its own worker thread) the group commits wait behind it, so the default keeps
   * it off.
   */
  readonly materializeEvery: Duration.Input | undefined
  /** Logged deltas applied per pass. */
  readonly materializeBatch: number
}

export const defaultIngestionConfig: IngestionConfig = {
  minSyncInterval: Duration.minutes(1),
  qualityThreshold: SUCCESS_THRESHOLD,
  minSamples: 2,
  maxBatch: 512,
  snapshotEvery: Duration.seconds(5),
  snapshotPatterns: 100,
  snapshotTrends: 20,
  pushEvery: Duration.minutes(1),
  pushSpread: Duration.seconds(10),
  persistEvery: Duration.minutes(1),
  replayLimit: 100_000,
  aggregator: defaultAggregatorConfig,
  trends: defaultShardTrendsConfig,
  coWatchEvery: Duration.minutes(1),
  materializeEvery: undefined,
  materializeBatch: 500
}

/** Deltas of a written batch folded into the aggregates between two yields to the event loop. */
const FOLD_SLICE = 32

/**
 * How a shard decodes what TVs send: embeddings stay in the quantizer's rotated basis (cosines
 * and sums there are those of the decoded vectors); only published patterns are rotated back.
 */
export const ingestCodec = makeWireCodec({ basis: "rotated" })

/** A delta was not taken; `retryAfterMs` with rate-limited. Nothing of it was stored. */
export class IngestError extends Data.TaggedError("IngestError")<{
  readonly reason: "rate-limited" | "storage"
  readonly message: string
  readonly retryAfterMs?: number
}> {}

/** Exported on /metrics; updated once per group commit, not per delta. */
export const ingestionMetrics = {
  patternsStored: Metric.gauge("omega_patterns_stored", { description: "Acknowledged patterns in the durable log" }),
  batchSize: Metric.gauge("omega_ingest_batch_deltas", { description: "Deltas in the last group commit" })
}

/** Co-watch rows and the version a TV holds once it has them. */
export interface CoWatchRows {
  readonly version: number
  readonly rows: ReadonlyArray<CoWatchRow>
}

/** A region's snapshot changed: sessions of the region should get it within `spreadMs`. */
export interface SnapshotPush {
  readonly region: string
  /**
   * The server sends to the region's sessions a slice at a time over this long, so a push to
   * every session of a region is spread out instead of being one burst; 0 for federated results
   * (still in slices, a tick apart).
   */
  readonly spreadMs: number
}

export interface IngestionStats {
  /** Acknowledged patterns in the durable log, this run and before it. */
  readonly patternsStored: number
  readonly deltasAccepted: number
  readonly deltasDuplicate: number
  readonly deltasRateLimited: number
  readonly patternsAccepted: number
  /** Patterns not aggregated: below the quality threshold (still counted as viewing) or too thin. */
  readonly patternsFiltered: number
  readonly batches: number
  /** A restarted shard is still folding logged deltas back in (its snapshots are not written meanwhile). */
  readonly replaying: boolean
  readonly clusters: number
  readonly publishableClusters: number
}

export interface RefreshReport {
  readonly regions: ReadonlyArray<string>
  /** Clusters considered across those regions. */
  readonly clusters: number
  /** Global patterns published (each aggregates at least k devices). */
  readonly published: number
}

export class Ingestion extends Context.Service<Ingestion, {
  /**
   * Takes one delta from an authenticated device, with the frame bytes it came in (they are
   * what the durable log keeps); the ack is returned once the delta is durable. The delta is as
   * `ingestCodec` decodes it: embeddings in the quantizer's rotated basis, where aggregation
   * needs no inverse rotation per upload.
   */
  readonly submit: (device: DeviceState, delta: PatternDelta, frame: Uint8Array) => Effect.Effect<DeltaAck, IngestError>
  /** The cached global patterns of a region. */
  readonly snapshot: (region: string) => Effect.Effect<GlobalPatterns>
  /** Regions whose snapshot changed, as they are pushed (see `pushEvery`). */
  readonly updates: PubSub.PubSub<SnapshotPush>
  /** Recomputes the snapshots of regions that changed (or all of them); returns what was published. */
  readonly refresh: (all: boolean) => Effect.Effect<RefreshReport, StorageError>
  readonly stats: Effect.Effect<IngestionStats>
  /** Regions this shard has aggregated anything for. */
  readonly regions: Effect.Effect<ReadonlyArray<string>>
  /** This shard's own aggregated patterns of a region, groups below k included, for a federation round. */
  readonly localPatterns: (region: string, limit: number) => Effect.Effect<ReadonlyArray<GlobalPattern>>
  /**
   * This shard's own trends of a region (each item backed by at least k of its devices), for a
   * federation round; uploads still waiting are decoded first, within the pass budget.
   */
  readonly localTrends: (region: string, limit: number) => Effect.Effect<ReadonlyArray<TrendSignal>>
  /** Catalog items the shard now distributes: trends are decoded against them from now on. */
  readonly addContent: (items: ReadonlyArray<ContentEmbedding>) => Effect.Effect<void>
  /** The co-watch rows a TV holding `version` lacks, with the version they bring it to. */
  readonly coWatchSince: (version: number) => Effect.Effect<CoWatchRows>
  /** Co-watch rows as they change (each update only the changed rows), for every open session. */
  readonly coWatchUpdates: PubSub.PubSub<CoWatchRows>
  /** Recounts co-watch rows now (uploads waiting are decoded first) and publishes the changed ones. */
  readonly publishCoWatch: Effect.Effect<CoWatchRows>
  /**
   * Takes a region's federated patterns (aggregated across shards by the federation worker): they
   * are what the region's TVs get from now on, pushed on their open sessions.
   */
  readonly applyFederated: (region: string, global: GlobalPatterns) => Effect.Effect<void, StorageError>
  /**
   * This shard's co-watch counts for a federation worker, sub-k pairs included (across shards
   * they may reach k), and how many devices changed them since the last call.
   */
  readonly localCoWatch: Effect.Effect<{ readonly rows: ReadonlyArray<CoWatchCount>; readonly changedDevices: number }>
  /** Takes the co-watch table a worker federated across shards and publishes what changed to the TVs. */
  readonly applyFederatedCoWatch: (rows: ReadonlyArray<CoWatchRow>) => Effect.Effect<CoWatchRows>
}>()("omega/constellation/Ingestion") {
  static readonly layer = (config: IngestionConfig = defaultIngestionConfig) => Layer.effect(Ingestion, make(config))
}

/** A region's snapshot of this shard's own aggregation, waiting to be written. */
interface ToPersist {
  readonly patterns: ReadonlyArray<GlobalPattern>
  readonly version: number
  /** When it was taken (under `folding`): a restart folds back only the deltas logged after it. */
  readonly takenAt: number
}

interface Pending {
  readonly device: DeviceState
  readonly delta: PatternDelta
  readonly frame: Uint8Array
  /** The quality patterns, aggregated and acknowledged as accepted. */
  readonly patterns: ReadonlyArray<SharedPattern>
  /** Every pattern with enough evidence: viewing for trends and co-watch. */
  readonly viewing: ReadonlyArray<SharedPattern>
  readonly done: Deferred.Deferred<DeltaAck, IngestError>
}

function make(config: IngestionConfig) {
  return Effect.gen(function*() {
    const storage = yield* ShardStorage
    const aggregator = new Aggregator(config.aggregator)
    // Fed the accepted patterns as they are, in the rotated basis of the ingest codec.
    const trends = new ShardTrends(config.trends, "rotated")
    const minIntervalMs = Duration.toMillis(Duration.fromInputUnsafe(config.minSyncInterval))
    const codec = makeWireCodec()
    /** The patterns of a delta with enough evidence to count as viewing (added and updated alike). */
    const viewed = (delta: PatternDelta) =>
      [...delta.added, ...delta.updated].filter((p) => p.sampleCount >= config.minSamples)
    // Success rates travel as 32-bit floats: 7 of 10 arrives as 0.699999988, still quality.
    const minSuccessRate = Math.fround(config.qualityThreshold)
    /** Of those, the ones worth aggregating. */
    const quality = (patterns: ReadonlyArray<SharedPattern>) => patterns.filter((p) => p.successRate >= minSuccessRate)
    const kept = (delta: PatternDelta) => quality(viewed(delta))
    /** A logged frame's delta, decoded as `decoder` reads it; none for a frame that is not an upload. */
    const loggedDelta = (decoder: WireCodec, frame: Uint8Array) =>
      Effect.map(
        Effect.option(decoder.decode(frame)),
        (decoded) => decoded._tag === "Some" && decoded.value._tag === "DeltaUpload" ? decoded.value.delta : undefined
      )
    const queue = yield* Queue.unbounded<Pending>()
    const updates = yield* PubSub.unbounded<SnapshotPush>()
    const snapshots = new Map<string, GlobalPatterns>()
    // Cross-shard patterns from the last federation round, served instead of this shard's own.
    const federated = new Map<string, GlobalPatterns>()
    const dirty = new Set<string>()
    const counters = {
      patternsStored: (yield* storage.counts).loggedPatterns,
      deltasAccepted: 0,
      deltasDuplicate: 0,
      deltasRateLimited: 0,
      patternsAccepted: 0,
      patternsFiltered: 0,
      batches: 0
    }

    trends.addContent(yield* storage.listContentSince(0, config.trends.maxCatalog))
    /** The ids of each region's stored patterns: a written snapshot replaces them (see `persist`). */
    const persistedIds = new Map<string, ReadonlySet<PatternId>>()
    // Start from what the database already aggregated, so a restarted shard answers at once.
    for (const region of yield* storage.regions) {
      const patterns = yield* storage.loadAggregated(region, MAX_GLOBAL_PATTERNS)
      persistedIds.set(region, new Set(patterns.map((p) => p.id)))
      aggregator.seed(region, patterns.map(toRotated), yield* Clock.currentTimeMillis)
      snapshots.set(region, {
        version: yield* storage.globalVersion(region),
        similar: patterns.slice(0, config.snapshotPatterns),
        trending: yield* storage.loadTrends(region, config.snapshotTrends)
      })
    }

    // What was acknowledged after the last written snapshots is in the log: fold it back in, in the
    // background (the shard serves meanwhile), a hundred deltas between yields. Until it is done no
    // snapshot is written: one stamped now would hide the deltas not yet folded back from the next
    // restart.
    let replayDone = false
    yield* Effect.gen(function*() {
      let replayed = 0
      for (const logged of yield* storage.deltasSinceSnapshots(config.replayLimit)) {
        const delta = yield* loggedDelta(ingestCodec, logged.frame)
        if (delta === undefined) continue
        aggregator.add(logged.region, logged.deviceId, kept(delta), yield* Clock.currentTimeMillis)
        dirty.add(logged.region)
        if (++replayed % 100 === 0) yield* Effect.yieldNow
      }
      if (replayed > 0) yield* Effect.logInfo(`folded ${replayed} logged deltas newer than the last snapshots back in`)
    }).pipe(
      Effect.catch((error) => Effect.logWarning("folding logged deltas back in failed", error)),
      Effect.ensuring(Effect.sync(() => replayDone = true)),
      Effect.forkScoped
    )

    // Untraced: it runs for every delta, and a span per call costs more than the rest of it.
    const submit = Effect.fnUntraced(
      function*(device: DeviceState, delta: PatternDelta, frame: Uint8Array) {
        if (delta.version <= device.lastVersion) {
          counters.deltasDuplicate += 1
          return ack(delta.version, 0, true)
        }
        const now = yield* Clock.currentTimeMillis
        const wait = device.lastSyncAt + minIntervalMs - now
        if (wait > 0) {
          counters.deltasRateLimited += 1
          return yield* new IngestError({
            reason: "rate-limited",
            message: `one sync per ${minIntervalMs / 1000} s per device`,
            retryAfterMs: wait
          })
        }
        const viewing = viewed(delta)
        const patterns = quality(viewing)
        counters.patternsFiltered += delta.added.length + delta.updated.length - patterns.length
        const done = yield* Deferred.make<DeltaAck, IngestError>()
        yield* Queue.offer(queue, { device, delta, frame, patterns, viewing, done })
        return yield* Deferred.await(done)
      }
    )

    /**
     * Held from a batch's write to the end of its folding in, and by a snapshot as it is taken: a
     * snapshot stamped at time t then holds every delta logged at or before t, and every delta
     * logged after it is stamped later than t (see `logClock`), which is what a restarted shard
     * assumes when it folds back only the deltas logged after its snapshots.
     */
    const folding = yield* Semaphore.make(1)
    /**
     * Received times of batches and stamps of snapshots, both taken under `folding`, kept strictly
     * ordered: the millisecond clock can give a snapshot and the next batch the same time (or step
     * back), and replay would then miss or double that batch.
     */
    const logClock = { lastBatch: 0, lastSnapshot: 0 }

    /** The group commit: everything queued while the last batch was being written, in one transaction. */
    const writeBatch = Effect.gen(function*() {
      const batch = yield* Queue.takeBetween(queue, 1, config.maxBatch)
      yield* folding.withPermit(writeAndFold(batch))
    })

    const writeAndFold = Effect.fnUntraced(function*(batch: ReadonlyArray<Pending>) {
      // A device may have two deltas in one batch (a replay racing its original): keep the newest.
      const newest = new Map<string, Pending>()
      for (const p of batch) {
        const seen = newest.get(p.device.id)
        if (seen === undefined || p.delta.version > seen.delta.version) newest.set(p.device.id, p)
      }
      const writes = [...newest.values()]
      const receivedAt = Math.max(yield* Clock.currentTimeMillis, logClock.lastSnapshot + 1, logClock.lastBatch)
      logClock.lastBatch = receivedAt
      const result = yield* Effect.exit(storage.appendDeltas(
        writes.map((p) => ({
          deviceId: p.device.id,
          version: p.delta.version,
          region: p.device.region,
          patterns: p.patterns.length,
          frame: p.frame
        })),
        receivedAt
      ))
      counters.batches += 1
      const now = yield* Clock.currentTimeMillis
      const fresh = new Set(result._tag === "Success" ? writes.filter((_, i) => result.value[i]) : [])
      let handled = 0
      for (const p of batch) {
        // A big batch (hundreds of deltas under load) is folded in slices: between them, the
        // acknowledgements already settled go out instead of waiting for the whole batch.
        if (++handled % FOLD_SLICE === 0) yield* Effect.yieldNow
        if (result._tag === "Failure") {
          yield* Deferred.fail(
            p.done,
            new IngestError({ reason: "storage", message: "the shard could not store the delta" })
          )
          continue
        }
        // Only the newest delta of a device in this batch, and only if the log had not seen it before.
        if (fresh.has(p) && p.delta.version > p.device.lastVersion) {
          p.device.lastVersion = p.delta.version
          p.device.lastSyncAt = now
          aggregator.add(p.device.region, p.device.id, p.patterns, now)
          trends.observe(p.device.region, p.device.id, p.viewing, now)
          dirty.add(p.device.region)
          counters.deltasAccepted += 1
          counters.patternsAccepted += p.patterns.length
          counters.patternsStored += p.patterns.length
          yield* Deferred.succeed(p.done, ack(p.delta.version, p.patterns.length, false))
        } else {
          counters.deltasDuplicate += 1
          yield* Deferred.succeed(p.done, ack(p.delta.version, 0, true))
        }
      }
      yield* Metric.update(ingestionMetrics.patternsStored, counters.patternsStored)
      yield* Metric.update(ingestionMetrics.batchSize, batch.length)
      if (result._tag === "Failure") yield* Effect.logError("delta batch write failed", result.cause)
    })
    yield* Metric.update(ingestionMetrics.patternsStored, counters.patternsStored)
    yield* Effect.forkScoped(Effect.forever(writeBatch))

    /** Applies logged deltas to device_patterns; a restarted shard picks up where this stopped. */
    const materialize = Effect.gen(function*() {
      const pending = yield* storage.unmaterialized(config.materializeBatch)
      if (pending.length === 0) return 0
      const writes: Array<DevicePatternsUpdate> = []
      for (const logged of pending) {
        const delta = yield* loggedDelta(codec, logged.frame)
        if (delta === undefined) continue
        const patterns = kept(delta)
        // A device's table holds its quality patterns: one that fell below them (in success rate or
        // in samples) leaves it.
        const fell = [...delta.added, ...delta.updated].filter((p) => !patterns.includes(p)).map((p) => p.id)
        writes.push({
          deviceId: logged.deviceId,
          patterns,
          removed: [...delta.removed, ...fell],
          version: logged.version
        })
      }
      yield* storage.upsertDevicePatternsBatch(writes)
      yield* storage.markMaterialized(pending)
      return pending.length
    })
    if (config.materializeEvery !== undefined) {
      yield* materialize.pipe(
        Effect.catch((error) => Effect.logWarning("materializing logged deltas failed", error).pipe(Effect.as(0))),
        Effect.schedule(Schedule.spaced(config.materializeEvery)),
        Effect.forkScoped
      )
    }

    // Regions whose snapshot changed since it was last pushed, and when each was last pushed.
    const unpushed = new Set<string>()
    const lastPushAt = new Map<string, number>()
    const pushEveryMs = Duration.toMillis(Duration.fromInputUnsafe(config.pushEvery))
    const pushSpreadMs = Duration.toMillis(Duration.fromInputUnsafe(config.pushSpread))
    const pushDue = Effect.fnUntraced(function*(now: number, force: string | undefined) {
      for (const region of unpushed) {
        if (region !== force && now - (lastPushAt.get(region) ?? Number.NEGATIVE_INFINITY) < pushEveryMs) continue
        unpushed.delete(region)
        lastPushAt.set(region, now)
        yield* PubSub.publish(updates, { region, spreadMs: region === force ? 0 : pushSpreadMs })
      }
    })

    /**
     * What each region's next written snapshot holds: this shard's own aggregation (never the
     * federated patterns it serves instead, which count other shards' devices: seeded back as its
     * own after a restart, they would be counted twice), stamped when it was taken.
     */
    const unpersisted = new Map<string, ToPersist>()
    /** Writes the snapshots taken since the last write; each replaces its region's stored patterns. */
    const persist = Effect.gen(function*() {
      for (const [region, snapshot] of unpersisted) {
        unpersisted.delete(region)
        const previous = persistedIds.get(region) ?? new Set<PatternId>()
        const ids = new Set(snapshot.patterns.map((p) => p.id))
        const removed = [...previous].filter((id) => !ids.has(id))
        const written = yield* Effect.exit(
          storage.upsertAggregated(region, snapshot.patterns, removed, snapshot.version, snapshot.takenAt)
        )
        if (written._tag === "Success") {
          persistedIds.set(region, ids)
          continue
        }
        // Tried again next time, unless a newer snapshot was taken meanwhile.
        if (!unpersisted.has(region)) unpersisted.set(region, snapshot)
        return yield* Effect.failCause(written.cause)
      }
    })

    /** One region's snapshot at a time: two at once could number two different snapshots alike. */
    const refreshing = yield* Semaphore.make(1)
    const refreshRegion = (region: string, pushNow: boolean) =>
      refreshing.withPermit(Effect.gen(function*() {
        const fromFederation = federated.get(region)
        // Between two batches (see `folding`), so that the snapshot holds all it is stamped with.
        const { now, own } = yield* folding.withPermit(Effect.map(Clock.currentTimeMillis, (clock) => {
          const takenAt = Math.max(clock, logClock.lastBatch, logClock.lastSnapshot)
          logClock.lastSnapshot = takenAt
          return { now: takenAt, own: aggregator.snapshot(region, config.snapshotPatterns, takenAt).map(fromRotated) }
        }))
        const similar = fromFederation?.similar.slice(0, config.snapshotPatterns) ?? own
        const version = Math.max((snapshots.get(region)?.version ?? 0) + 1, now)
        const federatedTrends = fromFederation !== undefined && fromFederation.trending.length > 0
        if (federatedTrends) {
          yield* storage.upsertTrends(fromFederation.trending.map((t) => ({ ...t, region })))
        }
        // Without cross-shard trends, this shard's own (k-anonymous) ones; else the stored ones.
        const local = federatedTrends ? [] : trends.signals(region, now, config.snapshotTrends)
        const trending = local.length > 0 ? local : yield* storage.loadTrends(region, config.snapshotTrends)
        snapshots.set(region, { version, similar, trending })
        if (replayDone) unpersisted.set(region, { patterns: own, version, takenAt: now })
        unpushed.add(region)
        yield* pushDue(now, pushNow ? region : undefined)
        return similar.length
      }))

    /**
     * One pass of trend decoding within its time budget, an upload at a time with a yield between
     * (acks go out meanwhile); the regions it touched get new snapshots.
     */
    const decodeTrends = Effect.gen(function*() {
      const started = yield* Clock.currentTimeMillis
      let now = started
      while (trends.decodable && now - started < config.trends.decodeBudgetMs) {
        for (const region of trends.decode(0)) dirty.add(region)
        yield* Effect.yieldNow
        now = yield* Clock.currentTimeMillis
      }
      trends.prune(now)
      return now
    })

    const refresh = Effect.fnUntraced(function*(all: boolean) {
      const now = yield* decodeTrends
      // Faded clusters go, and each region keeps at most maxClustersPerRegion (the weakest are dropped).
      aggregator.prune(now)
      const regions = all ? aggregator.regionNames() : [...dirty]
      dirty.clear()
      let published = 0
      let failure: StorageError | undefined
      for (const region of regions) {
        // One region's failure neither keeps the others from their new snapshots nor loses its own change.
        const refreshed = yield* Effect.result(refreshRegion(region, false))
        if (refreshed._tag === "Success") published += refreshed.success
        else {
          dirty.add(region)
          failure ??= refreshed.failure
        }
      }
      if (failure !== undefined) return yield* failure
      // Changes held back by pushEvery go out once it has passed.
      yield* pushDue(now, undefined)
      return { regions, clusters: aggregator.stats().clusters, published } satisfies RefreshReport
    })
    yield* refresh(false).pipe(
      Effect.catch((error) => Effect.logWarning("refreshing global patterns failed", error)),
      Effect.schedule(Schedule.spaced(config.snapshotEvery)),
      Effect.forkScoped
    )
    let coWatchVersion = 0
    const coWatchUpdates = yield* PubSub.unbounded<CoWatchRows>()
    const publishCoWatch = Effect.gen(function*() {
      const now = yield* decodeTrends
      const version = Math.max(coWatchVersion + 1, now)
      const rows = trends.publishCoWatch(version, now)
      if (rows.length === 0) return { version: coWatchVersion, rows }
      coWatchVersion = version
      const update = { version, rows }
      yield* PubSub.publish(coWatchUpdates, update)
      return update
    })
    yield* publishCoWatch.pipe(Effect.schedule(Schedule.spaced(config.coWatchEvery)), Effect.forkScoped)
    yield* persist.pipe(
      Effect.catch((error) => Effect.logWarning("writing global patterns failed", error)),
      Effect.schedule(Schedule.spaced(config.persistEvery)),
      Effect.forkScoped
    )
    // A shard stopped on purpose leaves its latest snapshots behind.
    yield* Effect.addFinalizer(() => Effect.ignore(persist))

    return Ingestion.of({
      submit,
      snapshot: (region) => Effect.sync(() => snapshots.get(region) ?? { version: 0, similar: [], trending: [] }),
      updates,
      refresh,
      stats: Effect.sync(() => {
        const s = aggregator.stats()
        return { ...counters, replaying: !replayDone, clusters: s.clusters, publishableClusters: s.publishable }
      }),
      regions: Effect.sync(() => aggregator.regionNames()),
      localPatterns: (region, limit) =>
        Effect.map(Clock.currentTimeMillis, (now) => aggregator.snapshot(region, limit, now, 1).map(fromRotated)),
      localTrends: (region, limit) => Effect.map(decodeTrends, (now) => trends.signals(region, now, limit)),
      addContent: (items) => Effect.sync(() => trends.addContent(items)),
      coWatchSince: (version) =>
        Effect.sync(() => ({
          version: coWatchVersion,
          rows: version >= coWatchVersion ? [] : trends.coWatchSince(version)
        })),
      coWatchUpdates,
      publishCoWatch,
      applyFederated: Effect.fnUntraced(function*(region: string, global: GlobalPatterns) {
        federated.set(region, global)
        yield* refreshRegion(region, true)
      }),
      localCoWatch: Effect.map(decodeTrends, (now) => trends.exportCoWatch(now)),
      applyFederatedCoWatch: (rows) =>
        Effect.andThen(
          Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => trends.applyFederatedCoWatch(rows, now))),
          publishCoWatch
        )
    })
  })
}

const ack = (version: number, accepted: number, duplicate: boolean): DeltaAck => ({
  _tag: "DeltaAck",
  version,
  accepted,
  duplicate
})

const toRotated = (p: GlobalPattern): GlobalPattern => ({ ...p, embedding: toRotatedBasis(p.embedding) })
const fromRotated = (p: GlobalPattern): GlobalPattern => ({ ...p, embedding: fromRotatedBasis(p.embedding) })
