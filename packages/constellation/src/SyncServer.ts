/**
 * The shard's side of a sync session: every frame is decoded and validated through the
 * protocol schemas; the first must be a Hello whose device token checks out, then deltas are
 * acknowledged once durable, and the region's global patterns are pushed whenever they change
 * (not only when the TV asks). Bad input gets an ErrorFrame naming the problem and ends the
 * session; nothing already stored is touched by it.
 */
import {
  type CoWatchRow,
  type CoWatchUpdate,
  type ErrorFrame,
  type GlobalPatterns,
  makeWireCodec,
  MAX_CONTENT_ITEMS,
  MAX_COWATCH_COUNT_ROWS,
  MAX_COWATCH_ROWS,
  MAX_HELLO_BYTES,
  MAX_TRENDS,
  PROTOCOL_VERSION,
  type SessionId,
  type SyncFrame,
  type WireCodec
} from "@omega/protocol"
import { type Connection, type ListenOptions, SyncTransport } from "@omega/sync"
import { Clock, Context, Duration, Effect, Layer, Metric, PubSub, Sink, Stream } from "effect"
import { Federation } from "./Federation.ts"
import { type CoWatchRows, ingestCodec, Ingestion } from "./Ingestion.ts"
import { chunks, coWatchRowBytes, coWatchSlices, FRAME_BODY_BUDGET } from "./internal/chunks.ts"
import { type DeviceState, FEDERATION_PEER_PREFIX, ShardManager } from "./ShardManager.ts"

export interface SyncServerConfig {
  readonly listen: ListenOptions
  /** Time a new connection has to say Hello. */
  readonly helloTimeout: Duration.Input
  readonly codec?: WireCodec
}

export class SyncServer extends Context.Service<SyncServer, {
  readonly port: number
  readonly host: string
}>()("omega/constellation/SyncServer") {
  /** Listens for TV sessions for as long as the layer lives. */
  static readonly layer = (config: SyncServerConfig) => Layer.effect(SyncServer, make(config))
}

/** Metrics exported on /metrics. */
export const syncMetrics = {
  requests: Metric.counter("omega_sync_requests_total", { description: "Deltas received", incremental: true }),
  rejected: Metric.counter("omega_sync_rejected_total", {
    description: "Frames or sessions refused",
    incremental: true
  }),
  latency: Metric.histogram("omega_sync_latency_seconds", {
    description: "Delta received to acknowledgement sent",
    boundaries: Metric.boundariesFromIterable([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5])
  }),
  bytesIn: Metric.counter("omega_sync_bytes_in_total", { description: "Frame bytes received", incremental: true }),
  bytesOut: Metric.counter("omega_sync_bytes_out_total", { description: "Frame bytes sent", incremental: true }),
  activeDevices: Metric.gauge("omega_active_devices", { description: "Devices with an open session" })
}

