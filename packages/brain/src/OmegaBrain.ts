/**
 * The TV brain as one service: observe what is watched, recommend for a context, and
 * exchange pattern deltas with the constellation. Restores its state from BrainStore on
 * start and runs the session and daily learning loops while it lives.
 */
import {
  ContentEmbedding,
  CoWatchRow,
  decoder,
  GlobalPatterns,
  MAX_COWATCH_ROWS,
  MAX_DELTA_PATTERNS,
  type PatternDelta,
  type PatternId,
  type ProtocolDecodeError,
  type Recommendation,
  type SharedPattern,
  Version,
  ViewContext,
  ViewingEvent
} from "@omega/protocol"
import { Clock, Context, Effect, Layer, Schedule, Schema, Semaphore } from "effect"
import { BrainStore, type BrainVersions, type LocalPattern, type StoreError } from "./BrainStore.ts"
import { Catalog } from "./Catalog.ts"
import { Embedder, type EmbedError } from "./Embedder.ts"
import {
  decayPattern,
  defaultLearningConfig,
  foldObservation,
  isSuccess,
  type LearningConfig,
  mergePatterns,
  patternContextOf,
  sameContext
} from "./Learning.ts"
import { defaultTierLimits, MemoryTiers, type RecommendationSource, type TierLimits } from "./MemoryTiers.ts"
import { OnnxEmbedder } from "./OnnxEmbedder.ts"
import { defaultRecommenderConfig, Recommender, type RecommenderConfig } from "./Recommender.ts"
import { type IndexError, VectorIndex } from "./VectorIndex.ts"

export interface BrainConfig {
  readonly learning: LearningConfig
  readonly recommender: RecommenderConfig
  readonly tiers: TierLimits
  /**
   * Patterns below this success rate are not synced. By default every pattern is: the
   * constellation aggregates only quality ones into global patterns, but counts all of them as
   * viewing for trends and co-watch (on the MovieLens validation split, sharing only patterns at
   * SUCCESS_THRESHOLD left about half the viewing out and federated HR@10 fell from 0.149 to 0.125).
   */
  readonly shareThreshold: number
  /** A pattern needs this much evidence before it is shared. */
  readonly minSamplesToShare: number
  readonly maxDeltaPatterns: number
  /** Run the session and daily loops on their schedules (off in benchmarks that drive them by hand). */
  readonly runLearningLoops: boolean
}

export const defaultBrainConfig: BrainConfig = {
  learning: defaultLearningConfig,
  recommender: defaultRecommenderConfig,
  tiers: defaultTierLimits,
  shareThreshold: 0,
  minSamplesToShare: 2,
  maxDeltaPatterns: 20,
  runLearningLoops: true
}

export interface ObserveResult {
  readonly patternId: PatternId
  /** True when the event started a new pattern rather than reinforcing one. */
  readonly newPattern: boolean
  readonly version: number
}

export interface ConsolidationReport {
  readonly merged: number
  readonly patterns: number
}

export interface DecayReport {
  readonly forgotten: number
  readonly patterns: number
}

export interface BrainStats {
  readonly patterns: number
  readonly collectivePatterns: number
  readonly trends: number
  readonly catalogItems: number
  readonly watchedItems: number
  readonly versions: BrainVersions
  readonly pendingDeltas: number
  readonly outcomes: Readonly<Record<RecommendationSource, { readonly watched: number; readonly successes: number }>>
}

/** Anything the brain could not do for a reason other than bad input. */
export type BrainError = StoreError | IndexError | EmbedError

