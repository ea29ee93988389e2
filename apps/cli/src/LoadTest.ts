/**
 * `omega loadtest`: starts its own shard (a child process: PGlite in a temporary folder, or
 * PostgreSQL when OMEGA_DATABASE_URL / POSTGRES_URL is set), opens N long-lived sessions on
 * loopback and syncs at a chosen rate for a bounded time, then checks the database: every
 * acknowledged pattern must be stored. Optionally kills the shard mid-run (SIGKILL) and
 * restarts it, with the sessions reconnecting. Prints a table and one JSON line. On PostgreSQL
 * the run writes to a schema of its own, dropped when the run ends.
 */
import { deviceToken, ShardApiStats, ShardStorage } from "@omega/constellation"
import {
  type DeviceId,
  EMBEDDING_DIMENSIONS,
  encodeFrame,
  makeWireCodec,
  normalizeEmbedding,
  type PatternContext,
  type PatternId,
  PROTOCOL_VERSION,
  seededRandom,
  seededUuid,
  type SharedPattern,
  type SyncFrame
} from "@omega/protocol"
import {
  type Connection,
  countUdpDrops,
  defaultReceiveBufferBytes,
  makeDevCertificate,
  makeQuicIdentity,
  SyncTransport
} from "@omega/sync"
import { Cause, Deferred, Duration, Effect, Fiber, Option, Semaphore, Stream } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { freePort } from "./FreePort.ts"
import { addCount, percentile, printJson, printTable, progress, round, totalCount } from "./Report.ts"
import { callShardApi } from "./ShardApi.ts"
import { shuffleFront } from "./Shuffle.ts"

export interface LoadTestOptions {
  readonly sessions: number
  readonly seconds: number
  /** Target syncs per second over all sessions; 0 means as fast as acknowledgements allow. */
  readonly rate: number
  readonly patternsPerSync: number
  /**
   * Distinct tastes in the simulated fleet; each session's patterns are noisy copies of 8 of them,
   * so shards aggregate as they would in a region. 0 gives every session 8 tastes of its own (no
   * two sessions alike: nothing aggregates, the worst case for the aggregator).
   */
  readonly tastes: number
  readonly transport: "webtransport" | "quic"
  /** Kill the shard (SIGKILL) this many seconds in and restart it; 0 disables. */
  readonly killAt: number
  /** PostgreSQL for the shard (a schema of its own per run); undefined: PGlite in a temporary folder. */
  readonly databaseUrl: string | undefined
  readonly json: boolean
}

const SECRET = "loadtest-fleet-secret"
const SESSIONS_PER_ENDPOINT = 250
/** Syncs per second assumed when preparing deltas for a closed loop (no --rate). */
const CLOSED_LOOP_GUESS = 4_000
const MAX_PREPARED_PER_SESSION = 2_000
/** How long a session waits for an ack: a shard killed without closing is noticed this soon. */
const ACK_TIMEOUT_MS = 5_000
/** Embeddings per session, per pattern of a delta: deltas draw different mixes of them. */
const POOL_PER_PATTERN = 4
const CONTEXTS: ReadonlyArray<PatternContext> = [
  { timeOfDay: "evening", dayType: "weekday" },
  { timeOfDay: "night", dayType: "weekend" },
  { timeOfDay: "afternoon", dayType: "weekend" },
  { timeOfDay: "morning", dayType: "weekday" }
]

interface Tally {
  syncs: number
  acked: number
  ackedPatterns: number
  /** Errors by kind: an ErrorFrame's code, an ack timeout, a session that failed. */
  errorKinds: Record<string, number>
  interrupted: number
  connectRetries: number
  bytesUp: number
  bytesDown: number
  latencies: Array<number>
}

