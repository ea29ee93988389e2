/**
 * A fleet of simulated TVs: real brains (the federated fleet `omega eval` reports) replaying
 * viewers, MovieLens when configured or else a synthetic world, each holding one long-lived
 * session to its shard through SyncClient. `omega demo` runs a fleet against its in-process
 * constellation, `omega simulate` against a shard that is already running.
 */
import { BrainStore, Embedder, OmegaBrain, VectorIndex } from "@omega/brain"
import { deviceToken } from "@omega/constellation"
import { type ContentEmbedding, type ContentId, makeWireCodec } from "@omega/protocol"
import { type ConnectOptions, defaultSyncTiming, SyncClient, type SyncStatus, SyncTransport } from "@omega/sync"
import { Console, Context, Data, Duration, Effect, Exit, Layer, type Redacted, Scope } from "effect"
import {
  embedCatalog,
  evaluate,
  hitRatioInterval,
  leaveLastPositiveOut,
  localBrainRanker,
  type Metrics,
  metricsOfRanks,
  replay,
  type Split
} from "./Evaluation.ts"
import { federatedEvalConfig } from "./FederatedEvaluation.ts"
import { contextAt, datasetPath, loadMovieLens } from "./MovieLens.ts"
import { addCount, printTable, progress, round, totalCount } from "./Report.ts"
import { makeWorld, syntheticRatings } from "./Synthetic.ts"

export interface FleetWorld {
  readonly source: string
  readonly catalog: ReadonlyArray<ContentEmbedding>
  /** The catalog by content id, for the replay and the report. */
  readonly titles: ReadonlyMap<ContentId, ContentEmbedding>
  readonly splits: ReadonlyArray<Split>
}

const worldOf = (
  source: string,
  catalog: ReadonlyArray<ContentEmbedding>,
  splits: ReadonlyArray<Split>
): FleetWorld => ({
  source,
  catalog,
  titles: new Map(catalog.map((c) => [c.contentId, c])),
  splits
})

/**
 * The federated fleet of `omega eval`, whose settings were chosen on MovieLens' validation split
 * (the title tokens of its embedder let a shard decode a pattern into catalog items). The
 * synthetic world runs the same fleet: it was built to have the structure MovieLens has (personal
 * genres, hits, audiences no title shows), not tuned to these settings.
 */
export const tvSettings = federatedEvalConfig()

/** The brain settings of every fleet TV: the federated fleet's, with learning driven by the replay. */
export const fleetBrainConfig = { ...tvSettings.brain, runLearningLoops: false }

/**
 * MovieLens when its folder is there (`tvs` of its viewers, 200 by default), otherwise a seeded
 * synthetic catalog and `tvs` viewers (400 by default).
 */
export const loadFleetWorld = (options: { readonly dataset: string | undefined; readonly tvs: number | undefined }) =>
  Effect.gen(function*() {
    const ml = yield* Effect.option(loadMovieLens(datasetPath(options.dataset)))
    if (ml._tag === "Some") {
      const catalog = yield* embedCatalog(ml.value).pipe(
        Effect.provide(Embedder.layerHashingWith(tvSettings.embedder))
      )
      const splits = leaveLastPositiveOut(ml.value).slice(0, options.tvs ?? 200)
      return worldOf(`MovieLens 100K (${ml.value.movies.length} movies)`, catalog, splits)
    }
    yield* progress("MovieLens not found (set OMEGA_DATASET); using a synthetic catalog and viewers")
    // Twice MovieLens' TVs: a hidden circle needs enough viewers for k-anonymous co-watch rows.
    const world = makeWorld({ items: 1_000, viewers: options.tvs ?? 400, seed: 3 })
    const ratings = syntheticRatings(world, 120, 17)
    const catalog = yield* embedCatalog(ratings).pipe(Effect.provide(Embedder.layerHashingWith(tvSettings.embedder)))
    return worldOf(
      `synthetic (${catalog.length} items, ${world.byCircle.length} hidden audience circles)`,
      catalog,
      leaveLastPositiveOut(ratings)
    )
  })

export interface FleetTv {
  readonly split: Split
  readonly deviceId: string
  /** Which shard the TV's session goes to (a name for reports). */
  readonly shard: string
  readonly brain: OmegaBrain["Service"]
  readonly client: SyncClient["Service"]
}

export interface FleetOptions {
  readonly world: FleetWorld
  /** The fleet secret device tokens derive from (the shard's FLEET_SECRET). */
  readonly secret: string | Redacted.Redacted<string>
  readonly region: string
  readonly deviceId: (split: Split) => string
  /** The shard a device syncs with. */
  readonly home: (deviceId: string) => { readonly shard: string; readonly endpoint: ConnectOptions }
}

/**
 * One brain and one long-lived session per viewer of the world, over the SyncTransport in context.
 * The TVs sync only when told to (`syncRound`). Every TV lives in a scope of its own, closed together
 * when the caller's scope closes, so hundreds of sessions end at once rather than one by one.
 */
