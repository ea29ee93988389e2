/**
 * The federated row of the evaluation: every MovieLens user is a TV brain, and the fleet replays
 * its training ratings in global time windows. After each window every TV prepares its pattern
 * delta, which travels as a real DeltaUpload frame (so the quantization is the wire's), the shards
 * fold the decoded patterns into device-level groups, a federation round averages the groups
 * across shards into global patterns and detects trends, and each TV gets a personalised
 * GlobalUpdate frame back. The round also publishes co-watch rows (which items the same devices'
 * patterns decode to, k-anonymous pairs only) as CoWatchUpdate frames; like the catalog, which
 * every simulated TV reads from one shared copy, they are decoded once and applied to that copy,
 * and their bytes are reported apart from the per-sync bytes. Nothing but frames crosses between
 * TVs and the constellation.
 *
 * Each TV recommends for its held-out positive as deployed TVs would: at the time of that
 * viewing, with its own history up to then and the last GlobalUpdate it received before it (the
 * window that contains the held-out time has not been federated yet). Scoring every TV after the
 * last window instead would hand it trends from months after its own viewing. A TV scored in a
 * window still uploads that window's delta; after that it has nothing left to replay and stops
 * syncing, while the shards keep its patterns.
 */
import {
  type BrainConfig,
  BrainStore,
  Catalog,
  defaultHashingWeights,
  Embedder,
  type HashingWeights,
  OmegaBrain,
  type RecommendationSource,
  VectorIndex
} from "@omega/brain"
import {
  type AveragingConfig,
  catalogEvidence,
  catalogMatrix,
  composedEpsilon,
  type Contribution,
  type CoWatchConfig,
  CoWatchCounter,
  coWatchUpdateFrames,
  defaultAveragingConfig,
  defaultCoWatchConfig,
  defaultMatchOptions,
  defaultTrendConfig,
  federate,
  groupContributions,
  type MatchOptions,
  noiseFloor,
  PATTERN_SENSITIVITY,
  type PatternNoise,
  patternNoise,
  type PersonalizationOptions,
  personalizedPatterns,
  privatizePattern,
  type TrendConfig,
  TrendDetector
} from "@omega/constellation"
import {
  type ContentEmbedding,
  type ContentId,
  EMBEDDING_DIMENSIONS,
  type FrameQuantization,
  type GlobalPattern,
  makeWireCodec,
  MAX_GLOBAL_PATTERNS,
  type PatternDelta,
  type PatternId,
  QuantizerPresets,
  seededRandom,
  type SharedPattern,
  SUCCESS_THRESHOLD,
  type SyncFrame,
  type TrendSignal,
  type WireCodec
} from "@omega/protocol"
import { Context, Effect, Layer } from "effect"
import {
  evalBrainConfig,
  firstUnseen,
  type Metrics,
  metricsOfRanks,
  type Ranker,
  replayEvents,
  type Split
} from "./Evaluation.ts"
import { contextAt } from "./MovieLens.ts"
import { progress } from "./Report.ts"

export interface FederatedConfig {
  /** Global time windows of the replay; TVs sync and the constellation federates after each. */
  readonly rounds: number
  /** Devices are spread over this many shards (federation averages across them). */
  readonly shards: number
  readonly brain: BrainConfig
  /** The hashing embedder of the TVs (and of the catalog the constellation distributes). */
  readonly embedder: HashingWeights
  /** How TVs write their uploads and shards their downloads. */
  readonly upload: FrameQuantization
  readonly download: FrameQuantization
  /**
   * Patterns aggregated into global patterns need this success rate (a shard's qualityThreshold);
   * trends and co-watch count every uploaded pattern as viewing.
   */
  readonly qualityThreshold: number
  /** Device-level grouping on each shard. */
  readonly shardAveraging: AveragingConfig
  /** Cross-shard grouping in the federation round (k applies here). */
  readonly federation: AveragingConfig
  /** Global patterns published per round (each TV gets a personalised subset). */
  readonly published: number
  readonly personalization: PersonalizationOptions
  /** Trend signals in each download. */
  readonly trends: number
  /**
   * What trend evidence is decoded from: every decoded upload as the shard receives it (k applied
   * to the trends published), or only the published k-anonymous global patterns.
   */
  readonly trendSource: "uploads" | "groups"
  readonly trend: TrendConfig
  /** Co-watch rows learned from decoded uploads; undefined publishes none. */
  readonly coWatch: CoWatchConfig | undefined
  readonly match: MatchOptions
  /** Optional local differential privacy on every uploaded pattern. */
  readonly privacy: { readonly epsilon: number; readonly delta: number } | undefined
  /** Sees every frame as the receiver decoded it (privacy checks in tests). */
  readonly onFrame?: ((direction: "up" | "down", frame: SyncFrame, bytes: Uint8Array) => void) | undefined
}

