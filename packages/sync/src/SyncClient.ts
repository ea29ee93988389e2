/**
 * The TV side of sync: one long-lived session to the shard, kept open with reconnects
 * (exponential backoff with jitter, starting over after a session that lasted). Deltas go up
 * on a jittered 5-15 minute schedule and as soon as enough has changed; acknowledgements,
 * global patterns, trends and new content come down on the same session whenever the shard
 * pushes them. Unsent deltas wait in the brain's
 * outbox (it survives restarts) and are replayed on reconnect; the shard recognises a replay
 * by its version. Nothing here can fail a recommendation: sync errors stay in this fiber.
 */
import { OmegaBrain } from "@omega/brain"
import {
  type DeltaAck,
  type DeviceId,
  type ErrorCode,
  type ErrorFrame,
  makeWireCodec,
  type PatternDelta,
  PROTOCOL_VERSION,
  type SyncFrame,
  type WireCodec
} from "@omega/protocol"
import {
  Cause,
  Clock,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  Layer,
  PubSub,
  Random,
  Ref,
  Schedule,
  type Scope,
  Semaphore,
  Stream
} from "effect"
import { type Connection, type ConnectOptions, SyncTransport } from "./SyncTransport.ts"

export interface SyncClientConfig {
  readonly deviceId: string
  readonly token: string
  readonly region: string
  readonly endpoint: ConnectOptions
  /** Timed pushes happen at a random moment between these (spreads load across a fleet). */
  readonly minInterval: Duration.Input
  readonly maxInterval: Duration.Input
  /** Push early once this many local pattern changes are unacknowledged. */
  readonly pushAfterChanges: number
  /** How often to look at the change count. */
  readonly changeCheckEvery: Duration.Input
  /** How long to wait for a DeltaAck before treating the session as broken. */
  readonly ackTimeout: Duration.Input
  /**
   * First wait before reconnecting; it doubles with each failed attempt, and starts over after a
   * welcomed session that lasted at least `reconnectMax`.
   */
  readonly reconnectBase: Duration.Input
  /** Longest wait before reconnecting, before the jitter (±20%) that keeps a fleet from coming back in lockstep. */
  readonly reconnectMax: Duration.Input
  readonly codec?: WireCodec
}

export const defaultSyncTiming = {
  minInterval: Duration.minutes(5),
  maxInterval: Duration.minutes(15),
  pushAfterChanges: 25,
  changeCheckEvery: Duration.seconds(30),
  ackTimeout: Duration.seconds(10),
  reconnectBase: Duration.millis(500),
  reconnectMax: Duration.minutes(5)
} as const

export interface SyncStatus {
  readonly connected: boolean
  /** Sessions opened so far (1 + reconnects). */
  readonly sessions: number
  readonly deltasSent: number
  readonly deltasAcknowledged: number
  /** Acknowledged deltas the shard had already counted (replays). */
  readonly duplicates: number
  readonly globalUpdates: number
  /** CoWatchUpdate frames applied. */
  readonly coWatchUpdates: number
  readonly bytesUp: number
  /** Every frame received, CoWatchUpdate included; that one alone in coWatchBytesDown. */
  readonly bytesDown: number
  readonly coWatchBytesDown: number
  readonly lastError: string | undefined
}

export type SyncOutcome =
  | { readonly _tag: "Acknowledged"; readonly ack: DeltaAck; readonly bytes: number }
  | { readonly _tag: "NothingToSend" }
  | { readonly _tag: "Offline" }

/** Who ended a session: the shard (a clean close), the TV (stopping its client), or an error (it reconnects). */
export type DisconnectReason = "shard-closed" | "tv-closed" | "error"

/**
 * What the session did that a TV app may want to show: a session opened or ended, or an update
 * the shard pushed that changed what the brain recommends (duplicates and stale versions, which
 * the brain ignores, are not reported).
 */
export type SyncEvent =
  | { readonly _tag: "Connected"; readonly session: number }
  | { readonly _tag: "Disconnected"; readonly reason: DisconnectReason; readonly message: string }
  | {
    readonly _tag: "GlobalPatternsApplied"
    readonly version: number
    readonly patterns: number
    readonly trends: number
  }
  | { readonly _tag: "CoWatchApplied"; readonly version: number; readonly rows: number }
  | { readonly _tag: "ContentAdded"; readonly items: number }

/** Events kept for a subscriber that has not taken them yet; beyond this the oldest are dropped. */
const EVENT_BACKLOG = 256

