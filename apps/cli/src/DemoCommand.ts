/**
 * `omega demo` (the README's main job): the whole system in one process on embedded defaults.
 * Two constellation shards on PGlite, a federation worker, and a fleet of TV brains (MovieLens
 * viewers when configured, else a synthetic world) holding QUIC sessions on loopback,
 * devices mapped to shards by consistent hashing. The TVs run the brain and embedder of the
 * federated fleet `omega eval` reports, and each shard is given the catalog (as POST
 * /api/v1/content would) so it can decode trends from its TVs' uploads. Viewing is replayed in
 * rounds; after each, TVs sync, the worker federates patterns and trends across shards and the
 * shards push the result to their TVs. The report: recommendation quality against the same
 * brains without sync, recommend latency, bytes per sync, and the federation rounds.
 */
import { BrainStore, Embedder, OmegaBrain, VectorIndex } from "@omega/brain"
import {
  defaultCrossShardConfig,
  defaultShardTrendsConfig,
  deviceToken,
  federateAcrossShards,
  Federation,
  FederationWorker,
  Ingestion,
  shardCore,
  ShardStorage,
  SyncServer
} from "@omega/constellation"
import { type ContentEmbedding, makeWireCodec } from "@omega/protocol"
import { defaultSyncTiming, makeQuicIdentity, SyncClient, SyncTransport } from "@omega/sync"
import { Console, Context, Duration, Effect, Exit, HashRing, Layer, PrimaryKey, Scope } from "effect"
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
import { percentile, printJson, printTable, progress, round } from "./Report.ts"
import { makeWorld, syntheticRatings } from "./Synthetic.ts"

export interface DemoOptions {
  /** TVs to simulate; undefined: 200 MovieLens viewers or 400 synthetic ones. */
  readonly tvs: number | undefined
  readonly dataset: string | undefined
  readonly json: boolean
}