export const defaultFederatedConfig = (brain: BrainConfig, embedder: HashingWeights): FederatedConfig => ({
  rounds: 6,
  shards: 3,
  brain,
  embedder,
  upload: { patterns: QuantizerPresets.precise, content: QuantizerPresets.precise },
  download: { patterns: QuantizerPresets.balanced, content: QuantizerPresets.precise },
  qualityThreshold: SUCCESS_THRESHOLD,
  shardAveraging: { ...defaultAveragingConfig, minDevices: 1 },
  federation: defaultAveragingConfig,
  published: MAX_GLOBAL_PATTERNS,
  personalization: { limit: 32, nearestShare: 0.75 },
  trends: 100,
  trendSource: "uploads",
  trend: { ...defaultTrendConfig, halfLifeMs: 60 * 86_400_000 },
  coWatch: defaultCoWatchConfig,
  match: defaultMatchOptions,
  privacy: undefined
})

/**
 * Replay windows of `omega eval`: about a week of MovieLens time each. TVs are scored with the
 * trends of the last window before their viewing, so the window length is how stale those are.
 */
export const FEDERATED_ROUNDS = 24

/**
 * The fleet `omega eval` reports, with settings chosen on the validation split (`omega eval
 * --validation`): trends with a 14-day half-life and co-watch votes weighted 30. What else was
 * tried, with its numbers, is in docs/tuning-log.md.
 */
export const federatedEvalConfig = (rounds = FEDERATED_ROUNDS): FederatedConfig => {
  const brain: BrainConfig = {
    ...evalBrainConfig,
    // Items of one genre and era still fold into one pattern although their titles now differ.
    learning: { ...evalBrainConfig.learning, assignThreshold: 0.5 },
    recommender: {
      ...evalBrainConfig.recommender,
      sourceWeights: { local: 1, collective: 0.6, cowatch: 30, trend: 10 },
      trendAffinity: 3
    }
  }
  const fleet = defaultFederatedConfig(brain, federatedEmbedder)
  return { ...fleet, rounds, trend: { ...fleet.trend, halfLifeMs: 14 * 86_400_000 } }
}

/**
 * The TVs' embedder in the federated fleet: the default hashing tokens plus an identity token per
 * title spread over 16 features, so a pattern (an average of items) still says which items it
 * averages after quantization, and the constellation can decode trends from it.
 */
export const federatedEmbedder: HashingWeights = { ...defaultHashingWeights, title: 2, titleFeatures: 16 }

export interface SyncBytes {
  /** Syncs measured: one per TV and round once the TV has watched something. */
  readonly syncs: number
  /** Mean bytes per sync, up (DeltaUpload) and down (DeltaAck + GlobalUpdate), and their sum. */
  readonly up: number
  readonly down: number
  readonly total: number
  /** Largest single sync, up + down. */
  readonly max: number
}

export interface RoundReport {
  readonly round: number
  readonly patternsIn: number
  readonly devicePatterns: number
  readonly shardGroups: number
  readonly published: number
  readonly trends: number
  /** Co-watch rows published (empty ones withdraw a row) and their CoWatchUpdate bytes. */
  readonly coWatchRows: number
  readonly coWatchBytes: number
  readonly ms: number
}