export const openFleet = (options: FleetOptions) =>
  Effect.gen(function*() {
    const transport = yield* SyncTransport
    // Uploads are quantized as in the federated eval: finer than the default, so shards decode them into items.
    const codec = makeWireCodec({ quantization: tvSettings.upload })
    const scopes: Array<Scope.Closeable> = []
    yield* Effect.addFinalizer(() =>
      Effect.forEach(scopes, (scope) => Scope.close(scope, Exit.void), { concurrency: "unbounded", discard: true })
    )
    const fleet: Array<FleetTv> = []
    for (const split of options.world.splits) {
      const deviceId = options.deviceId(split)
      const home = options.home(deviceId)
      const scope = yield* Scope.make()
      scopes.push(scope)
      const context = yield* Layer.buildWithScope(
        SyncClient.layer({
          deviceId,
          token: deviceToken(options.secret, deviceId),
          region: options.region,
          endpoint: home.endpoint,
          ...defaultSyncTiming,
          // The fleet's driver syncs, round by round: the TVs' own timers are weeks away (a timed
          // push would use up a rate-limit slot of the shard's and fail the next round's sync).
          minInterval: Duration.days(20),
          maxInterval: Duration.days(21),
          pushAfterChanges: 1_000_000,
          codec
        }).pipe(
          Layer.provideMerge(OmegaBrain.layer(fleetBrainConfig)),
          Layer.provide(
            Layer.mergeAll(Embedder.layerHashingWith(tvSettings.embedder), VectorIndex.layer, BrainStore.layerTest)
          ),
          Layer.provide(Layer.succeed(SyncTransport, transport))
        ),
        scope
      )
      const brain = Context.get(context, OmegaBrain)
      yield* brain.addContent(options.world.catalog)
      fleet.push({ split, deviceId, shard: home.shard, brain, client: Context.get(context, SyncClient) })
    }
    return fleet
  })

/**
 * `rounds` replay windows (from, to] of global time, each holding about as many of the fleet's
 * viewing events; the first starts at the beginning of time.
 */
export const roundWindows = (
  fleet: ReadonlyArray<FleetTv>,
  rounds: number
): Array<{ readonly from: number; readonly to: number }> => {
  const times = fleet.flatMap((tv) => tv.split.train.map((r) => r.at)).sort((a, b) => a - b)
  const cuts = Array.from({ length: rounds }, (_, i) => times[Math.floor(((i + 1) * (times.length - 1)) / rounds)] ?? 0)
  return cuts.map((to, i) => ({ from: i === 0 ? -Infinity : cuts[i - 1]!, to }))
}

export interface SyncRound {
  readonly events: number
  readonly acknowledged: number
  /**
   * Acknowledged deltas the shard had seen before (a replay), included in `acknowledged`; the shard
   * acknowledged them again without counting them twice.
   */
  readonly duplicates: number
  /** TVs that had nothing new to send (no pattern changed since their last acknowledged delta). */
  readonly idle: number
  readonly bytesUp: number
  readonly syncMs: ReadonlyArray<number>
  /**
   * Syncs that did not end in an acknowledgement, by kind: the shard's error code for a rejection
   * (`rate-limited`, `unauthorized`, ...), else `timeout`, `disconnected`, `storage` or `offline`.
   */
  readonly failures: Readonly<Record<string, number>>
}

/**
 * Every TV replays its viewing in (from, to] and then syncs once, one TV after another. A sync
 * that fails is counted by kind, never thrown: a fleet reports what its shard did.
 */
export const syncRound = (
  fleet: ReadonlyArray<FleetTv>,
  world: FleetWorld,
  window: { readonly from: number; readonly to: number }
) =>
  Effect.gen(function*() {
    let events = 0
    let acknowledged = 0
    let duplicates = 0
    let idle = 0
    let bytesUp = 0
    const syncMs: Array<number> = []
    const failures: Record<string, number> = {}
    for (const tv of fleet) {
      const viewing = tv.split.train.filter((r) => r.at > window.from && r.at <= window.to)
      yield* replay(tv.brain, world, viewing)
      events += viewing.length
      const started = performance.now()
      const outcome = yield* Effect.result(tv.client.syncNow)
      if (outcome._tag === "Failure") {
        addCount(failures, outcome.failure.code ?? outcome.failure.reason)
      } else if (outcome.success._tag === "Acknowledged") {
        syncMs.push(performance.now() - started)
        bytesUp += outcome.success.bytes
        acknowledged += 1
        if (outcome.success.ack.duplicate) duplicates += 1
      } else if (outcome.success._tag === "Offline") {
        addCount(failures, "offline")
      } else {
        idle += 1
      }
    }
    return { events, acknowledged, duplicates, idle, bytesUp, syncMs, failures } satisfies SyncRound
  })

/** Sync rounds added up. */
export class SyncTally {
  acknowledged = 0
  duplicates = 0
  idle = 0
  bytesUp = 0
  readonly syncMs: Array<number> = []
  readonly failures: Record<string, number> = {}

