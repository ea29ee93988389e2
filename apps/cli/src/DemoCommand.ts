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
import {
  defaultCrossShardConfig,
  defaultShardTrendsConfig,
  federateAcrossShards,
  Federation,
  FederationWorker,
  Ingestion,
  shardCore,
  ShardStorage,
  SyncServer
} from "@omega/constellation"
import { makeQuicIdentity, SyncTransport } from "@omega/sync"
import { Context, Duration, Effect, Exit, HashRing, Layer, PrimaryKey, Scope } from "effect"
import {
  awaitSessions,
  bytesReceived,
  describeInterval,
  type FleetWorld,
  loadFleetWorld,
  openFleet,
  printQuality,
  roundWindows,
  scoreFleet,
  syncRound,
  SyncTally
} from "./Fleet.ts"
import { percentile, printJson, printTable, progress, round } from "./Report.ts"

export interface DemoOptions {
  /** TVs to simulate; undefined: 200 MovieLens viewers or 400 synthetic ones. */
  readonly tvs: number | undefined
  readonly dataset: string | undefined
  readonly json: boolean
}

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
  const world: FleetWorld = yield* loadFleetWorld(options)
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

  // The fleet: one brain and one long-lived session per TV, each to its shard on the hash ring.
  const fleet = yield* openFleet({
    world,
    secret: SECRET,
    region: REGION,
    deviceId: (split) => `tv-${split.user}`,
    home: (deviceId) => {
      const node = HashRing.get(ring, deviceId)!
      return {
        shard: node.shardId,
        endpoint: { host: "127.0.0.1", port: node.port, serverPeerId: identity.peerId }
      }
    }
  }).pipe(Effect.provideService(SyncTransport, transport))
  yield* awaitSessions(fleet, 60, "the demo's shards")
  yield* progress(`  ${fleet.length} TVs connected (${fleet.filter((t) => t.shard === "shard-a").length} on shard-a)`)

  // Replay in rounds of global time; each round ends with every TV syncing and a federation round.
  const rounds: Array<Record<string, string | number>> = []
  const coWatchVersions = new Map<string, number>()
  const tally = new SyncTally()
  for (const [index, window] of roundWindows(fleet, ROUNDS).entries()) {
    const synced = yield* syncRound(fleet, world, window)
    tally.add(synced)
    // The round also sends the shards a co-watch table summed over both (once k devices changed
    // since the last one), which each shard publishes to its TVs as it takes it.
    const report = yield* worker.runRound
    yield* Effect.sleep(Duration.millis(300))
    rounds.push({
      round: index + 1,
      events: synced.events,
      syncs: tally.acknowledged,
      shards: report.shardsAnswered,
      patterns_in: report.patternsIn,
      federated_out: report.patternsOut,
      trends_on_tv: (yield* fleet[0]!.brain.stats).trends,
      cowatch_rows: report.coWatchRows,
      round_ms: report.durationMs,
      convergence: round(report.convergence)
    })
    yield* progress(
      `  round ${index + 1}/${ROUNDS}: ${synced.events} events replayed, federated ${report.patternsOut} patterns`
    )
  }
  const failed = Object.entries(tally.failures).map(([kind, n]) => `${n} ${kind}`).join(", ")
  if (failed !== "") yield* progress(`  WARNING: syncs that were not acknowledged: ${failed}`)
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
  const received = bytesReceived(yield* Effect.forEach(fleet, (tv) => tv.client.status))
  yield* progress("  stopping the constellation; scoring the TVs offline")
  yield* Scope.close(constellation, Exit.void)

  // Quality at each TV's next good watch, with and without what federation brought.
  const { gain, localOnly, recommendMs, synced: federated } = yield* scoreFleet(fleet, world)

  yield* printTable("Federation rounds (two shards, one worker)", rounds)
  yield* printQuality(fleet.length, { localOnly, synced: federated }, "federated (this run)")
  yield* progress(
    `  federated / local-only HR@10: ${(federated.hr10 / Math.max(localOnly.hr10, 1e-9)).toFixed(2)}x (95% CI ${
      describeInterval(gain)
    }, paired bootstrap over the TVs)`
  )
  const summary = {
    source: world.source,
    tvs: fleet.length,
    shards: shards.length,
    rounds: ROUNDS,
    hr10_local: round(localOnly.hr10),
    hr10_federated: round(federated.hr10),
    recommend_p50_ms: round(percentile(recommendMs, 50)),
    recommend_p99_ms: round(percentile(recommendMs, 99)),
    sync_p50_ms: round(percentile(tally.syncMs, 50)),
    sync_p99_ms: round(percentile(tally.syncMs, 99)),
    sync_errors: tally.failed,
    bytes_up_per_sync: round(tally.bytesUp / Math.max(1, tally.acknowledged), 1),
    bytes_down_per_sync: round(received.sync / Math.max(1, tally.acknowledged), 1),
    cowatch_bytes_per_tv: round(received.coWatch / Math.max(1, fleet.length), 0)
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