export interface FederatedResult {
  readonly metrics: Metrics
  readonly bytes: SyncBytes
  readonly rounds: ReadonlyArray<RoundReport>
  /** The trends of the last round, hottest first. */
  readonly trending: ReadonlyArray<TrendSignal>
  /** Which source each shown recommendation and each hit came from (by the reason shown with it). */
  readonly sources: Readonly<Record<RecommendationSource, { readonly shown: number; readonly hits: number }>>
  /**
   * Items the co-watch counts hold per device at the end, on average: decoded from its patterns, so
   * a few may be films it never watched; 0 without co-watch.
   */
  readonly coWatchItemsPerDevice: number
  /** With privacy: epsilon of one pattern release and the most any device spent over the run (zCDP). */
  readonly privacy: { readonly perPattern: number; readonly perDevice: number; readonly delta: number } | undefined
}

const REGION = "ml-100k"

interface Tv {
  /** Its split's place in the splits (and in the reported ranks). */
  readonly index: number
  readonly split: Split
  readonly brain: OmegaBrain["Service"]
  readonly shard: number
  readonly deviceId: string
  /** Next training rating to replay. */
  cursor: number
  readonly recent: Array<ContentId>
  releases: number
  /** Recommended for its held-out positive already; it has nothing left to replay or sync. */
  scored: boolean
}