/** A sync could not complete; the delta stays in the outbox for the next session. */
export class SyncError extends Data.TaggedError("SyncError")<{
  readonly reason: "rejected" | "timeout" | "disconnected" | "storage"
  readonly message: string
  /** A rejection's error code, as the shard's ErrorFrame gave it (for example "rate-limited"). */
  readonly code?: ErrorCode
}> {}

/** The shard refused: its ErrorFrame as a SyncError ("code: message"), the code kept for callers that count by it. */
const rejection = (frame: ErrorFrame) =>
  new SyncError({ reason: "rejected", message: `${frame.code}: ${frame.message}`, code: frame.code })

export class SyncClient extends Context.Service<SyncClient, {
  /** Pushes what changed now (over the open session) and waits for the acknowledgement. */
  readonly syncNow: Effect.Effect<SyncOutcome, SyncError>
  readonly status: Effect.Effect<SyncStatus>
  /** Waits until a session is open (for tests and demos). */
  readonly awaitConnected: Effect.Effect<void>
  /**
   * Subscribes now (for the scope) and gives every SyncEvent from this moment on, until the client
   * stops (events not yet taken then are dropped); `status` has the state before it. A subscriber
   * that falls more than EVENT_BACKLOG events behind loses the oldest: the session never waits for it.
   */
  readonly events: Effect.Effect<Stream.Stream<SyncEvent>, never, Scope.Scope>
}>()("omega/sync/SyncClient") {
  /** Runs the session for as long as the layer lives. */
  static readonly layer = (config: SyncClientConfig) => Layer.effect(SyncClient, make(config))
}

interface Session {
  readonly connection: Connection
  readonly acks: Map<number, Deferred.Deferred<DeltaAck, SyncError>>
  /** Failed when the session can no longer be trusted (a DeltaAck never came); ends it with that error. */
  readonly broken: Deferred.Deferred<never, SyncError>
}