function make(config: SyncServerConfig) {
  return Effect.gen(function*() {
    const transport = yield* SyncTransport
    const manager = yield* ShardManager
    const ingestion = yield* Ingestion
    const federation = yield* Federation
    const codec = config.codec ?? makeWireCodec()
    let sessionCounter = 0
    // Exported from the start, so /metrics shows every series before the first sync.
    for (const counter of [syncMetrics.requests, syncMetrics.rejected, syncMetrics.bytesIn, syncMetrics.bytesOut]) {
      yield* Metric.update(counter, 0)
    }
    yield* Metric.update(syncMetrics.activeDevices, 0)
    // A region's snapshot goes to every session of the region: encode it once per version.
    const encodedGlobal = new Map<string, { readonly version: number; readonly bytes: Uint8Array }>()
    const sendGlobal = (connection: Connection, region: string, global: GlobalPatterns) =>
      Effect.gen(function*() {
        let cached = encodedGlobal.get(region)
        if (cached === undefined || cached.version !== global.version) {
          cached = {
            version: global.version,
            bytes: yield* codec.encodeEffect({ _tag: "GlobalUpdate", global }).pipe(Effect.orDie)
          }
          encodedGlobal.set(region, cached)
        }
        yield* sendBytes(connection, cached.bytes)
      })

    /** Every frame leaves through here, counted on /metrics. */
    const sendBytes = (connection: Connection, bytes: Uint8Array) =>
      Effect.andThen(connection.send(bytes), Metric.update(syncMetrics.bytesOut, bytes.length))

    const send = (connection: Connection, frame: SyncFrame) =>
      Effect.flatMap(codec.encodeEffect(frame).pipe(Effect.orDie), (bytes) => sendBytes(connection, bytes))

    const refuse = (connection: Connection, code: ErrorFrame["code"], message: string, retryAfterMs?: number) =>
      Effect.gen(function*() {
        yield* Metric.update(syncMetrics.rejected, 1)
        const frame: ErrorFrame = retryAfterMs === undefined ?
          { _tag: "ErrorFrame", code, message } :
          { _tag: "ErrorFrame", code, message, retryAfterMs }
        yield* send(connection, frame).pipe(Effect.ignore)
      })

    /** A frame decoded through the protocol schemas; anything else is refused and ends the session. */
    const decodeOrRefuse = (connection: Connection, bytes: Uint8Array, decoder: WireCodec = codec) =>
      decoder.decode(bytes).pipe(
        Effect.catch(() =>
          refuse(connection, "bad-frame", "frame rejected: it does not match the protocol").pipe(
            Effect.andThen(Effect.fail("bad-frame" as const))
          )
        )
      )

    // Server push. One dispatcher per shard, not a subscription and fibers per session: a push
    // to a region wakes its sessions a slice at a time, spread over the push's `spreadMs`, so
    // thousands of sessions never wake in one turn of the event loop (that was a 200-300 ms stall
    // with 2,000 sessions).
    const sessionsByRegion = new Map<string, Set<PushTarget>>()
    const pushSlices = <A>(
      targets: ReadonlyArray<A>,
      spreadMs: number,
      f: (target: A) => Effect.Effect<unknown, unknown>
    ) =>
      Effect.gen(function*() {
        // Slices of PUSH_SLICE_MIN or more sessions, as many as the spread has ticks, but never
        // one larger than PUSH_SLICE_MAX, even when the push is due at once; evenly over the spread.
        const slices = Math.max(
          Math.ceil(targets.length / PUSH_SLICE_MAX),
          Math.min(Math.ceil(targets.length / PUSH_SLICE_MIN), Math.floor(spreadMs / PUSH_TICK_MS))
        )
        const size = Math.ceil(targets.length / slices)
        const gapMs = Math.max(PUSH_TICK_MS, spreadMs / slices)
        for (let at = 0; at < targets.length; at += size) {
          if (at > 0) yield* Effect.sleep(Duration.millis(gapMs))
          // A slice goes out on its own fiber: one TV whose stream is blocked holds up no other slice.
          yield* Effect.forkScoped(
            Effect.forEach(targets.slice(at, at + size), (target) =>
              Effect.ignore(Effect.timeout(f(target), PUSH_SEND_TIMEOUT)), {
              concurrency: "unbounded",
              discard: true
            })
          )
        }
      })
    const everySession = () => [...sessionsByRegion.values()].flatMap((targets) => [...targets])
    const pushSnapshot = (target: PushTarget, region: string) =>
      Effect.gen(function*() {
        const global = yield* ingestion.snapshot(region)
        if (global.version === target.held) return
        target.held = global.version
        yield* sendGlobal(target.connection, region, global)
      })
    const snapshots = yield* PubSub.subscribe(ingestion.updates)
    // Each push on a fiber of its own: a region's 10 s spread holds up no other region's push.
    yield* Stream.fromSubscription(snapshots).pipe(
      Stream.runForEach((push) =>
        Effect.forkScoped(pushSlices(
          [...(sessionsByRegion.get(push.region) ?? [])],
          push.spreadMs,
          (target) => pushSnapshot(target, push.region)
        ))
      ),
      Effect.forkScoped
    )
    const content = yield* PubSub.subscribe(federation.content)
    yield* Stream.fromSubscription(content).pipe(
      Stream.runForEach((items) =>
        Effect.forkScoped(pushSlices(
          everySession(),
          0,
          (target) =>
            Effect.forEach(
              chunks(items, MAX_CONTENT_ITEMS),
              (chunk) => send(target.connection, { _tag: "ContentUpdate", items: chunk })
            )
        ))
      ),
      Effect.forkScoped
    )

    // Co-watch rows. Each session is sent what changed after the version it holds, like
    // snapshots: a push it missed (blocked for PUSH_SEND_TIMEOUT, or published while it was
    // connecting) is part of the next one. Most sessions hold the previous version, so the frames
    // for one (held, current) pair of versions are encoded once.
    const encodedCoWatch = new Map<string, ReadonlyArray<Uint8Array>>()
    const coWatchFrames = (held: number, update: CoWatchRows) =>
      Effect.gen(function*() {
        const key = `${held}:${update.version}`
        const cached = encodedCoWatch.get(key)
        if (cached !== undefined) return cached
        const frames = yield* Effect.forEach(
          coWatchUpdateFrames(held, update),
          (frame) => codec.encodeEffect(frame).pipe(Effect.orDie)
        )
        for (const old of encodedCoWatch.keys()) if (!old.endsWith(`:${update.version}`)) encodedCoWatch.delete(old)
        encodedCoWatch.set(key, frames)
        return frames
      })
    const pushCoWatch = (target: PushTarget) =>
      Effect.gen(function*() {
        const held = target.coWatch
        const update = yield* ingestion.coWatchSince(held)
        if (update.rows.length === 0) return
        const frames = yield* coWatchFrames(held, update)
        yield* Effect.forEach(frames, (bytes) => sendBytes(target.connection, bytes), { discard: true })
        target.coWatch = Math.max(target.coWatch, update.version)
      })
    const coWatch = yield* PubSub.subscribe(ingestion.coWatchUpdates)
    yield* Stream.fromSubscription(coWatch).pipe(
      Stream.runForEach(() =>
        Effect.forkScoped(pushSlices(
          everySession(),
          COWATCH_PUSH_SPREAD_MS,
          pushCoWatch
        ))
      ),
      Effect.forkScoped
    )

    /** After Hello: deltas in, acks and pushes out, until the TV goes away. */
    const serve = (
      connection: Connection,
      device: DeviceState,
      frames: Stream.Stream<Uint8Array, unknown>,
      /** The global and co-watch versions this TV already holds. */
      heldVersion: number,
      coWatchVersion: number
    ) =>
      Effect.gen(function*() {
        const target: PushTarget = { connection, held: heldVersion, coWatch: coWatchVersion }
        const regionTargets = sessionsByRegion.get(device.region) ?? new Set()
        sessionsByRegion.set(device.region, regionTargets)
        regionTargets.add(target)
        yield* Effect.addFinalizer(() => Effect.sync(() => regionTargets.delete(target)))
        // Registered first: rows published from now on reach this session through the dispatcher too.
        yield* Effect.forkScoped(Effect.ignore(Effect.timeout(pushCoWatch(target), PUSH_SEND_TIMEOUT)))
        yield* Stream.runForEach(frames, (bytes) =>
          Effect.gen(function*() {
            yield* Metric.update(syncMetrics.bytesIn, bytes.length)
            // Embeddings in the rotated basis, as Ingestion takes them.
            const frame = yield* decodeOrRefuse(connection, bytes, ingestCodec)
            switch (frame._tag) {
              case "DeltaUpload": {
                yield* Metric.update(syncMetrics.requests, 1)
                const started = yield* Clock.currentTimeMillis
                yield* ingestion.submit(device, frame.delta, bytes).pipe(
                  Effect.flatMap((ack) =>
                    Effect.gen(function*() {
                      yield* send(connection, ack)
                      yield* Metric.update(syncMetrics.latency, ((yield* Clock.currentTimeMillis) - started) / 1000)
                    })
                  ),
                  Effect.catchTag("IngestError", (failure) =>
                    failure.reason === "rate-limited" ?
                      refuse(connection, "rate-limited", failure.message, failure.retryAfterMs) :
                      refuse(connection, "internal", "the shard could not take this delta; retry later"))
                )
                return
              }
              case "Ping":
                return yield* send(connection, { _tag: "Pong", nonce: frame.nonce })
              case "Pong":
                return
              default:
                return yield* refuse(connection, "bad-frame", `${frame._tag} is not a frame a TV sends`)
            }
          }))
      })

    /** A federation worker's session: our aggregated patterns out on request, federated ones in. */
    const serveFederation = (connection: Connection, frames: Stream.Stream<Uint8Array, unknown>) =>
      Effect.gen(function*() {
        // A federated co-watch table arriving in slices.
        let coWatchTable:
          | { readonly round: number; readonly rows: Array<CoWatchRow>; neighbours: number; readonly refused: boolean }
          | undefined
        const requests = yield* PubSub.subscribe(federation.roundRequests)
        yield* Stream.fromSubscription(requests).pipe(
          Stream.runForEach((reason) => send(connection, { _tag: "RoundRequest", reason })),
          Effect.ignore,
          Effect.forkScoped
        )
        yield* Stream.runForEach(frames, (bytes) =>
          Effect.gen(function*() {
            const frame = yield* decodeOrRefuse(connection, bytes)
            switch (frame._tag) {
              case "FederationPull": {
                // Co-watch counts first: the worker takes the last ShardPatterns as the end of the answer.
                const counts = yield* ingestion.localCoWatch
                for (const { last, rows } of coWatchSlices(counts.rows, MAX_COWATCH_COUNT_ROWS)) {
                  yield* send(connection, {
                    _tag: "ShardCoWatch",
                    round: frame.round,
                    changedDevices: counts.changedDevices,
                    rows,
                    last
                  })
                }
                const regions = yield* ingestion.regions
                const all = regions.length > 0 ? regions : [manager.config.defaultRegion]
                for (const [i, region] of all.entries()) {
                  yield* send(connection, {
                    _tag: "ShardPatterns",
                    round: frame.round,
                    shardId: manager.config.shardId,
                    region,
                    patterns: yield* ingestion.localPatterns(region, frame.maxPatterns),
                    trends: yield* ingestion.localTrends(region, MAX_TRENDS),
                    last: i === all.length - 1
                  })
                }
                return
              }
              case "RegionUpdate":
                return yield* ingestion.applyFederated(frame.region, frame.global).pipe(
                  Effect.catch(() => refuse(connection, "internal", "could not store the federated patterns"))
                )
              case "FederatedCoWatch": {
                // A table comes in slices of one round up to `last`; a slice of another round starts over.
                if (coWatchTable?.round !== frame.round) {
                  coWatchTable = { round: frame.round, rows: [], neighbours: 0, refused: false }
                }
                // A table over the bounds is refused whole: none of its later slices is taken.
                if (coWatchTable.refused) return
                coWatchTable.rows.push(...frame.rows)
                for (const row of frame.rows) coWatchTable.neighbours += row.neighbours.length
                if (
                  coWatchTable.rows.length > MAX_FEDERATED_COWATCH_ROWS ||
                  coWatchTable.neighbours > MAX_FEDERATED_COWATCH_NEIGHBOURS
                ) {
                  coWatchTable = { round: frame.round, rows: [], neighbours: 0, refused: true }
                  return yield* refuse(
                    connection,
                    "bad-frame",
                    `a federated co-watch table holds at most ${MAX_FEDERATED_COWATCH_ROWS} rows and ${MAX_FEDERATED_COWATCH_NEIGHBOURS} neighbours`
                  )
                }
                if (!frame.last) return
                const table = coWatchTable.rows
                coWatchTable = undefined
                yield* ingestion.applyFederatedCoWatch(table)
                return
              }
              case "Ping":
                return yield* send(connection, { _tag: "Pong", nonce: frame.nonce })
              case "Pong":
                return
              default:
                return yield* refuse(connection, "bad-frame", `${frame._tag} is not a frame a federation worker sends`)
            }
          }))
      })

    const onConnection = (connection: Connection) =>
      Effect.scoped(Effect.gen(function*() {
        // Everything the TV sends, through one reader; the first frame is taken apart from the rest.
        const [first, rest] = yield* Stream.peel(connection.incoming, Sink.head<Uint8Array>()).pipe(
          Effect.timeoutOrElse({ duration: config.helloTimeout, orElse: () => Effect.fail("timeout" as const) })
        )
        // Decoded with a Hello's size cap: until the peer is authenticated, no frame of it may make the
        // shard inflate and decode hundreds of kilobytes.
        const hello = first._tag === "Some" ? yield* Effect.exit(codec.decode(first.value, MAX_HELLO_BYTES)) : undefined
        if (hello === undefined || hello._tag === "Failure" || hello.value._tag !== "Hello") {
          return yield* refuse(connection, "bad-frame", "the first frame of a session must be a valid Hello")
        }
        const { deviceId, protocolVersion, region, resume, token } = hello.value
        if (protocolVersion !== PROTOCOL_VERSION) {
          return yield* refuse(connection, "unsupported-version", `this shard speaks protocol ${PROTOCOL_VERSION}`)
        }
        if (deviceId.startsWith(FEDERATION_PEER_PREFIX)) {
          const allowed = yield* manager.authenticatePeer(deviceId, token).pipe(
            Effect.as(true),
            Effect.catch(() => Effect.as(refuse(connection, "unauthorized", "unknown federation worker"), false))
          )
          if (!allowed) return
          yield* send(connection, {
            _tag: "Welcome",
            sessionId: `${manager.config.shardId}-${++sessionCounter}` as SessionId,
            serverTime: yield* Clock.currentTimeMillis,
            globalVersion: 0
          })
          return yield* serveFederation(connection, rest)
        }
        const auth = yield* manager.authenticate(deviceId, token, region).pipe(
          Effect.map((device) => ({ device })),
          Effect.catch((failure) =>
            Effect.as(
              failure._tag === "StorageError" ?
                refuse(connection, "internal", "the shard could not look this device up; retry later") :
                failure.reason === "shard-full" ?
                refuse(connection, "overloaded", failure.message) :
                refuse(connection, "unauthorized", "unknown device or wrong token"),
              undefined
            )
          )
        )
        if (auth === undefined) return
        const device = auth.device
        manager.sessionOpened(device.id)
        yield* Metric.update(syncMetrics.activeDevices, (yield* manager.stats).activeDevices)
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => manager.sessionClosed(device.id)).pipe(
            Effect.andThen(manager.stats),
            Effect.flatMap((stats) => Metric.update(syncMetrics.activeDevices, stats.activeDevices))
          )
        )
        const global = yield* ingestion.snapshot(device.region)
        yield* send(connection, {
          _tag: "Welcome",
          sessionId: `${manager.config.shardId}-${++sessionCounter}` as SessionId,
          serverTime: yield* Clock.currentTimeMillis,
          globalVersion: global.version
        })
        // Resumption: a TV that already has this version is not sent it again.
        let held = resume?.globalVersion ?? -1
        if (global.version > held && global.similar.length + global.trending.length > 0) {
          yield* sendGlobal(connection, device.region, global)
          held = global.version
        }
        // Co-watch rows changed after the version the TV holds (every row for a TV that holds none) go out in serve.
        yield* serve(connection, device, rest, held, resume?.coWatchVersion ?? 0)
      })).pipe(Effect.catchCause(() => Effect.void))

    const listener = yield* transport.listen(config.listen, onConnection)
    return SyncServer.of({ port: listener.port, host: listener.host })
  })
}