export const runLoadTest = Effect.fn("omega.loadtest")(function*(options: LoadTestOptions) {
  const dir = mkdtempSync(join(tmpdir(), "omega-loadtest-"))
  yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
  const certificate = yield* makeDevCertificate()
  writeFileSync(join(dir, "cert.pem"), certificate.certificate)
  writeFileSync(join(dir, "key.pem"), certificate.privateKey)
  const identity = makeQuicIdentity()
  writeFileSync(join(dir, "quic.key"), identity.privateKey)
  const [syncPort, httpPort, metricsPort] = [yield* freePort(), yield* freePort(), yield* freePort()]
  const databaseUrl = options.databaseUrl
  const schema = `loadtest_${process.pid}_${Date.now()}`
  const env: Record<string, string> = {
    ...process.env as Record<string, string>,
    SHARD_ID: "loadtest",
    REGION: "eu-west",
    FLEET_SECRET: SECRET,
    TRANSPORT: options.transport,
    SYNC_PORT: String(syncPort),
    HTTP_PORT: String(httpPort),
    METRICS_PORT: String(metricsPort),
    TLS_CERT_FILE: join(dir, "cert.pem"),
    TLS_KEY_FILE: join(dir, "key.pem"),
    QUIC_IDENTITY_FILE: join(dir, "quic.key"),
    MIN_SYNC_INTERVAL_MS: "0",
    ...(databaseUrl === undefined
      ? { PGLITE_DIR: join(dir, "pglite") }
      : { POSTGRES_URL: databaseUrl, POSTGRES_SCHEMA: schema })
  }
  const storage = databaseUrl === undefined ? "PGlite (on disk)" : "PostgreSQL"
  yield* progress(
    `loadtest: shard on ${options.transport}, ${storage}; ${options.sessions} sessions for ${options.seconds} s`
  )

  let shard = yield* startShard(env, httpPort)
  // However the run ends: the shard goes, then (on PostgreSQL) the run's schema, once no shard uses it.
  yield* Effect.addFinalizer(() =>
    stopShard(shard).pipe(
      Effect.andThen(databaseUrl === undefined ? Effect.void : ShardStorage.dropPgSchemas(databaseUrl, [schema])),
      Effect.catch((error) => progress(`loadtest: could not drop schema ${schema}: ${error.message}`))
    )
  )

  const transport = yield* SyncTransport
  const tally: Tally = {
    syncs: 0,
    acked: 0,
    ackedPatterns: 0,
    errorKinds: {},
    interrupted: 0,
    connectRetries: 0,
    bytesUp: 0,
    bytesDown: 0,
    latencies: []
  }
  // Every session is opened first (not timed); the timed phase starts when all are up.
  let deadline = Number.POSITIVE_INFINITY
  const go = yield* Deferred.make<void>()
  /** Done when the timed phase is over and no sync is waiting for its ack: sessions may close. */
  const settled = yield* Deferred.make<void>()
  let inFlight = 0
  const connectSlots = yield* Semaphore.make(64)
  let connected = 0
  let killed = false
  let restarting = false
  const perSessionMs = options.rate > 0 ? (options.sessions * 1000) / options.rate : 0

  // Simulated TVs share QUIC endpoints (one UDP socket per identity), as a real fleet's TVs would
  // each have their own; the shard authenticates every session by its device token either way.
  const identities = Array.from({ length: Math.ceil(options.sessions / SESSIONS_PER_ENDPOINT) }, makeQuicIdentity)
  // A TV prepares its delta before it syncs; here every session's deltas are encoded before the
  // timed phase, so the generator's CPU (the same two cores as the shard's) goes to sending.
  const expectedRate = options.rate > 0 ? options.rate : CLOSED_LOOP_GUESS
  const preparedPerSession = Math.min(
    MAX_PREPARED_PER_SESSION,
    Math.ceil((expectedRate * (options.seconds + 1)) / options.sessions) + 2
  )
  yield* progress(`  preparing ${preparedPerSession} deltas per session`)

  const fleetRandom = seededRandom(0x7a57e)
  const fleetTastes = Array.from({ length: options.tastes }, () => randomUnit(fleetRandom))

  /** What one simulated TV sends: its deltas, encoded up front, and a way to make more. */
  const prepareSession = (n: number) => {
    const deviceId = `lt-${n}`
    const random = seededRandom(n + 1)
    // A pool of embedding objects per session (the codec quantizes each once), drawn from 8 tastes.
    // A delta never holds one embedding twice (a TV's patterns differ), but two noisy copies of one
    // taste share most of their code, so every upload deflates by about 8% and the shard inflates
    // it; real uploads deflate about half the time.
    const tastes = Array.from(
      { length: 8 },
      () => fleetTastes.length === 0 ? randomUnit(random) : fleetTastes[Math.floor(random() * fleetTastes.length)]!
    )
    const pool = Array.from(
      { length: POOL_PER_PATTERN * options.patternsPerSync },
      () => nudged(tastes[Math.floor(random() * tastes.length)]!, random)
    )
    const deltaFrame = (v: number) =>
      encodeFrame({
        _tag: "DeltaUpload",
        delta: {
          baseVersion: v - 1,
          version: v,
          added: distinct(pool, options.patternsPerSync, random).map((embedding): SharedPattern => ({
            // A TV's brain names its patterns with random UUIDs (the wire's 16-byte form).
            id: seededUuid(random) as PatternId,
            embedding,
            // TVs share abandoned patterns too: on MovieLens a heavy viewer's shared patterns are
            // about 40% quality ones (10 of 27), the ones the shard aggregates and stores.
            successRate: random() < 0.4 ? 0.7 + 0.3 * random() : 0.7 * random(),
            sampleCount: 2 + Math.floor(random() * 20),
            context: CONTEXTS[Math.floor(random() * CONTEXTS.length)]!
          })),
          updated: [],
          removed: []
        }
      })
    const prepared = Array.from({ length: preparedPerSession }, (_, i) => deltaFrame(i + 1))
    return { deviceId, random, deltaFrame, prepared }
  }
  // Every session's deltas before any session opens: encoding while others are in their
  // handshakes held up their hellos past the shard's timeout (the first 64 had to retry).
  const fleet: Array<ReturnType<typeof prepareSession>> = []
  for (let n = 0; n < options.sessions; n++) {
    fleet.push(prepareSession(n))
    if ((n + 1) % 500 === 0) yield* progress(`  ${n + 1}/${options.sessions} sessions prepared`)
  }

  /** One TV session: Hello, then deltas at its share of the rate; reconnects after a shard restart. */
  const session = (n: number) =>
    Effect.gen(function*() {
      const { deltaFrame, deviceId, prepared, random } = fleet[n]!
      let version = 0
      let first = true
      while (Date.now() < deadline) {
        const attempt = Effect.scoped(Effect.gen(function*() {
          const open = Effect.gen(function*() {
            const connection: Connection = yield* transport.connect({
              host: "127.0.0.1",
              port: syncPort,
              certificateHash: certificate.sha256,
              serverPeerId: identity.peerId,
              identity: identities[n % identities.length]!,
              timeoutMs: 10_000
            })
            const pull = yield* framePuller(connection)
            yield* connection.send(encodeFrame({
              _tag: "Hello",
              deviceId: deviceId as DeviceId,
              token: deviceToken(SECRET, deviceId),
              region: "eu-west",
              protocolVersion: PROTOCOL_VERSION,
              resume: { lastAckedVersion: version, globalVersion: 0 }
            }))
            const welcome = yield* readUntil(pull, (tag) => tag === "Welcome" || tag === "ErrorFrame").pipe(
              Effect.timeout(Duration.seconds(10))
            )
            if (welcome._tag !== "Welcome") return yield* Effect.fail(`refused: ${welcome._tag}`)
            return { connection, pull }
          })
          const { connection, pull } = yield* connectSlots.withPermit(open)
          // The first session of each TV waits for the start of the timed phase; a reconnect does not.
          if (first) {
            first = false
            connected += 1
            yield* Deferred.await(go)
            // Spread the first syncs over one interval so sessions do not move in lockstep.
            if (perSessionMs > 0) yield* sleepUntilDeadline(random() * perSessionMs)
          }
          while (Date.now() < deadline) {
            const started = performance.now()
            version += 1
            const bytes = prepared[version - 1] ?? deltaFrame(version)
            inFlight += 1
            const ack = yield* Effect.gen(function*() {
              yield* connection.send(bytes)
              tally.syncs += 1
              tally.bytesUp += bytes.length
              // A shard that went away without closing (killed) is noticed here rather than at the QUIC idle timeout.
              return yield* readUntil(pull, (tag) => tag === "DeltaAck" || tag === "ErrorFrame", tally).pipe(
                Effect.timeout(Duration.millis(ACK_TIMEOUT_MS))
              )
            }).pipe(Effect.ensuring(Effect.sync(() => inFlight -= 1)))
            if (ack._tag !== "DeltaAck") {
              addCount(tally.errorKinds, ack._tag === "ErrorFrame" ? `refused (${ack.code})` : ack._tag)
              continue
            }
            tally.acked += 1
            tally.ackedPatterns += ack.accepted
            tally.latencies.push(performance.now() - started)
            if (perSessionMs > 0) yield* sleepUntilDeadline(perSessionMs - (performance.now() - started))
          }
          // The session stays open until every session's last sync is answered: 2,000 sessions
          // closing at once stall this process for 150-350 ms, which would land on syncs in flight.
          yield* Deferred.await(settled)
        }))
        const result = yield* Effect.exit(attempt)
        if (result._tag === "Failure" && Date.now() < deadline) {
          if (killed || restarting) tally.interrupted += 1
          // Before the timed phase: a session that could not open yet and tries again (not an error of the run).
          else if (deadline === Number.POSITIVE_INFINITY) tally.connectRetries += 1
          else addCount(tally.errorKinds, failureKind(Cause.squash(result.cause)))
          yield* Effect.sleep(Duration.millis(200 + random() * 300))
        }
      }
    })

  /** Sleeps `ms`, but never past the end of the timed phase. */
  const sleepUntilDeadline = (ms: number) =>
    Effect.sleep(Duration.millis(Math.max(0, Math.min(ms, deadline - Date.now()))))

  // Forked one after another from this fiber, so they live until joined below.
  const opening = Date.now()
  const fibers = yield* Effect.forEach(
    Array.from({ length: options.sessions }, (_, n) => n),
    (n) => Effect.forkChild(session(n))
  )
  while (connected < options.sessions && Date.now() - opening < 120_000) {
    yield* Effect.sleep(Duration.millis(200))
  }
  const connectSeconds = (Date.now() - opening) / 1000
  yield* progress(`  ${connected}/${options.sessions} sessions open after ${connectSeconds.toFixed(1)} s; syncing`)
  const started = Date.now()
  deadline = started + options.seconds * 1000
  // CPU time of both processes over the timed phase: what a sync costs the shard (all its threads:
  // JavaScript, GC, QUIC, PGlite) and what it costs this load generator.
  const shardCpuAtStart = cpuMs(shard.pid)
  const clientCpuAtStart = process.cpuUsage()
  const udpDropsInRun = countUdpDrops()
  // How late this generator's own event loop ran: a sync's measured latency includes it, so a
  // p99 near this figure says the generator, not the shard, set it.
  const loopDelay = monitorEventLoopDelay({ resolution: 10 })
  loopDelay.enable()
  yield* Deferred.succeed(go, undefined)
  // Progress every 5 s, and the kill if asked for.
  const reporter = yield* Effect.forkChild(Effect.gen(function*() {
    let last = 0
    while (Date.now() < deadline) {
      yield* Effect.sleep(Duration.seconds(1))
      const elapsed = (Date.now() - started) / 1000
      if (options.killAt > 0 && !killed && elapsed >= options.killAt) {
        killed = true
        restarting = true
        yield* progress(`  ${elapsed.toFixed(0)} s: killing the shard (SIGKILL) and restarting it`)
        yield* stopShard(shard)
        shard = yield* startShard(env, httpPort)
        restarting = false
      }
      if (Math.floor(elapsed) % 5 === 0) {
        yield* progress(
          `  ${elapsed.toFixed(0)} s: ${tally.acked} acked (${((tally.acked - last) / 5).toFixed(0)}/s), ${
            totalCount(tally.errorKinds)
          } errors`
        )
        last = tally.acked
      }
    }
  }))
  yield* sleepUntilDeadline(Number.POSITIVE_INFINITY)
  // The last syncs' acks (each times out after ACK_TIMEOUT_MS), then the sessions close.
  while (Date.now() < deadline + ACK_TIMEOUT_MS + 1_000) {
    // Sessions' fibers count down inFlight as their acks come.
    if (inFlight === 0) break
    yield* Effect.sleep(Duration.millis(5))
  }
  loopDelay.disable()
  const elapsed = (Date.now() - started) / 1000
  yield* Deferred.succeed(settled, undefined)
  yield* Effect.forEach(fibers, Fiber.join, { discard: true })
  yield* Fiber.interrupt(reporter)
  const udpDrops = udpDropsInRun()

  const serverRss = rssMb(shard.pid)
  const clientCpu = process.cpuUsage(clientCpuAtStart)
  // A restarted shard's CPU counts from its start; the killed one's is lost, so none is reported.
  const shardCpuAtEnd = cpuMs(shard.pid)
  const shardCpuMs = killed || shardCpuAtStart === undefined || shardCpuAtEnd === undefined ?
    undefined :
    shardCpuAtEnd - shardCpuAtStart
  const api = `http://127.0.0.1:${httpPort}`
  // Memory and commits as the shard reports them; "n/a" in the report if it does not answer.
  const serverStats = Option.getOrUndefined(
    yield* Effect.option(callShardApi(api, "GET", "/api/v1/stats", ShardApiStats))
  )
  // The shard's own view: delta received to ack sent, from its latency histogram (bucket bounds).
  const serverLatency = yield* Effect.promise(() =>
    fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text(), () => "")
  ).pipe(Effect.map(histogramQuantiles("omega_sync_latency_seconds", [50, 99])))
  // The database is the judge: restart the shard so only what was committed is counted.
  yield* progress("  verifying: restarting the shard and reading its stored counts")
  // A profiled shard is stopped gently so that it writes its profile.
  yield* stopShard(shard, shardNodeArgs().some((arg) => arg.startsWith("--cpu-prof")) ? "SIGINT" : "SIGKILL")
  shard = yield* startShard(env, httpPort)
  const stored = (yield* callShardApi(api, "GET", "/api/v1/stats", ShardApiStats)).loggedPatterns
  const lost = Math.max(0, tally.ackedPatterns - stored)

  const result = {
    sessions: options.sessions,
    sessions_open: connected,
    connect_s: round(connectSeconds, 1),
    connect_retries: tally.connectRetries,
    seconds: round(elapsed, 1),
    transport: options.transport,
    storage,
    // On PostgreSQL, the schema the run wrote to; dropped when the run ends.
    database_schema: databaseUrl === undefined ? "n/a" : schema,
    tastes: options.tastes,
    syncs_per_s: round(tally.acked / elapsed, 1),
    p50_ms: round(percentile(tally.latencies, 50)),
    p99_ms: round(percentile(tally.latencies, 99)),
    server_p50_ms_at_most: serverLatency[0] ?? "n/a",
    server_p99_ms_at_most: serverLatency[1] ?? "n/a",
    // Beyond the 10 ms sampling interval (the histogram is in ns).
    client_loop_delay_p99_ms: round(Math.max(0, loopDelay.percentile(99) / 1e6 - 10)),
    client_loop_delay_max_ms: round(Math.max(0, loopDelay.max / 1e6 - 10)),
    errors: totalCount(tally.errorKinds),
    // Datagrams the kernel dropped at full socket buffers during the timed phase (Linux).
    udp_drops: udpDrops ?? "n/a",
    rmem_default: defaultReceiveBufferBytes() ?? "n/a",
    error_kinds: Object.entries(tally.errorKinds).map(([kind, n]) => `${kind}: ${n}`).join("; ") || "none",
    interrupted: tally.interrupted,
    lost,
    acked_patterns: tally.ackedPatterns,
    stored_patterns: stored,
    server_rss_mb: serverRss,
    server_cpu_ms_per_sync: shardCpuMs === undefined ? "n/a" : round(shardCpuMs / Math.max(1, tally.acked), 3),
    client_cpu_ms_per_sync: round((clientCpu.user + clientCpu.system) / 1000 / Math.max(1, tally.acked), 3),
    server_heap_mb: serverStats?.memory.heapUsedMb ?? "n/a",
    server_external_mb: serverStats?.memory.externalMb ?? "n/a",
    // Deltas per group commit (one database statement each): larger under load.
    deltas_per_commit: serverStats === undefined ?
      "n/a" :
      round(serverStats.deltasAccepted / Math.max(1, serverStats.batches), 1),
    bytes_up_per_sync: round(tally.bytesUp / Math.max(1, tally.syncs), 1),
    bytes_down_per_sync: round(tally.bytesDown / Math.max(1, tally.syncs), 1),
    killed_and_restarted: killed ? "yes" : "no"
  }
  yield* printTable("Load test: long-lived sessions syncing against one shard on loopback", [result])
  if (options.json) yield* printJson(result)
  return result
})