/** Replays the fleet with sync and federation rounds and scores every TV on its held-out positive. */
export const runFederated = (
  splits: ReadonlyArray<Split>,
  catalog: ReadonlyArray<ContentEmbedding>,
  config: FederatedConfig
) =>
  Effect.gen(function*() {
    const titles = new Map(catalog.map((c) => [c.contentId, c]))
    const shared = yield* sharedCatalog(catalog)
    const brainLayer = OmegaBrain.layerOnCatalog(config.brain).pipe(
      Layer.provide(Layer.mergeAll(
        Embedder.layerHashingWith(config.embedder),
        VectorIndex.layerTest,
        BrainStore.layerTest,
        Layer.succeed(Catalog, shared)
      ))
    )
    const tvs: Array<Tv> = []
    for (const [i, split] of splits.entries()) {
      const context = yield* Layer.build(brainLayer)
      tvs.push({
        index: i,
        split,
        brain: Context.get(context, OmegaBrain),
        shard: i % config.shards,
        deviceId: `tv-${split.user}`,
        cursor: 0,
        recent: [],
        releases: 0,
        scored: false
      })
    }

    const tvCodec = makeWireCodec({ quantization: config.upload })
    const shardCodec = makeWireCodec({ quantization: config.download })
    const noise: PatternNoise | undefined = config.privacy === undefined ? undefined : patternNoise({
      ...config.privacy,
      maxSamples: config.shardAveraging.maxSamplesPerDevice
    })
    const random = seededRandom(0x5eed)
    // Privatized patterns decode only above the noise floor: below it every catalog item looks alike.
    const match: MatchOptions = noise === undefined ? config.match : {
      ...config.match,
      minSimilarity: Math.max(config.match.minSimilarity, noiseFloor(noise, EMBEDDING_DIMENSIONS))
    }
    const matrix = catalogMatrix(catalog)
    // A published group already stands for at least k devices, so group evidence needs no second k.
    const trends = new TrendDetector(
      config.trendSource === "groups"
        ? { ...config.trend, minDevices: 1, maxEvidencePerDevice: Infinity }
        : config.trend
    )
    const coWatch = config.coWatch === undefined ? undefined : new CoWatchCounter(config.coWatch)
    /** What a shard aggregates, keeps per device and counts as accepted; the rest is only viewing. */
    // As a shard compares: success rates travel as 32-bit floats.
    const minSuccessRate = Math.fround(config.qualityThreshold)
    const isQuality = (p: SharedPattern) => p.successRate >= minSuccessRate
    // Every pattern each device shared, in its latest decoded version (a shard keeps the quality
    // ones per device; the rest is viewing, and what each round's "device patterns" counts too).
    const devicePatterns = new Map<string, Map<PatternId, SharedPattern>>()
    const boundaries = roundBoundaries(splits, config.rounds)
    let up = 0
    let down = 0
    let syncs = 0
    let max = 0
    const reports: Array<RoundReport> = []
    let trending: ReadonlyArray<TrendSignal> = []
    /** The last round's global patterns, for TVs that come online before their first upload. */
    let published: ReadonlyArray<GlobalPattern> = []

    /** Encodes a frame as the sender writes it and decodes it as the receiver reads it. */
    const transfer = (from: WireCodec, to: WireCodec, frame: SyncFrame) =>
      Effect.gen(function*() {
        const bytes = from.encode(frame)
        const received = yield* to.decode(bytes)
        config.onFrame?.(from === tvCodec ? "up" : "down", received, bytes)
        return { bytes: bytes.length, frame: received }
      })

    let hits = 0
    let scored = 0
    const ranks: Array<number> = splits.map(() => -1)
    const sources: Record<RecommendationSource, { shown: number; hits: number }> = {
      local: { shown: 0, hits: 0 },
      collective: { shown: 0, hits: 0 },
      cowatch: { shown: 0, hits: 0 },
      trend: { shown: 0, hits: 0 }
    }
    /** The TV recommends at its held-out time with what it has now and is scored on its held-out positive. */
    const score = (tv: Tv) =>
      Effect.gen(function*() {
        const recent = tv.split.train.slice(-5).map((r) => r.contentId)
        const recs = yield* tv.brain.recommend(contextAt(tv.split.heldOut.at, recent), 10)
        const rank = recs.map((r) => r.contentId).indexOf(tv.split.heldOut.contentId)
        for (const [position, rec] of recs.entries()) {
          const source = sourceOf(rec.reason)
          sources[source].shown += 1
          if (position === rank) sources[source].hits += 1
        }
        ranks[tv.index] = rank
        if (rank >= 0) hits += 1
        tv.scored = true
        scored += 1
        if (scored % 200 === 0 || scored === tvs.length) {
          yield* progress(
            `  federated: ${scored}/${tvs.length} users scored, HR@10 so far ${(hits / scored).toFixed(4)}`
          )
        }
      })

    for (const [round, end] of boundaries.entries()) {
      const started = Date.now()
      let patternsIn = 0
      const perTv = new Map<Tv, number>()
      for (const [n, tv] of tvs.entries()) {
        if (tv.scored) continue
        const events = tv.split.train
        const from = tv.cursor
        while (tv.cursor < events.length && events[tv.cursor]!.at <= end) tv.cursor += 1
        if (tv.cursor === 0) continue
        if (from === 0 && round > 0) {
          // A TV coming online opens its session before it watches anything: the shard sends it the current snapshot.
          const snapshot = yield* transfer(shardCodec, tvCodec, {
            _tag: "GlobalUpdate",
            global: { version: round, similar: personalizedPatterns(published, [], config.personalization), trending }
          })
          if (snapshot.frame._tag === "GlobalUpdate") yield* tv.brain.applyGlobalPatterns(snapshot.frame.global)
          down += snapshot.bytes
          syncs += 1
          max = Math.max(max, snapshot.bytes)
        }
        yield* replayEvents(tv.brain, titles, events.slice(from, tv.cursor), tv.recent)
        yield* tv.brain.consolidate
        // Its viewing falls in this window: it has everything up to then, and the constellation's last word.
        if (tv.split.heldOut.at <= end) yield* score(tv)
        const delta = yield* tv.brain.prepareSyncDelta()
        const sent = noise === undefined ? delta : privatizeDelta(delta, noise, random)
        tv.releases += sent.added.length + sent.updated.length
        const upload = yield* transfer(tvCodec, shardCodec, { _tag: "DeltaUpload", delta: sent })
        if (upload.frame._tag !== "DeltaUpload") {
          return yield* Effect.die(new Error("the upload decoded to another frame"))
        }
        // Accepted as the shard counts them, from the upload it decoded (noised, with privacy).
        const accepted = ingest(tv, upload.frame.delta, end)
        patternsIn += accepted
        const ack = yield* transfer(shardCodec, tvCodec, {
          _tag: "DeltaAck",
          version: delta.version,
          accepted,
          duplicate: false
        })
        if (ack.frame._tag === "DeltaAck") yield* tv.brain.acknowledgeDelta(ack.frame.version)
        perTv.set(tv, upload.bytes + ack.bytes)
        up += upload.bytes
        down += ack.bytes
        if ((n + 1) % 200 === 0) {
          yield* progress(`  federated: round ${round + 1}/${boundaries.length}, ${n + 1} TVs synced`)
        }
      }

      // Shards group their devices' patterns; the federation round averages the groups across shards.
      const shardGroups = Array.from({ length: config.shards }, (_, shard) => {
        const contributions: Array<Contribution> = []
        for (const tv of tvs) {
          if (tv.shard !== shard) continue
          for (const p of devicePatterns.get(tv.deviceId)?.values() ?? []) {
            // As on a shard (Ingestion's qualityThreshold): only quality patterns are aggregated.
            if (!isQuality(p)) continue
            contributions.push({ ...p, source: tv.deviceId, deviceCount: 1 })
          }
        }
        return { shard: `shard-${shard}`, patterns: groupContributions(contributions, config.shardAveraging) }
      })
      const global = federate(shardGroups, {
        config: config.federation,
        idPrefix: `r${round}-`,
        limit: config.published
      })
      if (config.trendSource === "groups") {
        for (const g of global) {
          const evidence = catalogEvidence(g.embedding, matrix, match).map(({ contentId, share }) => ({
            contentId,
            weight: g.deviceCount * g.successRate * share
          }))
          trends.observe(REGION, g.id, evidence, end)
        }
      }
      trending = trends.signals(REGION, end, config.trends)
      published = global
      let coWatchRows = 0
      let coWatchBytes = 0
      if (coWatch !== undefined) {
        // The frames a shard sends a TV that holds the previous round's rows.
        for (const frame of coWatchUpdateFrames(round, { version: round + 1, rows: coWatch.publish() })) {
          const update = yield* transfer(shardCodec, tvCodec, frame)
          if (update.frame._tag === "CoWatchUpdate") shared.setCoWatch(update.frame.rows)
          coWatchRows += frame.rows.length
          coWatchBytes += update.bytes
        }
      }

      for (const [tv, upBytes] of perTv) {
        // Personalised by the device's quality patterns, the ones a shard keeps per device.
        const uploaded = [...(devicePatterns.get(tv.deviceId)?.values() ?? [])]
          .filter(isQuality)
          .map((p) => p.embedding)
        const similar = personalizedPatterns(global, uploaded, config.personalization)
        const update = yield* transfer(shardCodec, tvCodec, {
          _tag: "GlobalUpdate",
          global: { version: round + 1, similar, trending }
        })
        if (update.frame._tag === "GlobalUpdate") yield* tv.brain.applyGlobalPatterns(update.frame.global)
        down += update.bytes
        syncs += 1
        max = Math.max(max, upBytes + update.bytes)
      }
      reports.push({
        round: round + 1,
        patternsIn,
        devicePatterns: [...devicePatterns.values()].reduce((s, m) => s + m.size, 0),
        shardGroups: shardGroups.reduce((s, g) => s + g.patterns.length, 0),
        published: global.length,
        trends: trending.length,
        coWatchRows,
        coWatchBytes,
        ms: Date.now() - started
      })
      yield* progress(
        `  federated: round ${round + 1}/${boundaries.length}: ${patternsIn} patterns in, ${
          reports.at(-1)!.shardGroups
        } shard groups, ${global.length} global patterns (k >= ${config.federation.minDevices}), ${trending.length} trends, ${coWatchRows} co-watch rows, ${
          ((Date.now() - started) / 1000).toFixed(1)
        } s`
      )
    }

    // Viewing after the last window: those TVs have replayed everything and hold the last update.
    for (const tv of tvs) if (!tv.scored) yield* score(tv)

    /** Folds one decoded delta into the device's table and credits the viewing it adds to the catalog items it matches. */
    function ingest(tv: Tv, delta: PatternDelta, at: number): number {
      let table = devicePatterns.get(tv.deviceId)
      if (table === undefined) devicePatterns.set(tv.deviceId, table = new Map())
      for (const id of delta.removed) table.delete(id)
      const evidence: Array<{ contentId: ContentId; weight: number }> = []
      for (const p of [...delta.added, ...delta.updated]) {
        const before = table.get(p.id)?.sampleCount ?? 0
        table.set(p.id, p)
        const grown = Math.max(0, p.sampleCount - before) * p.successRate
        if (grown <= 0) continue
        for (const { contentId, share } of catalogEvidence(p.embedding, matrix, match, p.sampleCount)) {
          evidence.push({ contentId, weight: grown * share })
        }
      }
      if (config.trendSource === "uploads") trends.observe(REGION, tv.deviceId, evidence, at)
      // The same evidence teaches co-watch rows, as on a shard (ShardTrends).
      coWatch?.observeEvidence(tv.deviceId, evidence)
      // Accepted, as a shard counts them: the quality patterns.
      return [...delta.added, ...delta.updated].filter(isQuality).length
    }

    const privacy = noise === undefined ? undefined : {
      perPattern: noise.epsilon,
      perDevice: composedEpsilon(
        noise.sigma,
        PATTERN_SENSITIVITY,
        Math.max(0, ...tvs.map((tv) => tv.releases)),
        noise.delta
      ),
      delta: noise.delta
    }
    return {
      metrics: metricsOfRanks(ranks),
      bytes: {
        syncs,
        up: up / Math.max(1, syncs),
        down: down / Math.max(1, syncs),
        total: (up + down) / Math.max(1, syncs),
        max
      },
      rounds: reports,
      trending,
      sources,
      coWatchItemsPerDevice: coWatch?.meanItemsPerDevice ?? 0,
      privacy
    } satisfies FederatedResult
  }).pipe(Effect.scoped)