export class OmegaBrain extends Context.Service<OmegaBrain, {
  /** Learns from one viewing event (validated against the protocol schema). */
  readonly observe: (event: unknown) => Effect.Effect<ObserveResult, ProtocolDecodeError | BrainError>
  /** Up to `limit` (1..MAX_RECOMMENDATIONS) ranked suggestions for a context; works offline, never fails on storage. */
  readonly recommend: (
    context: unknown,
    limit?: number
  ) => Effect.Effect<ReadonlyArray<Recommendation>, ProtocolDecodeError | IndexError | StoreError>
  /**
   * Shareable changes since `sinceVersion` (default: the last acknowledged version): patterns
   * with success rate >= the threshold and removals (those acknowledged are pruned), oldest first,
   * capped; the delta's version covers exactly what it carries. It waits in the outbox until
   * acknowledged.
   */
  readonly prepareSyncDelta: (sinceVersion?: number) => Effect.Effect<PatternDelta, BrainError>
  /** The constellation has durably received everything up to `version`. */
  readonly acknowledgeDelta: (version: number) => Effect.Effect<void, StoreError>
  /** Deltas prepared but not yet acknowledged, oldest first (they survive restarts). */
  readonly pendingDeltas: Effect.Effect<ReadonlyArray<PatternDelta>, StoreError>
  /** Takes in global patterns and trends; an older or equal version is ignored (returns false). */
  readonly applyGlobalPatterns: (global: unknown) => Effect.Effect<boolean, ProtocolDecodeError | BrainError>
  /**
   * Takes in co-watch rows (`{ version, rows }`, validated against the protocol schema): each
   * replaces the item's row, an empty one removes it. An older version is ignored (returns false).
   */
  readonly applyCoWatch: (update: unknown) => Effect.Effect<boolean, ProtocolDecodeError | BrainError>
  /** Adds or updates catalog items the brain can recommend (validated against the protocol schema). */
  readonly addContent: (
    items: ReadonlyArray<ContentEmbedding>
  ) => Effect.Effect<void, ProtocolDecodeError | BrainError>
  /** Session-scale loop: merges near-duplicate patterns. */
  readonly consolidate: Effect.Effect<ConsolidationReport, BrainError>
  /** Daily loop: fades evidence not reinforced for a day and forgets what faded away. */
  readonly decay: Effect.Effect<DecayReport, BrainError>
  readonly stats: Effect.Effect<BrainStats, StoreError>
}>()("omega/brain/OmegaBrain") {
  /** The brain on whatever Embedder, VectorIndex and BrainStore are provided. */
  static readonly layer = (config: BrainConfig = defaultBrainConfig) =>
    OmegaBrain.layerOnCatalog(config).pipe(Layer.provideMerge(Catalog.layer))

  /**
   * The brain on a Catalog provided from outside, for example one read-only catalog shared by
   * many simulated TVs in an evaluation (each brain's own store then holds no catalog rows).
   */
  static readonly layerOnCatalog = (config: BrainConfig = defaultBrainConfig) =>
    Layer.effect(OmegaBrain, make(config)).pipe(
      Layer.provide(Recommender.layer(config.recommender)),
      Layer.provideMerge(MemoryTiers.layer(config.tiers))
    )

  /**
   * A TV's brain as deployed: usearch HNSW, SQLite at `path`, and the ONNX sentence-transformer
   * when `modelDir` is given (else the weight-free hashing embedder). The Embedder is provided as
   * well, so that catalog items can be embedded exactly as the brain embeds what is watched.
   */
  static readonly layerLive = (options: {
    readonly path: string
    readonly modelDir?: string | undefined
    readonly synchronous?: "normal" | "full"
    readonly config?: BrainConfig
  }) =>
    OmegaBrain.layer(options.config ?? defaultBrainConfig).pipe(
      Layer.provide(Layer.mergeAll(
        VectorIndex.layer,
        BrainStore.layer({ path: options.path, synchronous: options.synchronous ?? "normal" })
      )),
      Layer.provideMerge(
        options.modelDir === undefined ? Embedder.layerHashing : OnnxEmbedder.layer({ modelDir: options.modelDir })
      )
    )

  /** A complete in-memory brain: hashing embedder, brute-force index, SQLite in memory. */
  static readonly layerTest = (config: BrainConfig = defaultBrainConfig) =>
    OmegaBrain.layer(config).pipe(
      Layer.provide(Layer.mergeAll(Embedder.layerHashing, VectorIndex.layerTest, BrainStore.layerTest))
    )
}

const decodeEvent = decoder(ViewingEvent, "ViewingEvent")
const decodeContext = decoder(ViewContext, "ViewContext")
/** At most this many recommendations per call (a screen shows a row or two). */
export const MAX_RECOMMENDATIONS = 1_000
const decodeLimit = decoder(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: MAX_RECOMMENDATIONS })), "limit")
const decodeGlobal = decoder(GlobalPatterns, "GlobalPatterns")
const decodeContent = decoder(Schema.Array(ContentEmbedding), "ContentEmbedding[]")
const decodeCoWatch = decoder(
  Schema.Struct({ version: Version, rows: Schema.Array(CoWatchRow).check(Schema.isMaxLength(MAX_COWATCH_ROWS)) }),
  "CoWatchUpdate"
)

const DAY_MS = 86_400_000

