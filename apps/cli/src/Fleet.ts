/**
 * A fleet of simulated TVs: real brains (the federated fleet `omega eval` reports) replaying
 * viewers, MovieLens when configured or else a synthetic world, each holding one long-lived
 * session to its shard through SyncClient. `omega demo` runs a fleet against its in-process
 * constellation, `omega simulate` against a shard that is already running.
 */
import { BrainStore, Embedder, OmegaBrain, VectorIndex } from "@omega/brain"
import { deviceToken } from "@omega/constellation"
import { type ContentEmbedding, type ContentId, makeWireCodec } from "@omega/protocol"
import { type ConnectOptions, defaultSyncTiming, SyncClient, SyncTransport } from "@omega/sync"
import { Console, Context, Duration, Effect, Exit, Layer, type Redacted, Scope } from "effect"
import {
  embedCatalog,
  evaluate,
  hitRatioInterval,
  leaveLastPositiveOut,
  localBrainRanker,
  metricsOfRanks,
  replay,
  type Split
} from "./Evaluation.ts"
import { federatedEvalConfig } from "./FederatedEvaluation.ts"
import { contextAt, datasetPath, loadMovieLens } from "./MovieLens.ts"
import { progress } from "./Report.ts"
import { makeWorld, syntheticRatings } from "./Synthetic.ts"

export interface FleetWorld {
  readonly source: string
  readonly catalog: ReadonlyArray<ContentEmbedding>
  readonly splits: ReadonlyArray<Split>
}

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
      const source = `MovieLens 100K (${ml.value.movies.length} movies)`
      return { source, catalog, splits } satisfies FleetWorld
    }
    yield* progress("MovieLens not found (set OMEGA_DATASET); using a synthetic catalog and viewers")
    // Twice MovieLens' TVs: a hidden circle needs enough viewers for k-anonymous co-watch rows.
    const world = makeWorld({ items: 1_000, viewers: options.tvs ?? 400, seed: 3 })
    const ratings = syntheticRatings(world, 120, 17)
    const catalog = yield* embedCatalog(ratings).pipe(Effect.provide(Embedder.layerHashingWith(tvSettings.embedder)))
    return {
      source: `synthetic (${catalog.length} items, ${world.byCircle.length} hidden audience circles)`,
      catalog,
      splits: leaveLastPositiveOut(ratings)
    } satisfies FleetWorld
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
          // The fleet's driver syncs, round by round.
          minInterval: Duration.hours(1),
          maxInterval: Duration.hours(2),
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

/** The ends of `rounds` replay windows that split the fleet's viewing into equal numbers of events. */
export const roundCuts = (fleet: ReadonlyArray<FleetTv>, rounds: number): Array<number> => {
  const times = fleet.flatMap((tv) => tv.split.train.map((r) => r.at)).sort((a, b) => a - b)
  return Array.from({ length: rounds }, (_, i) => times[Math.floor(((i + 1) * (times.length - 1)) / rounds)] ?? 0)
}

export interface SyncRound {
  readonly events: number
  readonly acknowledged: number
  /** Deltas the shard had already acknowledged (a replay): acknowledged again, not counted twice. */
  readonly duplicates: number
  /** TVs that had nothing new to send (no pattern changed since their last acknowledged delta). */
  readonly idle: number
  readonly bytesUp: number
  readonly syncMs: ReadonlyArray<number>
  /** Syncs that did not end in an acknowledgement, by kind (for example `rate-limited`, `timeout`, `offline`). */
  readonly failures: Readonly<Record<string, number>>
}

/**
 * Every TV replays its viewing in (from, to] and then syncs once, one TV after another. A sync
 * that fails is counted by kind, never thrown: a fleet reports what its shard did.
 */
export const syncRound = (
  fleet: ReadonlyArray<FleetTv>,
  titles: ReadonlyMap<ContentId, ContentEmbedding>,
  from: number,
  to: number
) =>
  Effect.gen(function*() {
    let events = 0
    let acknowledged = 0
    let duplicates = 0
    let idle = 0
    let bytesUp = 0
    const syncMs: Array<number> = []
    const failures: Record<string, number> = {}
    const fail = (kind: string) => failures[kind] = (failures[kind] ?? 0) + 1
    for (const tv of fleet) {
      const window = tv.split.train.filter((r) => r.at > from && r.at <= to)
      yield* replay(tv.brain, { titles }, window)
      events += window.length
      const started = performance.now()
      const outcome = yield* Effect.result(tv.client.syncNow)
      if (outcome._tag === "Failure") {
        // A rejection carries the shard's error code before the colon (for example "rate-limited: ...").
        const error = outcome.failure
        fail(error.reason === "rejected" ? error.message.split(":")[0]! : error.reason)
      } else if (outcome.success._tag === "Acknowledged") {
        syncMs.push(performance.now() - started)
        bytesUp += outcome.success.bytes
        acknowledged += 1
        if (outcome.success.ack.duplicate) duplicates += 1
      } else if (outcome.success._tag === "Offline") {
        fail("offline")
      } else {
        idle += 1
      }
    }
    return { events, acknowledged, duplicates, idle, bytesUp, syncMs, failures } satisfies SyncRound
  })

/** Adds up failure counts by kind. */
export const mergeFailures = (
  a: Readonly<Record<string, number>>,
  b: Readonly<Record<string, number>>
): Record<string, number> => {
  const merged = { ...a }
  for (const [kind, n] of Object.entries(b)) merged[kind] = (merged[kind] ?? 0) + n
  return merged
}

/**
 * Each TV's recommendations at its next good watch (the held-out one), with recommend latency,
 * against the same brains learning from nothing but their own viewing, paired TV by TV. The first
 * `shown` TVs' top five are printed with their reasons.
 */
export const scoreFleet = (fleet: ReadonlyArray<FleetTv>, world: FleetWorld, shown = 2) =>
  Effect.gen(function*() {
    const titles = new Map(world.catalog.map((c) => [c.contentId, c]))
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
            titles.get(tv.split.heldOut.contentId)?.title
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