/** A session's failure in a few words: an ack or a handshake that timed out, a transport error, a refusal. */
const failureKind = (failure: unknown): string => {
  if (typeof failure === "string") return failure
  if (typeof failure === "object" && failure !== null && "_tag" in failure) {
    const tag = String(failure._tag)
    if (tag === "TimeoutError") return "timeout (no ack or Welcome in time)"
    if (tag === "TransportError" && "reason" in failure) return `transport (${String(failure.reason)})`
    return tag
  }
  return failure instanceof Error ? failure.message : String(failure)
}

/** Reads the connection's frames one at a time (the stream hands them over in chunks). */
const framePuller = (connection: Connection) =>
  Effect.gen(function*() {
    const pull = yield* Stream.toPull(connection.incoming)
    const buffered: Array<Uint8Array> = []
    return Effect.gen(function*() {
      while (buffered.length === 0) buffered.push(...(yield* pull))
      return buffered.shift()!
    })
  })

/**
 * How the simulated TVs read what the shard sends: every frame is validated through the protocol
 * schemas, with embeddings left in the quantizer's rotated basis. Only a TV's recommender needs
 * them rotated back, and rotating back the 100 patterns of every push the 2,000 sessions get cost
 * the generator (on the same two cores as the shard) about a third of its CPU.
 */