function make(config: BrainConfig) {
  return Effect.gen(function*() {
    const store = yield* BrainStore
    const embedder = yield* Embedder
    const tiers = yield* MemoryTiers
    const catalog = yield* Catalog
    const recommender = yield* Recommender

    // Resume where the last run stopped: rows from the store, index graphs from their snapshots
    // when those match the stored versions (a crash leaves them stale, and they are rebuilt).
    const snapshot = yield* store.load(config.tiers.episodes)
    let versions = snapshot.versions
    const snapshotPath = (name: string) =>
      store.location === undefined ? undefined : `${store.location}.${name}.usearch`
    const catalogSnapshot = snapshotPath("catalog")
    const skillsSnapshot = snapshotPath("skills")
    const catalogRestored = catalogSnapshot !== undefined &&
      (yield* catalog.restore(catalogSnapshot, versions.catalog, snapshot.catalog))
    if (!catalogRestored) yield* catalog.upsert(yield* store.catalogWithEmbeddings)
    const skillsRestored = skillsSnapshot !== undefined &&
      (yield* tiers.skills.restore(skillsSnapshot, versions.local, snapshot.patterns))
    if (!skillsRestored) yield* tiers.skills.upsertMany(snapshot.patterns)
    yield* tiers.collective.replace(snapshot.collective, snapshot.trends)
    catalog.setCoWatch(snapshot.coWatch)
    tiers.episodes.markWatched(snapshot.watched)
    for (const event of snapshot.recentEvents) tiers.episodes.remember(event)

    // One writer at a time: observe, the learning loops and sync read patterns, yield, and write
    // them back at the next versions. Recommending only reads, and never waits for them.
    const writer = yield* Semaphore.make(1)

    /**
     * Writes a batch of changed and removed patterns, each at a version of its own, so that a capped
     * delta can stop between any two changes and the acknowledged version always moves forward.
     */
    const rewrite = Effect.fnUntraced(
      function*(changed: ReadonlyArray<LocalPattern>, removed: ReadonlyArray<PatternId>) {
        const first = versions.local + 1
        const stamped = changed.map((p, i) => ({ ...p, version: first + i }))
        const removals = removed.map((id, i) => ({ id, version: first + changed.length + i }))
        const last = first + changed.length + removed.length - 1
        // Durable first: if the write fails, memory still matches what is stored.
        yield* store.rewritePatterns(stamped, removals, last)
        versions = { ...versions, local: last }
        for (const id of removed) yield* tiers.skills.remove(id)
        for (const p of stamped) yield* tiers.skills.upsert(p)
      }
    )

    // A store written before changes had versions of their own can hold a batch (an eviction, a
    // consolidation) at one version, which no capped delta can split: spread what is unsent once.
    const unsentPatterns = snapshot.patterns.filter((p) => p.version > versions.acknowledged)
    const unsentRemovals = yield* store.removedSince(versions.acknowledged)
    const perVersion = new Map<number, number>()
    for (const { version } of [...unsentPatterns, ...unsentRemovals]) {
      perVersion.set(version, (perVersion.get(version) ?? 0) + 1)
    }
    const batched = (change: { readonly version: number }) => perVersion.get(change.version)! > 1
    if (perVersion.size < unsentPatterns.length + unsentRemovals.length) {
      yield* rewrite(unsentPatterns.filter(batched), unsentRemovals.filter(batched).map((r) => r.id))
    }

    const addContent = Effect.fn("OmegaBrain.addContent")(function*(input: ReadonlyArray<ContentEmbedding>) {
      const items = yield* decodeContent(input)
      yield* catalog.upsert(items)
      yield* store.upsertCatalog(items)
      versions = { ...versions, catalog: versions.catalog + 1 }
    })

    /** The embedding of the watched item: from the catalog, or embedded and added to it. */
    const itemEmbedding = Effect.fnUntraced(function*(event: ViewingEvent) {
      const known = yield* catalog.embedding(event.contentId)
      if (known !== undefined) return known
      const embedding = yield* embedder.embedContent(event)
      const item: ContentEmbedding = { contentId: event.contentId, title: event.title, genres: event.genres, embedding }
      yield* addContent([item])
      return embedding
    })

    const observe = Effect.fn("OmegaBrain.observe")(function*(input: unknown) {
      const event = yield* decodeEvent(input)
      const item = yield* itemEmbedding(event)
      const context = patternContextOf(event.context)
      return yield* writer.withPermit(Effect.gen(function*() {
        const match = (yield* tiers.skills.nearest(item, 8)).find((n) =>
          n.similarity >= config.learning.assignThreshold && sameContext(n.value.context, context)
        )
        const version = versions.local + 1
        const pattern = foldObservation({
          pattern: match?.value,
          newId,
          event,
          item,
          version,
          config: config.learning
        })
        // Durable first: if the write fails, memory still matches what is stored.
        yield* store.recordObservation(event, pattern)
        versions = { ...versions, local: version }
        yield* tiers.skills.upsert(pattern)
        tiers.episodes.remember(event)
        tiers.causal.recordOutcome(event.contentId, isSuccess(event))
        if (match === undefined) yield* trimSkills(Math.ceil(config.tiers.skills * 0.02))
        return { patternId: pattern.id, newPattern: match === undefined, version } satisfies ObserveResult
      }))
    })

    /**
     * Keeps the skills tier within its bound by forgetting the least valuable patterns. It lets
     * the tier overshoot by 2% and then trims in one batch, so no single observe pays a full scan.
     */
    const trimSkills = Effect.fnUntraced(function*(slack: number) {
      const excess = tiers.skills.size() - config.tiers.skills
      if (excess <= slack) return 0
      const weakest = [...tiers.skills.all()].sort((a, b) => evictionScore(a) - evictionScore(b)).slice(0, excess)
      yield* rewrite([], weakest.map((p) => p.id))
      return weakest.length
    })

    const recommend = Effect.fn("OmegaBrain.recommend")(function*(input: unknown, limit: unknown = 10) {
      const context = yield* decodeContext(input)
      return yield* recommender.recommend(context, yield* decodeLimit(limit))
    })

    const prepareSyncDelta = Effect.fn("OmegaBrain.prepareSyncDelta")(function*(sinceVersion?: number) {
      // Read before selecting: every change selected below is at or under it.
      const local = versions.local
      const base = sinceVersion ?? versions.acknowledged
      const changed = [...tiers.skills.all()].filter((p) => p.version > base)
      const cap = Math.min(config.maxDeltaPatterns, MAX_DELTA_PATTERNS)
      const shareable = changed
        .filter((p) => p.successRate >= config.shareThreshold && p.sampleCount >= config.minSamplesToShare)
        .sort(byVersion)
      // A pattern that existed at `base` and is no longer worth sharing may have been shared: withdraw it.
      const withdrawn = changed
        .filter((p) => p.createdVersion <= base && p.successRate < config.shareThreshold)
        .map((p) => ({ id: p.id, version: p.version }))
      const removals = [...(yield* store.removedSince(base)), ...withdrawn].sort(byVersion)
      // Oldest first: when a cap leaves changes behind, the delta stops just below the first of them.
      // Every change has a version of its own, so the delta still carries one and `base` moves on.
      const leftBehind = [shareable[cap], removals[MAX_DELTA_PATTERNS]].filter((c) => c !== undefined)
      const version = leftBehind.length === 0 ? local : Math.min(...leftBehind.map((c) => c.version)) - 1
      const sent = shareable.filter((p) => p.version <= version)
      const removed = removals.filter((r) => r.version <= version)
      const delta: PatternDelta = {
        baseVersion: base,
        version,
        added: sent.filter((p) => p.createdVersion > base).map(toShared),
        updated: sent.filter((p) => p.createdVersion <= base).map(toShared),
        removed: removed.map((r) => r.id)
      }
      // An empty delta (nothing changed since `base`) is not worth keeping for a retry.
      if (delta.version > delta.baseVersion) yield* store.enqueueDelta(delta, yield* Clock.currentTimeMillis)
      return delta
    }, writer.withPermit)

    const acknowledgeDelta = Effect.fn("OmegaBrain.acknowledgeDelta")(function*(version: number) {
      yield* store.acknowledge(version)
      versions = { ...versions, acknowledged: Math.max(versions.acknowledged, version) }
    }, writer.withPermit)

    const pendingDeltas = store.outbox.pipe(Effect.map((entries) => entries.map((e) => e.delta)))

    const applyGlobalPatterns = Effect.fn("OmegaBrain.applyGlobalPatterns")(function*(input: unknown) {
      const global = yield* decodeGlobal(input)
      if (global.version <= versions.global) return false
      // One pattern per id, the last listed: a shard that repeats an id must not fail the whole update.
      const similar = [...new Map(global.similar.map((p) => [p.id, p])).values()]
      // Indexed first: a vector the index refuses must never reach the store and break the next start.
      yield* tiers.collective.replace(similar, global.trending)
      yield* store.saveGlobal(global.version, similar, global.trending)
      versions = { ...versions, global: global.version }
      return true
    })

    const applyCoWatch = Effect.fn("OmegaBrain.applyCoWatch")(function*(input: unknown) {
      const update = yield* decodeCoWatch(input)
      if (update.version < versions.coWatch) return false
      // Stored first: rows the store refused must not be recommended from and then forgotten on restart.
      yield* store.saveCoWatch(update.version, update.rows)
      catalog.setCoWatch(update.rows)
      versions = { ...versions, coWatch: update.version }
      return true
    })

    /** Saves both index graphs stamped with the versions they reflect; failures only cost a rebuild. */
    const saveSnapshots = Effect.gen(function*() {
      if (catalogSnapshot !== undefined) yield* catalog.save(catalogSnapshot, versions.catalog)
      if (skillsSnapshot !== undefined) yield* tiers.skills.save(skillsSnapshot, versions.local)
    }).pipe(Effect.catch((error) => Effect.logWarning("saving index snapshots failed", error)))
    yield* Effect.addFinalizer(() => saveSnapshots)

    const consolidate = Effect.gen(function*() {
      const patterns = [...tiers.skills.all()].sort((a, b) => b.sampleCount - a.sampleCount)
      const absorbed = new Set<PatternId>()
      const changed = new Map<PatternId, LocalPattern>()
      for (const pattern of patterns) {
        if (absorbed.has(pattern.id)) continue
        let merged = changed.get(pattern.id) ?? pattern
        for (const { similarity, value: other } of yield* tiers.skills.nearest(merged.embedding, 8)) {
          if (
            other.id === merged.id || absorbed.has(other.id) || similarity < config.learning.mergeThreshold ||
            !sameContext(other.context, merged.context)
          ) continue
          merged = mergePatterns(merged, changed.get(other.id) ?? other, UNSTAMPED)
          absorbed.add(other.id)
          changed.delete(other.id)
        }
        if (merged !== pattern) changed.set(merged.id, merged)
      }
      if (absorbed.size > 0) yield* rewrite([...changed.values()], [...absorbed])
      yield* trimSkills(0)
      yield* store.checkpoint
      return { merged: absorbed.size, patterns: tiers.skills.size() } satisfies ConsolidationReport
    }).pipe(writer.withPermit, Effect.withSpan("OmegaBrain.consolidate"))

    const decay = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const changed: Array<LocalPattern> = []
      const forgotten: Array<PatternId> = []
      for (const p of tiers.skills.all()) {
        const days = Math.floor((now - p.updatedAt) / DAY_MS)
        if (days < 1) continue
        const next = decayPattern(p, 1, UNSTAMPED, config.learning)
        if (next === undefined) forgotten.push(p.id)
        else changed.push(next)
      }
      if (changed.length + forgotten.length > 0) yield* rewrite(changed, forgotten)
      yield* store.trimEvents(config.tiers.episodes * 20)
      return { forgotten: forgotten.length, patterns: tiers.skills.size() } satisfies DecayReport
    }).pipe(writer.withPermit, Effect.withSpan("OmegaBrain.decay"))

    const stats = Effect.gen(function*() {
      const outbox = yield* store.outbox
      return {
        patterns: tiers.skills.size(),
        collectivePatterns: tiers.collective.all().length,
        trends: tiers.collective.trends().length,
        catalogItems: catalog.size(),
        watchedItems: tiers.episodes.watchedCount(),
        versions,
        pendingDeltas: outbox.length,
        outcomes: tiers.causal.outcomes()
      } satisfies BrainStats
    })

    if (config.runLearningLoops) {
      // A failing loop iteration is logged and retried on the next tick; it never takes the brain down.
      const loop = <A>(name: string, task: Effect.Effect<A, BrainError>, every: LearningConfig["sessionEvery"]) =>
        task.pipe(
          Effect.catch((error) => Effect.logWarning(`${name} failed`, error)),
          Effect.schedule(Schedule.spaced(every)),
          Effect.forkScoped
        )
      yield* loop("consolidation", consolidate, config.learning.sessionEvery)
      yield* loop("decay", decay, config.learning.dailyEvery)
    }

    return OmegaBrain.of({
      observe,
      recommend,
      prepareSyncDelta,
      acknowledgeDelta,
      pendingDeltas,
      applyGlobalPatterns,
      applyCoWatch,
      addContent,
      consolidate,
      decay,
      stats
    })
  })
}

const newId = () => crypto.randomUUID() as PatternId

/** The version of a change not yet written: `rewrite` gives each change its own as it writes them. */
const UNSTAMPED = -1

const byVersion = (a: { readonly version: number }, b: { readonly version: number }) => a.version - b.version

const toShared = (p: LocalPattern): SharedPattern => ({
  id: p.id,
  embedding: p.embedding,
  successRate: p.successRate,
  sampleCount: p.sampleCount,
  context: p.context
})

/** Low evidence and long unreinforced patterns go first. */
const evictionScore = (p: LocalPattern) =>
  Math.log1p(p.sampleCount) * (0.5 + p.successRate) + p.updatedAt / (30 * DAY_MS)
