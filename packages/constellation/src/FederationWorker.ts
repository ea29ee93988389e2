/**
 * The federation worker: holds a long-lived sync session to every shard (authenticated like a
 * device, in the "federation:" namespace), and in each round pulls every shard's aggregated
 * patterns, federates them per region across shards, and sends the result back to the shards
 * as RegionUpdate frames, which the shards push on to their TVs. Rounds run on a schedule and
 * whenever a shard asks (POST /api/v1/federation/trigger on any shard).
 */
import {
  type CoWatchCount,
  type DeviceId,
  type GlobalPattern,
  type GlobalPatterns,
  makeWireCodec,
  MAX_COWATCH_ROWS,
  MAX_GLOBAL_PATTERNS,
  PROTOCOL_VERSION,
  type ShardPatterns,
  type SyncFrame,
  type TrendSignal
} from "@omega/protocol"
import { type Connection, type ConnectOptions, SyncTransport } from "@omega/sync"
import { Clock, Context, Deferred, Duration, Effect, Layer, Metric, Ref, Schedule, Semaphore, Stream } from "effect"
import {
  type CoWatchRowConfig,
  coWatchRowsProblem,
  defaultCoWatchConfig,
  mergeCoWatchCounts
} from "./federation/CoWatch.ts"
import { coWatchSlices } from "./internal/chunks.ts"
import { dot } from "./internal/vectors.ts"
import { deviceToken, FEDERATION_PEER_PREFIX } from "./ShardManager.ts"

export interface ShardEndpoint {
  readonly shardId: string
  readonly endpoint: ConnectOptions
}

/** One shard's aggregated patterns of one region, as a round collects them. */
export interface ShardRegionPatterns {
  readonly shardId: string
  readonly region: string
  readonly patterns: ReadonlyArray<GlobalPattern>
  readonly trends: ReadonlyArray<TrendSignal>
}

/** Turns a round's inputs into each region's federated patterns (k-anonymity included). */
export type Federate = (inputs: ReadonlyArray<ShardRegionPatterns>) => ReadonlyMap<string, {
  readonly patterns: ReadonlyArray<GlobalPattern>
  readonly trends: ReadonlyArray<TrendSignal>
}>

export interface FederationWorkerConfig {
  /** This worker's id; "federation:" is prepended when missing. */
  readonly workerId: string
  readonly fleetSecret: string
  readonly shards: ReadonlyArray<ShardEndpoint>
  readonly every: Duration.Input
  /** How long a round waits for shards to answer before federating what it has. */
  readonly roundTimeout: Duration.Input
  readonly maxPatternsPerShard: number
  readonly federate: Federate
  /** k, neighbours per row and popularity penalty of the co-watch table federated across shards (the shards' defaults). */
  readonly coWatch?: CoWatchRowConfig
}

export interface WorkerRoundReport {
  readonly round: number
  readonly durationMs: number
  readonly shardsAnswered: number
  readonly patternsIn: number
  readonly patternsOut: number
  readonly regions: number
  /** Mean cosine of each output pattern to its nearest output of the previous round (1 = settled). */
  readonly convergence: number
  /**
   * Rows of the co-watch table sent to the shards this round; 0 when it was held back because
   * fewer than k devices changed across shards since the last table.
   */
  readonly coWatchRows: number
}

export const federationMetrics = {
  rounds: Metric.counter("omega_federation_rounds_total", { description: "Federation rounds run", incremental: true }),
  duration: Metric.gauge("omega_federation_round_duration_ms", { description: "Duration of the last round" }),
  patternsIn: Metric.gauge("omega_federation_patterns_in", { description: "Shard patterns in the last round" }),
  patternsOut: Metric.gauge("omega_federation_patterns_out", {
    description: "Federated patterns out of the last round"
  }),
  groups: Metric.gauge("omega_federation_regions", { description: "Regions federated in the last round" }),
  convergence: Metric.gauge("omega_federation_convergence", { description: "Mean cosine to the previous round" })
}