const readCodec = makeWireCodec({ basis: "rotated" })

/** Frames until one whose tag `wanted` accepts (server pushes in between are skipped). */
const readUntil = <E>(
  pull: Effect.Effect<Uint8Array, E>,
  wanted: (tag: SyncFrame["_tag"]) => boolean,
  tally?: Tally
) =>
  Effect.gen(function*() {
    while (true) {
      const bytes = yield* pull
      if (tally !== undefined) tally.bytesDown += bytes.length
      const frame = yield* readCodec.decode(bytes)
      if (wanted(frame._tag)) return frame
    }
  })

/** `count` different items of `from`, in random order. */
const distinct = <A>(from: ReadonlyArray<A>, count: number, random: () => number): Array<A> => {
  const items = [...from]
  shuffleFront(items, count, random)
  return items.slice(0, count)
}

/** `base` moved by a small random step: the same taste as another TV holds it (cosine ~0.99). */
const nudged = (base: Float32Array, random: () => number) => {
  const step = randomUnit(random)
  return normalizeEmbedding(base.map((x, i) => x + TASTE_NOISE * step[i]!))
}

const TASTE_NOISE = 0.15

/**
 * Upper bounds (ms) of the histogram buckets holding the given percentiles, read from Prometheus
 * text; undefined when the histogram is missing or empty (or the shard restarted and saw nothing).
 */