interface DemoWorld {
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
const tvSettings = federatedEvalConfig()

/** MovieLens when its folder is there, otherwise a seeded synthetic catalog and viewers. */
const loadWorld = (options: DemoOptions) =>
  Effect.gen(function*() {
    const ml = yield* Effect.option(loadMovieLens(datasetPath(options.dataset)))
    if (ml._tag === "Some") {
      const catalog = yield* embedCatalog(ml.value).pipe(
        Effect.provide(Embedder.layerHashingWith(tvSettings.embedder))
      )
      const splits = leaveLastPositiveOut(ml.value).slice(0, options.tvs ?? 200)
      const source = `MovieLens 100K (${ml.value.movies.length} movies)`
      return { source, catalog, splits } satisfies DemoWorld
    }
    yield* progress("demo: MovieLens not found (set OMEGA_DATASET); using a synthetic catalog and viewers")
    // Twice MovieLens' TVs: a hidden circle needs enough viewers for k-anonymous co-watch rows.
    const world = makeWorld({ items: 1_000, viewers: options.tvs ?? 400, seed: 3 })
    const ratings = syntheticRatings(world, 120, 17)
    const catalog = yield* embedCatalog(ratings).pipe(Effect.provide(Embedder.layerHashingWith(tvSettings.embedder)))
    return {
      source: `synthetic (${catalog.length} items, ${world.byCircle.length} hidden audience circles)`,
      catalog,
      splits: leaveLastPositiveOut(ratings)
    } satisfies DemoWorld
  })

/** A shard as the hash ring sees it. */
class ShardNode implements PrimaryKey.PrimaryKey {
  readonly shardId: string
  readonly port: number
  constructor(shardId: string, port: number) {
    this.shardId = shardId
    this.port = port
  }
  [PrimaryKey.symbol]() {
    return this.shardId
  }
}

const SECRET = "demo-fleet-secret"
const REGION = "eu-west"
const ROUNDS = 3

export const runDemo = Effect.fn("omega.demo")(function*(options: DemoOptions) {
  const world = yield* loadWorld(options)
  const titles = new Map(world.catalog.map((c) => [c.contentId, c]))
  yield* progress(
    `demo: ${world.splits.length} TVs replaying viewers from ${world.source}; TVs run omega eval's federated fleet`
  )

  // The constellation: two shards on PGlite with real QUIC on loopback, and a federation worker.
  // (QUIC rather than WebTransport over HTTP/2: that library can spin forever closing hundreds of
  // sessions at once, which would keep the demo from exiting.)
  const identity = makeQuicIdentity()
  const transport = Context.get(yield* Layer.build(SyncTransport.layerQuic()), SyncTransport)
  // Shards and worker in a scope of their own: they stop before the TVs are scored, so recommend
  // latency is the TVs', not time spent waiting on a shard's work in this shared process. The TVs'
  // clients then retry in the background, as a TV's does when its shard is away.
  const constellation = yield* Scope.make()
  // Closed early on success; this closes it on failure or interruption too (closing twice is harmless).
  yield* Effect.addFinalizer(() => Scope.close(constellation, Exit.void))
  const shards: Array<ShardNode> = []
  const ingestions = new Map<string, Ingestion["Service"]>()
  for (const shardId of ["shard-a", "shard-b"]) {
    const context = yield* Layer.buildWithScope(
      shardCore({
        shardId,
        region: REGION,
        maxDevices: 100_000,
        fleetSecret: SECRET,
        sync: { host: "127.0.0.1", port: 0, identity },
        ingestion: {
          minSyncInterval: Duration.zero,
          // A round's uploads are all decoded before the worker pulls its trends (decoding yields
          // to acks between uploads); a shard under production load decodes a sample instead.
          trends: { ...defaultShardTrendsConfig, decodeBudgetMs: 2_000 }
        },
        federationEvery: Duration.hours(1)
      }).pipe(
        Layer.provideMerge(ShardStorage.layerPglite({ ownThread: true })),
        Layer.provide(Layer.succeed(SyncTransport, transport))
      ),
      constellation
    )
    // What POST /api/v1/content does: store the catalog and announce it (no TV is connected yet).
    yield* Context.get(context, ShardStorage).addContent(world.catalog)
    yield* Context.get(context, Federation).announceContent(world.catalog)
    shards.push(new ShardNode(shardId, Context.get(context, SyncServer).port))
    ingestions.set(shardId, Context.get(context, Ingestion))
    yield* progress(`  ${shardId} ready (PGlite, QUIC on 127.0.0.1:${Context.get(context, SyncServer).port})`)
  }
  const ring = HashRing.make<ShardNode>()
  for (const node of shards) HashRing.add(ring, node)
  const worker = Context.get(
    yield* Layer.buildWithScope(
      FederationWorker.layer({
        workerId: "demo",
        fleetSecret: SECRET,
        shards: shards.map((s) => ({
          shardId: s.shardId,
          endpoint: { host: "127.0.0.1", port: s.port, serverPeerId: identity.peerId }
        })),
        every: Duration.hours(1),
        roundTimeout: Duration.seconds(10),
        maxPatternsPerShard: 500,
        federate: federateAcrossShards(defaultCrossShardConfig)
      }).pipe(Layer.provide(Layer.succeed(SyncTransport, transport))),
      constellation
    ),
    FederationWorker
  )

  // The fleet: one brain and one long-lived session per TV.
  const config = { ...tvSettings.brain, runLearningLoops: false }
  // Uploads are quantized as in the federated eval: finer than the default, so shards decode them into items.
  const codec = makeWireCodec({ quantization: tvSettings.upload })
  const fleet: Array<{ split: Split; brain: OmegaBrain["Service"]; client: SyncClient["Service"]; shard: string }> = []
  // Each TV in a scope of its own, so that at the end all sessions close at once, not one by one.
  const tvScopes: Array<Scope.Closeable> = []
  yield* Effect.addFinalizer(() =>
    Effect.forEach(tvScopes, (scope) => Scope.close(scope, Exit.void), { concurrency: "unbounded", discard: true })
  )
  for (const split of world.splits) {
    const deviceId = `tv-${split.user}`
    const home = HashRing.get(ring, deviceId)!
    const tvScope = yield* Scope.make()
    tvScopes.push(tvScope)
    const context = yield* Layer.buildWithScope(
      SyncClient.layer({
        deviceId,
        token: deviceToken(SECRET, deviceId),
        region: REGION,
        endpoint: { host: "127.0.0.1", port: home.port, serverPeerId: identity.peerId },
        ...defaultSyncTiming,
        // The demo drives syncs itself, round by round.
        minInterval: Duration.hours(1),
        maxInterval: Duration.hours(2),
        pushAfterChanges: 1_000_000,
        codec
      }).pipe(
        Layer.provideMerge(OmegaBrain.layer(config)),
        Layer.provide(
          Layer.mergeAll(Embedder.layerHashingWith(tvSettings.embedder), VectorIndex.layer, BrainStore.layerTest)
        ),
        Layer.provide(Layer.succeed(SyncTransport, transport))
      ),
      tvScope
    )
    const brain = Context.get(context, OmegaBrain)
    yield* brain.addContent(world.catalog)
    fleet.push({ split, brain, client: Context.get(context, SyncClient), shard: home.shardId })
  }
  yield* Effect.forEach(fleet, (tv) => tv.client.awaitConnected, { discard: true })
  yield* progress(`  ${fleet.length} TVs connected (${fleet.filter((t) => t.shard === "shard-a").length} on shard-a)`)

  // Replay in rounds of global time; each round ends with every TV syncing and a federation round.
  const times = fleet.flatMap((tv) => tv.split.train.map((r) => r.at)).sort((a, b) => a - b)
  const cuts = Array.from({ length: ROUNDS }, (_, i) => times[Math.floor(((i + 1) * (times.length - 1)) / ROUNDS)]!)
  const rounds: Array<Record<string, string | number>> = []
  const coWatchVersions = new Map<string, number>()
  const syncMs: Array<number> = []
  let bytesUp = 0
  let syncs = 0
  for (const [index, cut] of cuts.entries()) {
    let events = 0
    for (const tv of fleet) {
      const from = index === 0 ? -Infinity : cuts[index - 1]!
      const window = tv.split.train.filter((r) => r.at > from && r.at <= cut)
      yield* replay(tv.brain, { titles }, window)
      events += window.length
      const started = performance.now()
      const outcome = yield* tv.client.syncNow
      if (outcome._tag === "Acknowledged") {
        syncMs.push(performance.now() - started)
        bytesUp += outcome.bytes
        syncs += 1
      }
    }
    // The round also sends the shards a co-watch table summed over both (once k devices changed
    // since the last one), which each shard publishes to its TVs as it takes it.
    const report = yield* worker.runRound
    yield* Effect.sleep(Duration.millis(300))
    rounds.push({
      round: index + 1,
      events,
      syncs,
      shards: report.shardsAnswered,
      patterns_in: report.patternsIn,
      federated_out: report.patternsOut,
      trends_on_tv: (yield* fleet[0]!.brain.stats).trends,
      cowatch_rows: report.coWatchRows,
      round_ms: report.durationMs,
      convergence: round3(report.convergence)
    })
    yield* progress(
      `  round ${index + 1}/${ROUNDS}: ${events} events replayed, federated ${report.patternsOut} patterns`
    )
  }
  // Changed co-watch rows reach a shard's sessions spread over 10 s: wait until every TV holds its shard's last ones.
  yield* progress("  waiting for every TV to hold its shard's latest co-watch rows")
  for (const [shardId, ingestion] of ingestions) {
    coWatchVersions.set(shardId, (yield* ingestion.coWatchSince(Number.MAX_SAFE_INTEGER)).version)
  }
  const behind = Effect.filter(
    fleet,
    (tv) => Effect.map(tv.brain.stats, (s) => s.versions.coWatch < (coWatchVersions.get(tv.shard) ?? 0))
  )
  for (let waited = 0; waited < 30_000 && (yield* behind).length > 0; waited += 250) {
    yield* Effect.sleep(Duration.millis(250))
  }
  const lagging = (yield* behind).length
  if (lagging > 0) yield* progress(`  WARNING: ${lagging} TVs still lack their shard's latest co-watch rows after 30 s`)
  const statuses = yield* Effect.forEach(fleet, (tv) => tv.client.status)
  // Co-watch rows are catalog knowledge, pushed when they change rather than per sync: counted apart.
  const coWatchBytes = statuses.reduce((n, s) => n + s.coWatchBytesDown, 0)
  const bytesDown = statuses.reduce((n, s) => n + s.bytesDown, 0) - coWatchBytes
  yield* progress("  stopping the constellation; scoring the TVs offline")
  yield* Scope.close(constellation, Exit.void)

  // Quality at each TV's next good watch, with and without what federation brought.
  const recommendMs: Array<number> = []
  const ranks: Array<number> = []
  for (const [n, tv] of fleet.entries()) {
    const recent = tv.split.train.slice(-5).map((r) => r.contentId)
    const context = contextAt(tv.split.heldOut.at, recent)
    const t0 = performance.now()
    const recs = yield* tv.brain.recommend(context, 10)
    recommendMs.push(performance.now() - t0)
    ranks.push(recs.findIndex((r) => r.contentId === tv.split.heldOut.contentId))
    if (n < 2) {
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
  // The same brains (settings, embedder, catalog) learning from nothing but their own viewing.
  const localOnly = yield* evaluate("local-only", world.splits, localBrainRanker(world.catalog, config))
  // The fleet is the world's splits in order, so the two methods pair up TV by TV.
  const federated = metricsOfRanks(ranks)
  const gain = hitRatioInterval(federated, localOnly)

  yield* printTable("Federation rounds (two shards, one worker)", rounds)
  yield* printTable(`Recommendation quality of these ${fleet.length} TVs (HR@10 / NDCG@10 at the next good watch)`, [
    { brain: "local-only (no sync)", hr10: round3(localOnly.hr10), ndcg10: round3(localOnly.ndcg10) },
    { brain: "federated (this run)", hr10: round3(federated.hr10), ndcg10: round3(federated.ndcg10) }
  ])
  yield* progress(
    `  federated / local-only HR@10: ${(federated.hr10 / Math.max(localOnly.hr10, 1e-9)).toFixed(2)}x (95% CI ${
      gain.low.toFixed(2)
    } to ${
      // Some resamples hold none of the local-only hits when there are only a few.
      Number.isFinite(gain.high) ? gain.high.toFixed(2) : "unbounded"}, paired bootstrap over the TVs)`
  )
  const summary = {
    source: world.source,
    tvs: fleet.length,
    shards: shards.length,
    rounds: ROUNDS,
    hr10_local: round3(localOnly.hr10),
    hr10_federated: round3(federated.hr10),
    recommend_p50_ms: round(percentile(recommendMs, 50)),
    recommend_p99_ms: round(percentile(recommendMs, 99)),
    sync_p50_ms: round(percentile(syncMs, 50)),
    sync_p99_ms: round(percentile(syncMs, 99)),
    bytes_up_per_sync: round(bytesUp / Math.max(1, syncs), 1),
    bytes_down_per_sync: round(bytesDown / Math.max(1, syncs), 1),
    cowatch_bytes_per_tv: round(coWatchBytes / Math.max(1, fleet.length), 0)
  }
  yield* printTable("The fleet", [summary])
  if (options.json) {
    yield* printJson({
      ...summary,
      hr10_gain_95ci: [round(gain.low, 2), Number.isFinite(gain.high) ? round(gain.high, 2) : null]
    })
  }
  // The TVs' sessions close with the scope (the constellation closed above); nothing is left running.
})

const round3 = (x: number) => round(x, 3)