export class FederationWorker extends Context.Service<FederationWorker, {
  readonly runRound: Effect.Effect<WorkerRoundReport>
  readonly lastRound: Effect.Effect<WorkerRoundReport | undefined>
  /** Shards with an open session. */
  readonly connectedShards: Effect.Effect<number>
}>()("omega/constellation/FederationWorker") {
  static readonly layer = (config: FederationWorkerConfig) => Layer.effect(FederationWorker, make(config))
}

interface ShardSession {
  readonly connection: Connection
  readonly shardId: string
}

function make(config: FederationWorkerConfig) {
  return Effect.gen(function*() {
    const transport = yield* SyncTransport
    const codec = makeWireCodec()
    const workerId = config.workerId.startsWith(FEDERATION_PEER_PREFIX) ?
      config.workerId :
      `${FEDERATION_PEER_PREFIX}${config.workerId}`
    const sessions = new Map<string, ShardSession>()
    // The round being collected: answers by shard, and a signal when every shard is done.
    let collecting: {
      round: number
      answers: Map<string, Array<ShardPatterns>>
      /** Co-watch counts by shard as they arrive, and the shards whose counts are complete. */
      coWatch: Map<string, { rows: Array<CoWatchCount>; changedDevices: number; complete: boolean }>
      done: Deferred.Deferred<void>
    } | undefined
    const coWatchConfig = config.coWatch ?? defaultCoWatchConfig
    const problem = coWatchRowsProblem(coWatchConfig)
    if (problem !== undefined) return yield* Effect.die(new RangeError(problem))
    // Each shard's latest complete co-watch counts and the round they came in: a shard that misses
    // a round is merged with its last counts for a while, so the table does not shrink and grow back.
    const coWatchCounts = new Map<string, { readonly rows: ReadonlyArray<CoWatchCount>; readonly round: number }>()
    let coWatchTableSent = false
    let round = 0
    let previous: ReadonlyArray<GlobalPattern> = []
    const last = yield* Ref.make<WorkerRoundReport | undefined>(undefined)
    const requested = yield* Ref.make(false)

    const send = (connection: Connection, frame: SyncFrame) =>
      Effect.flatMap(codec.encodeEffect(frame).pipe(Effect.orDie), (bytes) => connection.send(bytes))

    const onFrame = Effect.fnUntraced(function*(shardId: string, bytes: Uint8Array) {
      const decoded = yield* Effect.result(codec.decode(bytes))
      if (decoded._tag === "Failure") {
        // A frame type from a newer shard is skipped, not fatal: shards may be upgraded first.
        if (decoded.failure.reason === "unknown-frame") return yield* Effect.logDebug(decoded.failure.message)
        return yield* decoded.failure
      }
      const frame = decoded.success
      if (frame._tag === "ShardCoWatch") {
        if (collecting === undefined || frame.round !== collecting.round) return
        const answer = collecting.coWatch.get(shardId) ?? { rows: [], changedDevices: 0, complete: false }
        if (answer.complete || answer.rows.length + frame.rows.length > MAX_COWATCH_COUNTS_PER_SHARD) {
          // Past its last slice, or beyond the bound: this shard's counts are left out of the round.
          collecting.coWatch.set(shardId, { rows: [], changedDevices: 0, complete: false })
          return
        }
        answer.rows.push(...frame.rows)
        answer.changedDevices = frame.changedDevices
        answer.complete = frame.last
        collecting.coWatch.set(shardId, answer)
      } else if (frame._tag === "ShardPatterns") {
        if (collecting === undefined || frame.round !== collecting.round) return
        const list = collecting.answers.get(shardId) ?? []
        list.push(frame)
        collecting.answers.set(shardId, list)
        const finished = [...sessions.keys()].every((id) => collecting!.answers.get(id)?.some((a) => a.last))
        if (finished) yield* Deferred.succeed(collecting.done, undefined)
      } else if (frame._tag === "RoundRequest") {
        yield* Ref.set(requested, true)
      } else if (frame._tag === "Ping") {
        yield* send(sessions.get(shardId)!.connection, { _tag: "Pong", nonce: frame.nonce })
      }
    })

    /** A session to one shard, kept open with reconnects. */
    const keepSession = (shard: ShardEndpoint) =>
      Effect.scoped(Effect.gen(function*() {
        const connection = yield* transport.connect(shard.endpoint)
        yield* send(connection, {
          _tag: "Hello",
          deviceId: workerId as DeviceId,
          token: deviceToken(config.fleetSecret, workerId),
          region: "federation",
          protocolVersion: PROTOCOL_VERSION
        })
        let welcomed = false
        yield* Effect.addFinalizer(() => Effect.sync(() => sessions.delete(shard.shardId)))
        yield* Stream.runForEach(connection.incoming, (bytes): Effect.Effect<void, unknown> => {
          if (welcomed) return onFrame(shard.shardId, bytes)
          welcomed = true
          return Effect.flatMap(codec.decode(bytes), (frame) =>
            frame._tag === "Welcome" ?
              Effect.sync(() => sessions.set(shard.shardId, { connection, shardId: shard.shardId })) :
              Effect.fail(`shard ${shard.shardId} refused the worker: ${frame._tag}`))
        })
      })).pipe(
        Effect.catchCause((cause) => Effect.logDebug(`federation session to ${shard.shardId} ended`, cause)),
        Effect.andThen(Effect.sleep(Duration.seconds(1))),
        Effect.forever
      )

    for (const shard of config.shards) yield* Effect.forkScoped(keepSession(shard))

    /**
     * One co-watch table for every shard (a TV's co-watch rows are not per region), summed over the
     * shards' latest complete counts, and sent only once k devices changed across the shards since
     * each took its last table: until then the change could be one device's viewing. Returns the
     * rows sent (none when held back).
     */
    const federateCoWatch = Effect.fnUntraced(function*(
      roundNumber: number,
      answered: ReadonlyMap<
        string,
        { readonly rows: ReadonlyArray<CoWatchCount>; readonly changedDevices: number; readonly complete: boolean }
      >
    ) {
      let changed = 0
      for (const [shardId, answer] of answered) {
        if (!answer.complete) continue
        coWatchCounts.set(shardId, { rows: answer.rows, round: roundNumber })
        changed += answer.changedDevices
      }
      for (const [shardId, counts] of coWatchCounts) {
        if (roundNumber - counts.round > COWATCH_STALE_ROUNDS) coWatchCounts.delete(shardId)
      }
      // Held back: too few changes, or a shard answered only in part (its table would shrink).
      const partial = [...answered.values()].some((answer) => !answer.complete)
      if (changed < coWatchConfig.minDevices || partial || coWatchCounts.size === 0) return []
      const table = mergeCoWatchCounts([...coWatchCounts.values()].map((c) => c.rows), coWatchConfig)
      // An empty table would only switch shards from their own rows to none; it goes out only to
      // withdraw rows an earlier table published.
      if (table.length === 0 && !coWatchTableSent) return []
      coWatchTableSent = true
      const slices = coWatchSlices(table, MAX_COWATCH_ROWS)
      for (const shardId of coWatchCounts.keys()) {
        const session = sessions.get(shardId)
        if (session === undefined) continue
        for (const slice of slices) {
          yield* send(session.connection, { _tag: "FederatedCoWatch", round: roundNumber, ...slice })
            .pipe(Effect.ignore)
        }
      }
      return table
    })

    const rounds = yield* Semaphore.make(1)
    const runRound = Effect.gen(function*() {
      const started = yield* Clock.currentTimeMillis
      round += 1
      const done = yield* Deferred.make<void>()
      collecting = { round, answers: new Map(), coWatch: new Map(), done }
      const open = [...sessions.values()]
      for (const session of open) {
        yield* send(session.connection, { _tag: "FederationPull", round, maxPatterns: config.maxPatternsPerShard })
          .pipe(
            Effect.ignore
          )
      }
      if (open.length > 0) yield* Deferred.await(done).pipe(Effect.timeoutOption(config.roundTimeout))
      const answers = collecting.answers
      const roundCoWatch = collecting.coWatch
      collecting = undefined
      const inputs: Array<ShardRegionPatterns> = [...answers.entries()].flatMap(([shardId, frames]) =>
        frames.map((f) => ({ shardId, region: f.region, patterns: f.patterns, trends: f.trends }))
      )
      const federated = config.federate(inputs)
      // Every shard gets every region it reported (its TVs live there).
      const version = started
      for (const [shardId, frames] of answers) {
        const session = sessions.get(shardId)
        if (session === undefined) continue
        for (const region of new Set(frames.map((f) => f.region))) {
          const result = federated.get(region)
          if (result === undefined) continue
          const global: GlobalPatterns = {
            version,
            similar: result.patterns.slice(0, MAX_GLOBAL_PATTERNS),
            trending: result.trends.slice(0, 20)
          }
          yield* send(session.connection, { _tag: "RegionUpdate", region, global }).pipe(Effect.ignore)
        }
      }
      const coWatchRows = yield* federateCoWatch(round, roundCoWatch)
      const out = [...federated.values()].flatMap((r) => r.patterns)
      const report: WorkerRoundReport = {
        round,
        durationMs: (yield* Clock.currentTimeMillis) - started,
        shardsAnswered: answers.size,
        patternsIn: inputs.reduce((n, i) => n + i.patterns.length, 0),
        patternsOut: out.length,
        regions: federated.size,
        convergence: convergence(previous, out),
        coWatchRows: coWatchRows.length
      }
      previous = out
      yield* Ref.set(last, report)
      yield* Metric.update(federationMetrics.rounds, 1)
      yield* Metric.update(federationMetrics.duration, report.durationMs)
      yield* Metric.update(federationMetrics.patternsIn, report.patternsIn)
      yield* Metric.update(federationMetrics.patternsOut, report.patternsOut)
      yield* Metric.update(federationMetrics.groups, report.regions)
      yield* Metric.update(federationMetrics.convergence, report.convergence)
      return report
    }).pipe(
      // One round at a time: a scheduled round and a requested one share the collecting state.
      rounds.withPermit,
      Effect.withSpan("FederationWorker.runRound")
    )

    // Scheduled rounds, and a prompt round when a shard asks for one.
    yield* runRound.pipe(Effect.schedule(Schedule.spaced(config.every)), Effect.forkScoped)
    yield* Effect.gen(function*() {
      if (yield* Ref.getAndSet(requested, false)) yield* runRound
    }).pipe(Effect.schedule(Schedule.spaced(Duration.millis(200))), Effect.forkScoped)

    return FederationWorker.of({
      runRound,
      lastRound: Ref.get(last),
      connectedShards: Effect.sync(() => sessions.size)
    })
  })
}

/** Co-watch counts one shard may send in a round (catalog items); beyond it they are left out. */
const MAX_COWATCH_COUNTS_PER_SHARD = 200_000
/** Rounds a shard's last co-watch counts stand in for it while it does not answer. */
const COWATCH_STALE_ROUNDS = 3

/** Mean best cosine of `current` patterns to `previous` ones; 0 without a previous round. */
const convergence = (previous: ReadonlyArray<GlobalPattern>, current: ReadonlyArray<GlobalPattern>): number => {
  if (previous.length === 0 || current.length === 0) return 0
  let total = 0
  for (const p of current) {
    let best = -1
    for (const q of previous) best = Math.max(best, dot(p.embedding, q.embedding))
    total += best
  }
  return total / current.length
}