const histogramQuantiles = (name: string, percentiles: ReadonlyArray<number>) => (text: string) => {
  const buckets: Array<{ le: number; count: number }> = []
  const bucketLine = new RegExp(`^${name}_bucket\\{.*le="([^"]+)".*\\} (\\d+)`)
  for (const line of text.split("\n")) {
    const match = bucketLine.exec(line)
    if (match !== null) buckets.push({ le: Number(match[1]), count: Number(match[2]) })
  }
  const total = buckets.at(-1)?.count ?? 0
  return percentiles.map((p) => {
    if (total === 0) return undefined
    const bucket = buckets.find((b) => b.count >= (p / 100) * total)
    return bucket === undefined || !Number.isFinite(bucket.le) ? undefined : bucket.le * 1000
  })
}

const randomUnit = (random: () => number) =>
  normalizeEmbedding(Float32Array.from({ length: EMBEDDING_DIMENSIONS }, () => random() - 0.5))

/** CPU time (user + system, every thread) a process used since it started, in ms; undefined off Linux. */
const cpuMs = (pid: number | undefined): number | undefined => {
  if (pid === undefined) return undefined
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    // utime and stime, fields 14 and 15 of stat, in clock ticks of 10 ms (USER_HZ, 100 on Linux).
    return (Number(fields[11]) + Number(fields[12])) * 10
  } catch {
    return undefined
  }
}

