/**
 * `omega simulate`: a fleet of simulated TVs against a shard that is already running (the server
 * app, or a pod behind a port-forward). Each TV is a real brain replaying a viewer and holding one
 * session to the shard; the fleet syncs in rounds, optionally asks the shard's management API for a
 * federation round after each, and reports what came back: acknowledgements and failures by kind,
 * bytes, global patterns and co-watch rows received, recommend latency, and HR@10 against the same
 * brains without sync.
 *
 * Device ids carry a random run id: a shard acknowledges a version it has seen as a duplicate, so a
 * second run under the same ids would be a replay of the first.
 */
import { ContentAccepted, FederationRound, ShardApiStats, ShardInfo } from "@omega/constellation"
import type { ContentEmbedding } from "@omega/protocol"
import { type ConnectOptions, pinnedEndpoint } from "@omega/sync"
import { Data, Duration, Effect, type Redacted, Schema } from "effect"
import { randomBytes } from "node:crypto"
import {
  awaitSessions,
  bytesReceived,
  describeInterval,
  loadFleetWorld,
  openFleet,
  printQuality,
  roundWindows,
  scoreFleet,
  syncRound,
  SyncTally
} from "./Fleet.ts"
import { percentile, printJson, printTable, progress, round, totalCount } from "./Report.ts"
import { callShardApi } from "./ShardApi.ts"

export interface SimulateOptions {
  readonly host: string
  readonly port: number
  readonly transport: "quic" | "webtransport"
  /**
   * QUIC: the shard's peer id. WebTransport: the SHA-256 of its certificate, 64 hex digits. Both
   * are in the shard's start-up log; undefined: the pin GET /api/v1/shards reports (needs `api`).
   */
  readonly pin: string | undefined
  readonly secret: Redacted.Redacted<string>
  readonly region: string
  /**
   * TVs (viewers of the world). Co-watch rows need a few hundred: a pair of items is published only
   * once k devices stand behind it.
   */
  readonly tvs: number
  readonly dataset: string | undefined
  readonly rounds: number
  /** Pause between rounds; a shard accepts one sync per device per MIN_SYNC_INTERVAL_MS (60 s by default). */
  readonly everySeconds: number
  /** The shard's management API (for example http://127.0.0.1:8080): federation after each round, stats at the end. */
  readonly api: string | undefined
  /**
   * POST the world's catalog to the API's /api/v1/content first, so the shard can decode trends and
   * co-watch rows from the fleet's uploads (a dev shard: the items stay in its content table).
   */
  readonly addCatalog: boolean
  /** How long to wait after the last round for the shard's pushes (its PUSH_EVERY_MS, 60 s by default). */
  readonly settleSeconds: number
  /** How long to wait for the TVs' sessions to open. */
  readonly connectSeconds: number
  /**
   * Syncs that may fail (by any kind) before the run counts as failed. The run also fails when no
   * sync is acknowledged or a TV has no session at the end, so a smoke test exits non-zero.
   */
  readonly maxErrors: number
  readonly json: boolean
}

/** Items per POST /api/v1/content (the API takes up to 1,000). */
const CONTENT_PER_REQUEST = 500

export class SimulateError extends Data.TaggedError("SimulateError")<{ readonly message: string }> {}

/** The pin as the transport wants it, or why it is not one. */
export const endpointOf = (
  options: Pick<SimulateOptions, "host" | "port" | "transport"> & { readonly pin: string }
): Effect.Effect<ConnectOptions, SimulateError> =>
  Effect.mapError(pinnedEndpoint(options), (e) => new SimulateError({ message: `--pin: ${e.message}` }))

/** A management API call (see `callShardApi`) whose failure is the run's: a SimulateError naming the call. */
const callApi = <S extends Schema.Top>(
  api: string,
  method: "GET" | "POST",
  path: string,
  schema: S,
  body?: unknown
) => Effect.mapError(callShardApi(api, method, path, schema, body), (e) => new SimulateError({ message: e.message }))