/** The source behind a recommendation, read back from the reason the brain shows with it. */
const sourceOf = (reason: string): RecommendationSource =>
  reason.startsWith("Trending") ?
    "trend" :
    reason.startsWith("Popular with viewers") ?
    "collective" :
    reason.startsWith("Viewers of") || reason.startsWith("Watched by viewers") ?
    "cowatch" :
    "local"

/** One read-only catalog (index and embeddings) every simulated TV's brain reads from. */
const sharedCatalog = (items: ReadonlyArray<ContentEmbedding>) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(
      Catalog.layer.pipe(Layer.provideMerge(Layer.mergeAll(BrainStore.layerTest, VectorIndex.layerTest)))
    )
    const store = Context.get(context, BrainStore)
    const catalog = Context.get(context, Catalog)
    yield* store.upsertCatalog(items)
    yield* catalog.upsert(items)
    return catalog
  })

/** Ends of `rounds` time windows holding equal shares of all training ratings (the last one ends at the newest). */
export const roundBoundaries = (splits: ReadonlyArray<Split>, rounds: number): Array<number> => {
  const times = splits.flatMap((s) => s.train.map((r) => r.at)).sort((a, b) => a - b)
  if (times.length === 0) return []
  const ends = Array.from(
    { length: rounds },
    (_, r) => times[Math.min(times.length - 1, Math.ceil(((r + 1) * times.length) / rounds) - 1)]!
  )
  return [...new Set(ends)]
}