  add(synced: SyncRound): void {
    this.acknowledged += synced.acknowledged
    this.duplicates += synced.duplicates
    this.idle += synced.idle
    this.bytesUp += synced.bytesUp
    this.syncMs.push(...synced.syncMs)
    for (const [kind, n] of Object.entries(synced.failures)) addCount(this.failures, kind, n)
  }

  get failed(): number {
    return totalCount(this.failures)
  }
}

/**
 * Bytes the fleet received: what came with its syncs (acks, global patterns and trends), and
 * co-watch rows, which are catalog knowledge pushed when they change and counted apart.
 */
export const bytesReceived = (statuses: ReadonlyArray<SyncStatus>) => {
  const coWatch = statuses.reduce((n, s) => n + s.coWatchBytesDown, 0)
  return { sync: statuses.reduce((n, s) => n + s.bytesDown, 0) - coWatch, coWatch }
}

export class FleetError extends Data.TaggedError("FleetError")<{ readonly message: string }> {}

/**
 * Waits up to `seconds` for every TV's session; fails when none opens (with the error the TVs saw,
 * for example a wrong fleet secret or pin), goes on with a warning when only some do. Returns how
 * many are open.
 */
export const awaitSessions = (fleet: ReadonlyArray<FleetTv>, seconds: number, target: string) =>
  Effect.gen(function*() {
    yield* Effect.forEach(fleet, (tv) => tv.client.awaitConnected, { concurrency: "unbounded", discard: true }).pipe(
      Effect.timeoutOption(Duration.seconds(seconds))
    )
    const statuses = yield* Effect.forEach(fleet, (tv) => tv.client.status)
    const open = statuses.filter((s) => s.connected).length
    if (open === 0) {
      const seen = statuses.find((s) => s.lastError !== undefined)?.lastError ?? "no answer"
      return yield* new FleetError({ message: `no TV could open a session to ${target} in ${seconds} s: ${seen}` })
    }
    if (open < fleet.length) yield* progress(`  WARNING: ${fleet.length - open} TVs have no session; going on`)
    return open
  })

/**
 * Each TV's recommendations at its next good watch (the held-out one), with recommend latency,
 * against the same brains learning from nothing but their own viewing, paired TV by TV. The first
 * `shown` TVs' top five are printed with their reasons.
 */
export const scoreFleet = (fleet: ReadonlyArray<FleetTv>, world: FleetWorld, shown = 2) =>
  Effect.gen(function*() {
    const recommendMs: Array<number> = []
    const ranks: Array<number> = []
    for (const [n, tv] of fleet.entries()) {
      const recent = tv.split.train.slice(-5).map((r) => r.contentId)
      const context = contextAt(tv.split.heldOut.at, recent)
      const t0 = performance.now()
      const recs = yield* tv.brain.recommend(context, 10)
      recommendMs.push(performance.now() - t0)
      ranks.push(recs.findIndex((r) => r.contentId === tv.split.heldOut.contentId))
      if (n < shown) {
        yield* Console.log(
          `\nTV ${tv.split.user} (${tv.shard}), ${context.dayType} ${context.timeOfDay}; next good watch: "${
            world.titles.get(tv.split.heldOut.contentId)?.title
          }"`
        )
        for (const rec of recs.slice(0, 5)) {
          yield* Console.log(`  ${rec.score.toFixed(2).padStart(6)}  ${rec.title}  (${rec.reason})`)
        }
      }
    }
    const splits = fleet.map((tv) => tv.split)
    const localOnly = yield* evaluate("local-only", splits, localBrainRanker(world.catalog, fleetBrainConfig))
    const synced = metricsOfRanks(ranks)
    return { recommendMs, synced, localOnly, gain: hitRatioInterval(synced, localOnly) }
  })

/**
 * "x to y" for a ratio's interval; the upper end is unbounded when the baseline has few hits (some
 * resamples hold none of them), and there is no interval when it has none at all.
 */
export const describeInterval = (gain: { readonly low: number; readonly high: number }) =>
  !Number.isFinite(gain.low) ?
    "undefined (the baseline has no hit)" :
    `${gain.low.toFixed(2)} to ${Number.isFinite(gain.high) ? gain.high.toFixed(2) : "unbounded"}`

/** The quality table both fleets print: HR@10 and NDCG@10 with and without what syncing brought. */
export const printQuality = (
  tvs: number,
  quality: { readonly localOnly: Metrics; readonly synced: Metrics },
  syncedLabel: string
) =>
  printTable(`Recommendation quality of these ${tvs} TVs (HR@10 / NDCG@10 at the next good watch)`, [
    { brain: "local-only (no sync)", hr10: round(quality.localOnly.hr10), ndcg10: round(quality.localOnly.ndcg10) },
    { brain: syncedLabel, hr10: round(quality.synced.hr10), ndcg10: round(quality.synced.ndcg10) }
  ])