function make(config: SyncClientConfig) {
  return Effect.gen(function*() {
    const brain = yield* OmegaBrain
    const transport = yield* SyncTransport
    const codec = config.codec ?? makeWireCodec()
    const session = yield* Ref.make<Session | undefined>(undefined)
    // One delta in flight at a time: a second push waits for the first ack, then finds less to send.
    const inFlight = yield* Semaphore.make(1)
    const connectedSignal = yield* Ref.make(yield* Deferred.make<void>())
    const events = yield* PubSub.sliding<SyncEvent>(EVENT_BACKLOG)
    yield* Effect.addFinalizer(() => PubSub.shutdown(events))
    const publish = (event: SyncEvent) => PubSub.publish(events, event)
    const counters = {
      sessions: 0,
      deltasSent: 0,
      deltasAcknowledged: 0,
      duplicates: 0,
      globalUpdates: 0,
      coWatchUpdates: 0,
      bytesUp: 0,
      bytesDown: 0,
      coWatchBytesDown: 0,
      lastError: undefined as string | undefined
    }

    const send = (connection: Connection, frame: SyncFrame) =>
      Effect.gen(function*() {
        const bytes = yield* codec.encodeEffect(frame).pipe(Effect.orDie)
        yield* connection.send(bytes)
        counters.bytesUp += bytes.length
        return bytes.length
      })

    const handle = (active: Session, bytes: Uint8Array) =>
      Effect.gen(function*() {
        counters.bytesDown += bytes.length
        const frame = yield* codec.decode(bytes)
        switch (frame._tag) {
          case "DeltaAck": {
            yield* brain.acknowledgeDelta(frame.version)
            counters.deltasAcknowledged += 1
            if (frame.duplicate) counters.duplicates += 1
            for (const [version, waiting] of active.acks) {
              if (version <= frame.version) {
                yield* Deferred.succeed(waiting, frame)
                active.acks.delete(version)
              }
            }
            return
          }
          case "GlobalUpdate": {
            if (!(yield* brain.applyGlobalPatterns(frame.global))) return
            counters.globalUpdates += 1
            const { similar, trending, version } = frame.global
            return yield* publish({
              _tag: "GlobalPatternsApplied",
              version,
              patterns: similar.length,
              trends: trending.length
            })
          }
          case "ContentUpdate":
            yield* brain.addContent(frame.items)
            return yield* publish({ _tag: "ContentAdded", items: frame.items.length })
          case "CoWatchUpdate":
            counters.coWatchBytesDown += bytes.length
            if (!(yield* brain.applyCoWatch({ version: frame.version, rows: frame.rows }))) return
            counters.coWatchUpdates += 1
            return yield* publish({ _tag: "CoWatchApplied", version: frame.version, rows: frame.rows.length })
          case "Ping":
            return yield* send(active.connection, { _tag: "Pong", nonce: frame.nonce })
          case "ErrorFrame": {
            const error = rejection(frame)
            counters.lastError = error.message
            for (const waiting of active.acks.values()) yield* Deferred.fail(waiting, error)
            active.acks.clear()
            return
          }
          default:
            return
        }
      })

    /**
     * Sends a delta over the session and waits for its acknowledgement. Without one in time the
     * session is presumed half-open and ended; the delta stays in the outbox for the next session.
     */
    const push = (active: Session, delta: PatternDelta) =>
      Effect.acquireUseRelease(
        Effect.tap(Deferred.make<DeltaAck, SyncError>(), (waiting) =>
          Effect.sync(() => active.acks.set(delta.version, waiting))),
        (waiting) =>
          Effect.gen(function*() {
            const bytes = yield* send(active.connection, { _tag: "DeltaUpload", delta }).pipe(
              Effect.mapError((e) =>
                new SyncError({ reason: "disconnected", message: e.message })
              )
            )
            counters.deltasSent += 1
            const ack = yield* Deferred.await(waiting).pipe(
              Effect.timeoutOrElse({
                duration: config.ackTimeout,
                orElse: () => {
                  const error = new SyncError({
                    reason: "timeout",
                    message: `no DeltaAck for version ${delta.version}`
                  })
                  return Effect.andThen(Deferred.fail(active.broken, error), Effect.fail(error))
                }
              })
            )
            return { _tag: "Acknowledged", ack, bytes } as const
          }),
        // However the push ends, its waiter goes with it (unless a later push of the version took the slot).
        (waiting) =>
          Effect.sync(() => {
            if (active.acks.get(delta.version) === waiting) active.acks.delete(delta.version)
          })
      )

    const syncNow = Effect.gen(function*() {
      const active = yield* Ref.get(session)
      if (active === undefined) return { _tag: "Offline" } as const
      const delta = yield* brain.prepareSyncDelta().pipe(Effect.mapError(storage))
      if (delta.version <= delta.baseVersion) return { _tag: "NothingToSend" } as const
      return yield* push(active, delta)
    }).pipe(inFlight.withPermit, Effect.withSpan("SyncClient.syncNow"))

    /** One session: handshake, replay of the outbox, then frames until the connection ends. */
    const runSession = Effect.scoped(Effect.gen(function*() {
      const connection = yield* transport.connect(config.endpoint)
      const stats = yield* brain.stats
      yield* send(connection, {
        _tag: "Hello",
        deviceId: config.deviceId as DeviceId,
        token: config.token,
        region: config.region,
        protocolVersion: PROTOCOL_VERSION,
        resume: {
          lastAckedVersion: stats.versions.acknowledged,
          globalVersion: stats.versions.global,
          coWatchVersion: stats.versions.coWatch
        }
      })
      const active: Session = { connection, acks: new Map(), broken: yield* Deferred.make<never, SyncError>() }
      yield* Effect.addFinalizer((exit) =>
        Effect.gen(function*() {
          // Only a session that was welcomed was ever reported as connected; by the time a
          // subscriber hears it ended, `status` says so too.
          const welcomed = (yield* Ref.get(session)) === active
          yield* Ref.set(session, undefined)
          if (welcomed) {
            // Only the end of a welcomed session re-arms the signal: waiters of a refused attempt keep
            // the pending one, which the next welcome completes.
            yield* Ref.set(connectedSignal, yield* Deferred.make<void>())
            yield* publish(
              Exit.isSuccess(exit) ?
                { _tag: "Disconnected", reason: "shard-closed", message: "the shard ended the session" } :
                Cause.hasInterruptsOnly(exit.cause) ?
                { _tag: "Disconnected", reason: "tv-closed", message: "the TV ended the session" } :
                { _tag: "Disconnected", reason: "error", message: describe(Cause.squash(exit.cause)) }
            )
          }
          const error = new SyncError({ reason: "disconnected", message: "session closed" })
          for (const waiting of active.acks.values()) yield* Deferred.fail(waiting, error)
        })
      )
      // Deltas a previous session never saw acknowledged are replayed, then whatever changed since.
      const replay = Effect.gen(function*() {
        // Read under the permit: a delta acknowledged meanwhile has left the outbox and is not resent.
        yield* inFlight.withPermit(Effect.gen(function*() {
          for (const delta of yield* brain.pendingDeltas) yield* push(active, delta)
        }))
        yield* syncNow
      }).pipe(Effect.catch((e) => Effect.logDebug("outbox replay did not finish", e)))

      /** The first frame must welcome us; anything else ends the session. */
      const welcome = Effect.fnUntraced(function*(bytes: Uint8Array) {
        counters.bytesDown += bytes.length
        const frame = yield* codec.decode(bytes)
        if (frame._tag !== "Welcome") {
          return yield* frame._tag === "ErrorFrame"
            ? rejection(frame)
            : new SyncError({ reason: "rejected", message: `expected Welcome, got ${frame._tag}` })
        }
        counters.sessions += 1
        counters.lastError = undefined
        yield* Ref.set(session, active)
        yield* Deferred.succeed(yield* Ref.get(connectedSignal), undefined)
        yield* publish({ _tag: "Connected", session: counters.sessions })
        yield* Effect.forkScoped(replay)
      })

      let welcomed = false
      yield* Stream.runForEach(connection.incoming, (bytes): Effect.Effect<unknown, unknown, Scope.Scope> => {
        if (welcomed) return handle(active, bytes)
        welcomed = true
        return welcome(bytes)
      }).pipe(Effect.raceFirst(Deferred.await(active.broken)))
      if (!welcomed) {
        return yield* new SyncError({
          reason: "disconnected",
          message: "the shard closed the session before its Welcome"
        })
      }
    }))

    // Capped before the jitter, so that TVs which all reached the cap still come back spread out.
    const reconnectMax = Duration.fromInputUnsafe(config.reconnectMax)
    /**
     * One attempt to connect. It fails, to be retried with a growing wait, unless the shard
     * welcomed the session and it lasted at least `reconnectMax`: a shard that welcomes and drops
     * sessions at once (overloaded, restarting) must not have every TV back every `reconnectBase`.
     */
    const attempt = Effect.gen(function*() {
      // `sessions` counts welcomes.
      const welcomesBefore = counters.sessions
      const started = yield* Clock.currentTimeMillis
      const lasted = Effect.map(Clock.currentTimeMillis, (now) => now - started >= Duration.toMillis(reconnectMax))
      const ended = yield* Effect.exit(runSession)
      if (Exit.isFailure(ended)) counters.lastError = describe(Cause.squash(ended.cause))
      if (counters.sessions > welcomesBefore && (yield* lasted)) return
      if (Exit.isFailure(ended)) return yield* Effect.failCause(ended.cause)
      return yield* new SyncError({ reason: "disconnected", message: "the session ended soon after its Welcome" })
    })

    const backoff = Schedule.exponential(config.reconnectBase).pipe(
      Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, reconnectMax))),
      Schedule.jittered
    )
    // Attempts back off until a welcomed session lasts `reconnectMax`; once it ends, the next round
    // starts from the first delay.
    yield* Effect.retry(attempt, backoff).pipe(
      Effect.repeat(Schedule.spaced(config.reconnectBase).pipe(Schedule.jittered)),
      Effect.forkScoped
    )

    // Timed pushes at a random point of the interval, plus early pushes when much changed.
    const minMs = Duration.toMillis(Duration.fromInputUnsafe(config.minInterval))
    const maxMs = Duration.toMillis(Duration.fromInputUnsafe(config.maxInterval))
    const quietly = <A, E>(effect: Effect.Effect<A, E>) =>
      effect.pipe(Effect.catch((e) => Effect.sync(() => counters.lastError = describe(e))), Effect.asVoid)
    yield* Effect.gen(function*() {
      const wait = minMs + (yield* Random.next) * (maxMs - minMs)
      yield* Effect.sleep(Duration.millis(wait))
      yield* quietly(syncNow)
    }).pipe(Effect.forever, Effect.forkScoped)
    yield* Effect.gen(function*() {
      const stats = yield* brain.stats
      if (stats.versions.local - stats.versions.acknowledged >= config.pushAfterChanges) yield* quietly(syncNow)
    }).pipe(
      Effect.catch(() => Effect.void),
      Effect.schedule(Schedule.spaced(config.changeCheckEvery)),
      Effect.forkScoped
    )

    return SyncClient.of({
      syncNow,
      status: Effect.gen(function*() {
        return { connected: (yield* Ref.get(session)) !== undefined, ...counters } satisfies SyncStatus
      }),
      awaitConnected: Effect.flatMap(Ref.get(connectedSignal), Deferred.await),
      events: Effect.map(PubSub.subscribe(events), Stream.fromSubscription)
    })
  })
}

const storage = (e: { readonly message: string }) => new SyncError({ reason: "storage", message: e.message })

const describe = (e: unknown): string =>
  typeof e === "object" && e !== null && "message" in e ? String(e.message) : String(e)