/**
 * The CoWatchUpdate frames that bring a TV holding co-watch version `held` to `update.version`.
 * A TV takes a frame's version as "everything up to here", so only the last chunk carries the new
 * version and the others the one the TV holds: a session cut between chunks resumes from there.
 */
export const coWatchUpdateFrames = (
  held: number,
  update: CoWatchRows,
  maxRows: number = MAX_COWATCH_ROWS
): Array<CoWatchUpdate> => {
  const parts = chunks(update.rows, maxRows, FRAME_BODY_BUDGET, coWatchRowBytes)
  return parts.map((rows, i) => ({
    _tag: "CoWatchUpdate",
    version: i === parts.length - 1 ? update.version : held,
    rows
  }))
}

/** A session as the push dispatcher sees it: where to send, and the global and co-watch versions it holds. */
interface PushTarget {
  readonly connection: Connection
  held: number
  coWatch: number
}

/** Pushes go out in slices at least this far apart, of PUSH_SLICE_MIN to PUSH_SLICE_MAX sessions each. */
const PUSH_TICK_MS = 20
const PUSH_SLICE_MIN = 25
const PUSH_SLICE_MAX = 200
/** A TV that does not take a push within this long (its stream is blocked) is skipped for it. */
const PUSH_SEND_TIMEOUT = Duration.seconds(10)
/**
 * Bounds of one federated co-watch table a shard takes: rows (a catalog item each) and neighbours
 * over all rows (50,000 items of 20 neighbours; ~100 MB at the longest ids).
 */
const MAX_FEDERATED_COWATCH_ROWS = 200_000
const MAX_FEDERATED_COWATCH_NEIGHBOURS = 1_000_000
/** Changed co-watch rows reach every session within this long (they change about once a minute). */
const COWATCH_PUSH_SPREAD_MS = 10_000