/** The pin given, or else the one the shard's API reports for its sync endpoint on the same transport. */
const pinOf = (options: SimulateOptions) =>
  Effect.gen(function*() {
    if (options.pin !== undefined) return options.pin
    if (options.api === undefined) {
      return yield* new SimulateError({ message: "--pin is needed without --api (the shard's start-up log prints it)" })
    }
    const shards = yield* callApi(options.api, "GET", "/api/v1/shards", Schema.Array(ShardInfo))
    const shard = shards.find((s) => s.transport === options.transport)
    if (shard?.pin === undefined) {
      return yield* new SimulateError({
        message: `${options.api}/api/v1/shards reports no ${options.transport} pin: pass --pin (and check --transport)`
      })
    }
    yield* progress(`  pinning ${shard.pin}, as ${options.api}/api/v1/shards reports`)
    return shard.pin
  })

/** Why `options` cannot run, or undefined when they can. */
const optionsProblem = (options: SimulateOptions): string | undefined => {
  if (!Number.isInteger(options.rounds) || options.rounds < 1) {
    return `--rounds must be at least 1, got ${options.rounds}`
  }
  if (!Number.isInteger(options.tvs) || options.tvs < 1) return `--tvs must be at least 1, got ${options.tvs}`
  const nonNegative = {
    every: options.everySeconds,
    settle: options.settleSeconds,
    "connect-timeout": options.connectSeconds,
    "max-errors": options.maxErrors
  }
  for (const [flag, value] of Object.entries(nonNegative)) {
    if (!(value >= 0)) return `--${flag} must be 0 or more, got ${value}`
  }
  if (options.addCatalog && options.api === undefined) return "--add-catalog needs --api"
  return undefined
}

/** What POST /api/v1/content does for each item: the shard stores it and decodes uploads against it. */
const postCatalog = (api: string, catalog: ReadonlyArray<ContentEmbedding>) =>
  Effect.gen(function*() {
    for (let at = 0; at < catalog.length; at += CONTENT_PER_REQUEST) {
      const items = catalog.slice(at, at + CONTENT_PER_REQUEST).map((item) => ({
        contentId: item.contentId,
        title: item.title,
        genres: item.genres,
        embedding: Array.from(item.embedding)
      }))
      yield* callApi(api, "POST", "/api/v1/content", ContentAccepted, items)
    }
    yield* progress(`  posted ${catalog.length} catalog items to ${api}/api/v1/content`)
  })