/**
 * Popularity as fresh as the federated TVs' trends, from exact central counts: every training
 * rating up to the last window end before the user's held-out time, decayed with the trends'
 * half-life. What the trends would rank with perfect evidence (no decoding, no k, no caps).
 */
export const recentPopularityRanker = (
  splits: ReadonlyArray<Split>,
  rounds: number,
  halfLifeMs: number
): Ranker => {
  const ratings = splits.flatMap((s) => s.train).sort((a, b) => a.at - b.at)
  const ends = roundBoundaries(splits, rounds)
  const rankings = new Map<number, Array<ContentId>>()
  const rankingAt = (end: number) => {
    let ranked = rankings.get(end)
    if (ranked === undefined) {
      const scores = new Map<ContentId, number>()
      for (const r of ratings) {
        if (r.at > end) break
        scores.set(r.contentId, (scores.get(r.contentId) ?? 0) + Math.pow(0.5, (end - r.at) / halfLifeMs))
      }
      ranked = [...scores].sort((a, b) => b[1] - a[1]).map(([id]) => id)
      rankings.set(end, ranked)
    }
    return ranked
  }
  return (split) =>
    Effect.sync(() => {
      const end = ends.filter((e) => e < split.heldOut.at).at(-1)
      return end === undefined ? [] : firstUnseen(rankingAt(end), split)
    })
}

const privatizeDelta = (delta: PatternDelta, noise: PatternNoise, random: () => number): PatternDelta => ({
  ...delta,
  added: delta.added.map((p) => privatizePattern(p, noise, random)),
  updated: delta.updated.map((p) => privatizePattern(p, noise, random))
})