const rssMb = (pid: number | undefined): number => {
  if (pid === undefined) return 0
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8")
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0)
    return round(kb / 1024, 1)
  } catch {
    return 0
  }
}

/** OMEGA_SHARD_NODE_ARGS: Node flags for the shard only (for example --cpu-prof to profile it). */
const shardNodeArgs = () => (process.env["OMEGA_SHARD_NODE_ARGS"] ?? "").split(" ").filter((arg) => arg !== "")

/** Stops the shard with `signal` and waits until it has exited; one that outlives SIGINT by 15 s is killed. */
const stopShard = (child: ChildProcess, signal: "SIGKILL" | "SIGINT" = "SIGKILL") =>
  Effect.promise(() =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve()
      child.once("exit", () => resolve())
      child.kill(signal)
      if (signal !== "SIGKILL") setTimeout(() => child.kill("SIGKILL"), 15_000).unref()
    })
  )

/** Starts the shard server as a child process and waits until /health answers. */
const startShard = (env: Record<string, string>, httpPort: number) =>
  Effect.gen(function*() {
    const main = join(import.meta.dirname, "../../constellation-server/src/main.ts")
    // The shard's log (and, say, --trace-gc output) goes to OMEGA_SHARD_LOG when it names a file.
    const log = process.env["OMEGA_SHARD_LOG"]
    const stdout = log === undefined || log === "" ? "ignore" : openSync(log, "a")
    const child = spawn(process.execPath, [...shardNodeArgs(), main], { env, stdio: ["ignore", stdout, "inherit"] })
    if (typeof stdout === "number") closeSync(stdout)
    for (let i = 0; i < 300; i++) {
      const ok = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${httpPort}/health`).then((r) => r.ok, () => false)
      )
      if (ok) return child
      if (child.exitCode !== null) return yield* Effect.die(new Error(`the shard exited with ${child.exitCode}`))
      yield* Effect.sleep(Duration.millis(100))
    }
    child.kill("SIGKILL")
    return yield* Effect.die(new Error("the shard did not become healthy within 30 s"))
  })