export const runSimulate = Effect.fn("omega.simulate")(function*(options: SimulateOptions) {
  const problem = optionsProblem(options)
  if (problem !== undefined) return yield* new SimulateError({ message: problem })
  const endpoint = yield* endpointOf({ ...options, pin: yield* pinOf(options) })
  const target = `${options.transport}://${options.host}:${options.port}`
  const world = yield* loadFleetWorld({ dataset: options.dataset, tvs: options.tvs })
  if (options.addCatalog && options.api !== undefined) yield* postCatalog(options.api, world.catalog)
  const run = randomBytes(3).toString("hex")
  yield* progress(`simulate: ${world.splits.length} TVs (run ${run}) from ${world.source} against ${target}`)

  const fleet = yield* openFleet({
    world,
    secret: options.secret,
    region: options.region,
    deviceId: (split) => `sim-${run}-${split.user}`,
    home: () => ({ shard: target, endpoint })
  })
  yield* progress(`  ${yield* awaitSessions(fleet, options.connectSeconds, target)}/${fleet.length} sessions open`)

  const rows: Array<Record<string, string | number>> = []
  const tally = new SyncTally()
  let federationRounds = 0
  let federatedOut = 0
  for (const [index, window] of roundWindows(fleet, options.rounds).entries()) {
    if (index > 0) yield* pause(options.everySeconds)
    const synced = yield* syncRound(fleet, world, window)
    tally.add(synced)
    const federation = options.api === undefined ?
      undefined :
      yield* callApi(options.api, "POST", "/api/v1/federation/trigger", FederationRound)
    if (federation !== undefined) {
      federationRounds += 1
      federatedOut += federation.patternsOut
    }
    const failed = totalCount(synced.failures)
    rows.push({
      round: index + 1,
      events: synced.events,
      acknowledged: synced.acknowledged,
      idle: synced.idle,
      failed,
      sync_p50_ms: round(percentile(synced.syncMs, 50), 2),
      federated_out: federation === undefined ? "-" : federation.patternsOut
    })
    yield* progress(
      `  round ${index + 1}/${options.rounds}: ${synced.events} events replayed, ${synced.acknowledged} syncs ` +
        `acknowledged, ${synced.idle} with nothing new, ${failed} failed`
    )
  }
  // The shard pushes a region's changes at most once per PUSH_EVERY_MS (60 s by default): wait for them.
  if (options.settleSeconds > 0) yield* progress(`  waiting ${options.settleSeconds} s for the shard's pushes`)
  yield* Effect.sleep(Duration.seconds(options.settleSeconds))
  const statuses = yield* Effect.forEach(fleet, (tv) => tv.client.status)
  const brains = yield* Effect.forEach(fleet, (tv) => tv.brain.stats)
  const received = bytesReceived(statuses)
  const stats = options.api === undefined
    ? undefined
    : yield* callApi(options.api, "GET", "/api/v1/stats", ShardApiStats)
  const { gain, localOnly, recommendMs, synced } = yield* scoreFleet(fleet, world)

  yield* printTable(`Rounds against ${target}`, rows)
  yield* printQuality(fleet.length, { localOnly, synced }, "synced with the shard")
  yield* progress(`  synced / local-only HR@10 95% CI ${describeInterval(gain)} (paired bootstrap over the TVs)`)
  const mean = (values: ReadonlyArray<number>) => values.reduce((a, b) => a + b, 0) / Math.max(1, values.length)
  const summary = {
    target,
    tvs: fleet.length,
    tvs_connected: statuses.filter((s) => s.connected).length,
    rounds: options.rounds,
    syncs_acknowledged: tally.acknowledged,
    duplicates: tally.duplicates,
    syncs_idle: tally.idle,
    sync_errors: tally.failed,
    sync_p50_ms: round(percentile(tally.syncMs, 50), 2),
    sync_p99_ms: round(percentile(tally.syncMs, 99), 2),
    bytes_up_per_sync: round(tally.bytesUp / Math.max(1, tally.acknowledged), 1),
    bytes_down_per_sync: round(received.sync / Math.max(1, tally.acknowledged), 1),
    federation_rounds: federationRounds,
    federated_out: federatedOut,
    global_patterns_per_tv: round(mean(brains.map((b) => b.collectivePatterns)), 1),
    trends_per_tv: round(mean(brains.map((b) => b.trends)), 1),
    cowatch_updates_per_tv: round(mean(statuses.map((s) => s.coWatchUpdates)), 2),
    recommend_p50_ms: round(percentile(recommendMs, 50), 2),
    recommend_p99_ms: round(percentile(recommendMs, 99), 2),
    hr10_local: round(localOnly.hr10),
    hr10_synced: round(synced.hr10)
  }
  yield* printTable("The fleet", [summary])
  if (tally.failed > 0) {
    yield* printTable(
      "Syncs not acknowledged, by kind",
      Object.entries(tally.failures).map(([kind, n]) => ({ kind, n }))
    )
  }
  if (stats !== undefined) {
    yield* printTable("The shard (GET /api/v1/stats)", [{
      registered_devices: stats.registeredDevices,
      active_devices: stats.activeDevices,
      deltas_accepted: stats.deltasAccepted,
      logged_deltas: stats.loggedDeltas,
      publishable_clusters: stats.publishableClusters
    }])
  }
  const report = { ...summary, failures: tally.failures, shard: stats }
  if (options.json) yield* printJson({ ...report, shard: stats ?? null })
  // A smoke test's verdict, after the report: the exit status says whether the shard served the fleet.
  const problems = [
    ...(tally.acknowledged === 0 ? ["no sync was acknowledged"] : []),
    ...(tally.failed > options.maxErrors ? [`${tally.failed} syncs failed (--max-errors ${options.maxErrors})`] : []),
    ...(summary.tvs_connected < fleet.length ? [`${fleet.length - summary.tvs_connected} TVs lost their session`] : [])
  ]
  if (problems.length > 0) {
    return yield* new SimulateError({ message: `the fleet was not served: ${problems.join("; ")}` })
  }
  return report
})

/** Sleeps between rounds, saying so every 10 s. */
const pause = (seconds: number) =>
  Effect.gen(function*() {
    for (let left = seconds; left > 0; left -= 10) {
      yield* progress(`  next round in ${Math.ceil(left)} s (the shard takes one sync per device per interval)`)
      yield* Effect.sleep(Duration.seconds(Math.min(10, left)))
    }
  })
