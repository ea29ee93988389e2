/**
 * One TV for integrators who do not use Effect: the brain (SQLite, usearch, the hashing embedder
 * or an ONNX model) and, when a shard is configured, the long-lived sync session, behind plain
 * promises. Every input is validated by the protocol schemas; every rejection is an OmegaError.
 *
 * ```ts
 * const tv = await OmegaTv.open({ path: "/data/omega/brain.db", shard: { ... } })
 * await tv.observe({ contentId, title, genres, watchedAt, watchShare, context })
 * const suggestions = await tv.recommend({ timeOfDay: "evening", dayType: "weekday", recentWatches: [] })
 * await tv.close()
 * ```
 */
import { type BrainStats, defaultBrainConfig, Embedder, type ObserveResult, OmegaBrain } from "@omega/brain"
import {
  ContentEmbedding,
  type DayType,
  decoder,
  DeviceIdText,
  DeviceToken,
  type Mood,
  type Recommendation,
  Region,
  type TimeOfDay
} from "@omega/protocol"
import {
  defaultSyncTiming,
  pinnedEndpoint,
  quicIdentityFromPrivateKey,
  SyncClient,
  type SyncClientConfig,
  type SyncStatus,
  transportLayer
} from "@omega/sync"
import { Duration, Effect, Layer, ManagedRuntime, Option, Schema, Stream } from "effect"
import { toTvEvent, type TvEventListener, TvEvents } from "./internal/events.ts"
import { fromFailure, valueOrThrow } from "./internal/failures.ts"
import { OmegaError } from "./OmegaError.ts"

const PositiveMillis = Schema.Finite.check(Schema.isGreaterThan(0))

/** When the TV pushes, and how it waits; every field is optional (the defaults are a deployed TV's). */
export const SyncTimingOptions = Schema.Struct({
  /** Timed pushes happen at a random moment between these (default 5 and 15 minutes). */
  minIntervalMs: Schema.optionalKey(PositiveMillis),
  maxIntervalMs: Schema.optionalKey(PositiveMillis),
  /** Push early once this many pattern changes are unacknowledged (default 25). */
  pushAfterChanges: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))),
  /** How often the change count is looked at (default 30 s). */
  changeCheckMs: Schema.optionalKey(PositiveMillis),
  /** How long a push waits for its acknowledgement (default 10 s). */
  ackTimeoutMs: Schema.optionalKey(PositiveMillis),
  /** Reconnects back off exponentially, with jitter, from the first to the second (default 0.5 s, 5 min). */
  reconnectBaseMs: Schema.optionalKey(PositiveMillis),
  reconnectMaxMs: Schema.optionalKey(PositiveMillis)
})

/** The shard this TV syncs with, and the credentials it was provisioned with. */
export const ShardOptions = Schema.Struct({
  transport: Schema.Literals(["quic", "webtransport"]),
  host: Schema.String.check(Schema.isNonEmpty()),
  port: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 65_535 })),
  /** QUIC: the shard's peer id. WebTransport: the SHA-256 of its certificate, 64 hex digits. */
  pin: Schema.String,
  deviceId: DeviceIdText,
  /** The device token the fleet was provisioned with (an HMAC of the fleet secret and the device id). Secret. */
  token: DeviceToken,
  region: Region,
  /** QUIC only: this device's Ed25519 key (libp2p encoding), to keep its peer id across restarts. */
  quicPrivateKey: Schema.optionalKey(Schema.Uint8Array),
  timing: Schema.optionalKey(SyncTimingOptions)
})
export type ShardOptions = typeof ShardOptions.Type

/** What `OmegaTv.open` takes; unknown keys are refused, so a misspelt option does not pass unnoticed. */
export const OmegaTvOptions = Schema.Struct({
  /** The brain's SQLite file (created when missing); ":memory:" keeps nothing across restarts. */
  path: Schema.String.check(Schema.isNonEmpty()),
  /** A MiniLM-class ONNX sentence-transformer; without it the weight-free hashing embedder. */
  modelDir: Schema.optionalKey(Schema.String.check(Schema.isNonEmpty())),
  /** Without a shard the TV learns and recommends alone, and its deltas wait in the outbox. */
  shard: Schema.optionalKey(ShardOptions),
  /** Run the session-scale and daily learning loops on their schedules (default true). */
  learningLoops: Schema.optionalKey(Schema.Boolean)
})
export type OmegaTvOptions = typeof OmegaTvOptions.Type

/** When and how the TV is being watched: the protocol's ViewContext, with plain string ids. */
export interface ViewContextInput {
  readonly timeOfDay: TimeOfDay
  readonly dayType: DayType
  /** Content ids of what was watched last, newest first (at most MAX_RECENT_WATCHES). */
  readonly recentWatches: ReadonlyArray<string>
  readonly mood?: Mood
}

/** One thing watched: the protocol's ViewingEvent, with plain string ids (the schema checks them). */
export interface ViewingEventInput {
  readonly contentId: string
  readonly title: string
  readonly genres: ReadonlyArray<string>
  /** Epoch milliseconds. */
  readonly watchedAt: number
  /** Share of the item that was watched, 0..1. */
  readonly watchShare: number
  readonly context: ViewContextInput
}

/** A catalog item; without an embedding the brain embeds its title and genres with its own Embedder. */
export interface ContentInput {
  readonly contentId: string
  readonly title: string
  readonly genres: ReadonlyArray<string>
  readonly embedding?: Float32Array
}

/** What `syncNow` did. */
export type SyncResult =
  | {
    readonly status: "acknowledged"
    /** The delta's version, now durable on the shard. */
    readonly version: number
    /** Patterns the shard took from it. */
    readonly accepted: number
    /** The shard had counted this delta before (a replay). */
    readonly duplicate: boolean
    readonly bytes: number
  }
  | { readonly status: "nothing-to-send" }
  /** No session is open right now; the TV reconnects by itself and the outbox keeps the delta. */
  | { readonly status: "offline" }

/** What the brain holds and how the session is doing. */
export interface TvStatus {
  readonly brain: BrainStats
  /** Undefined on a TV opened without a shard. */
  readonly sync: SyncStatus | undefined
}

type TvServices = OmegaBrain | Embedder

/** One TV's brain and sync session; open it with `OmegaTv.open`, end it with `close`. */
export class OmegaTv {
  readonly #runtime: ManagedRuntime.ManagedRuntime<TvServices, unknown>
  /** Calls that change the brain: `close` lets them finish, so none stops halfway. */
  readonly #writes = new Set<Promise<unknown>>()
  readonly #events: TvEvents
  #closing: Promise<void> | undefined

  private constructor(runtime: ManagedRuntime.ManagedRuntime<TvServices, unknown>, events: TvEvents) {
    this.#runtime = runtime
    this.#events = events
  }

  /**
   * Opens the brain (restoring what its SQLite file holds) and, with a shard, starts the session:
   * it connects in the background and keeps reconnecting, so a shard that is down does not fail
   * this call. Rejects with "invalid-options" before touching any file, or with the code of what
   * could not start.
   */
  static async open(options: OmegaTvOptions): Promise<OmegaTv> {
    const settings = valueOrThrow(await Effect.runPromiseExit(settingsOf(options)))
    const events = new TvEvents((failure, event) =>
      Effect.runFork(Effect.logWarning(`an onEvent listener failed on ${event.type}`, failure))
    )
    const runtime = ManagedRuntime.make(tvLayer(settings, events))
    const started = await runtime.runPromiseExit(Effect.void)
    if (started._tag === "Failure") await runtime.dispose()
    valueOrThrow(started)
    return new OmegaTv(runtime, events)
  }

  /**
   * Calls `listener` with every TvEvent from now on, until the returned function is called or the
   * TV closes; while a session is open, it is first told of that one (`connected`). A TV opened
   * without a shard has no session and never calls it. A listener that throws (or rejects) is
   * logged and kept; it holds up nothing else.
   */
  onEvent(listener: TvEventListener): () => void {
    return this.#closing === undefined ? this.#events.add(listener) : () => {}
  }

  /** Learns from one viewing event; rejects with "invalid-input" (nothing stored) when it is not one. */
  observe(event: ViewingEventInput): Promise<ObserveResult> {
    return this.#write(OmegaBrain.use((brain) => brain.observe(event)))
  }

  /** Up to `limit` ranked suggestions for a viewing context, with their reasons; works offline. */
  recommend(context: ViewContextInput, limit = 10): Promise<ReadonlyArray<Recommendation>> {
    return this.#run(OmegaBrain.use((brain) => brain.recommend(context, limit)))
  }

  /**
   * Adds or updates catalog items the TV can recommend; rejects with "invalid-input" (nothing
   * stored) when one is not a catalog item.
   */
  addContent(items: ReadonlyArray<ContentInput>): Promise<void> {
    return this.#write(Effect.gen(function*() {
      const embedder = yield* Embedder
      const embedded = yield* Effect.forEach(yield* decodeContent(items), (item) =>
        item.embedding !== undefined ?
          Effect.succeed({ ...item, embedding: item.embedding }) :
          Effect.map(embedder.embedContent(item), (embedding) => ({ ...item, embedding })))
      yield* OmegaBrain.use((brain) => brain.addContent(embedded))
    }))
  }

  /** Pushes what changed now over the open session and waits for the shard's acknowledgement. */
  syncNow(): Promise<SyncResult> {
    return this.#run(Effect.gen(function*() {
      const outcome = yield* (yield* syncClient).syncNow
      switch (outcome._tag) {
        case "Acknowledged":
          return {
            status: "acknowledged",
            version: outcome.ack.version,
            accepted: outcome.ack.accepted,
            duplicate: outcome.ack.duplicate,
            bytes: outcome.bytes
          } as const
        case "NothingToSend":
          return { status: "nothing-to-send" } as const
        case "Offline":
          return { status: "offline" } as const
      }
    }))
  }

  /** Resolves once a session to the shard is open; rejects with "timeout" after `timeoutMs`. */
  connected(timeoutMs = 10_000): Promise<void> {
    return this.#run(Effect.gen(function*() {
      const client = yield* syncClient
      const ms = yield* decodeTimeout(timeoutMs)
      yield* client.awaitConnected.pipe(
        Effect.timeoutOrElse({
          duration: Duration.millis(ms),
          orElse: () => Effect.fail(new OmegaError("timeout", `no session to the shard within ${ms} ms`))
        })
      )
    }))
  }

  /** What the brain holds and how its sync session is doing (a snapshot). */
  status(): Promise<TvStatus> {
    return this.#run(Effect.gen(function*() {
      const brain = yield* OmegaBrain
      const client = yield* Effect.serviceOption(SyncClient)
      return {
        brain: yield* brain.stats,
        sync: Option.isSome(client) ? yield* client.value.status : undefined
      }
    }))
  }

  /**
   * Lets calls that change the brain finish, interrupts waits (a sync's acknowledgement, `connected`),
   * ends the session (delivering what was sent), saves the indexes and closes the store. Every call
   * resolves once all of that is done.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#events.clear()
      await Promise.allSettled(this.#writes)
      try {
        await this.#runtime.dispose()
      } catch (error) {
        throw fromFailure(error)
      }
    })()
    return this.#closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  async #run<A, E>(effect: Effect.Effect<A, E, TvServices>): Promise<A> {
    if (this.#closing !== undefined) throw new OmegaError("closed", "this TV is closed")
    return valueOrThrow(await this.#runtime.runPromiseExit(effect))
  }

  async #write<A, E>(effect: Effect.Effect<A, E, TvServices>): Promise<A> {
    const running = this.#run(effect)
    this.#writes.add(running)
    try {
      return await running
    } finally {
      this.#writes.delete(running)
    }
  }
}

const invalidOptions = (message: string) => new OmegaError("invalid-options", `OmegaTv options: ${message}`)

const decodeOptions = Schema.decodeUnknownEffect(OmegaTvOptions, { onExcessProperty: "error" })
const decodeContent = decoder(
  Schema.Array(ContentEmbedding.mapFields((f) => ({ ...f, embedding: Schema.optionalKey(f.embedding) }))),
  "ContentInput[]"
)
const decodeTimeout = decoder(Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)), "timeoutMs")

/** The options, checked, and the sync client's settings when there is a shard. */
const settingsOf = (input: unknown) =>
  Effect.gen(function*() {
    const options = yield* Effect.mapError(decodeOptions(input), (e) => invalidOptions(e.message))
    const shard = options.shard
    const sync = shard === undefined ? undefined : { config: yield* syncConfig(shard), transport: shard.transport }
    return { options, sync }
  })

/** The sync client's settings from the shard options, with the defaults filled in and checked together. */
const syncConfig = (shard: ShardOptions): Effect.Effect<SyncClientConfig, OmegaError> =>
  Effect.gen(function*() {
    const invalid = (option: string) => (e: { readonly message: string }) =>
      invalidOptions(`shard.${option}: ${e.message}`)
    const endpoint = yield* Effect.mapError(pinnedEndpoint(shard), invalid("pin"))
    if (shard.quicPrivateKey !== undefined && shard.transport !== "quic") {
      return yield* Effect.fail(
        invalidOptions("shard.quicPrivateKey is a QUIC identity, and the transport is webtransport")
      )
    }
    const identity = shard.quicPrivateKey === undefined ?
      undefined :
      yield* Effect.mapError(quicIdentityFromPrivateKey(shard.quicPrivateKey), invalid("quicPrivateKey"))
    const t = shard.timing ?? {}
    const ms = (value: number | undefined, otherwise: Duration.Input) =>
      Duration.toMillis(value === undefined ? Duration.fromInputUnsafe(otherwise) : Duration.millis(value))
    const timing = {
      minInterval: ms(t.minIntervalMs, defaultSyncTiming.minInterval),
      maxInterval: ms(t.maxIntervalMs, defaultSyncTiming.maxInterval),
      reconnectBase: ms(t.reconnectBaseMs, defaultSyncTiming.reconnectBase),
      reconnectMax: ms(t.reconnectMaxMs, defaultSyncTiming.reconnectMax)
    }
    if (timing.minInterval > timing.maxInterval) {
      return yield* Effect.fail(invalidOptions(
        `shard.timing: the push interval's minimum (${timing.minInterval} ms) is above its maximum (${timing.maxInterval} ms)`
      ))
    }
    if (timing.reconnectBase > timing.reconnectMax) {
      return yield* Effect.fail(invalidOptions(
        `shard.timing: reconnectBaseMs (${timing.reconnectBase} ms) is above reconnectMaxMs (${timing.reconnectMax} ms)`
      ))
    }
    return {
      deviceId: shard.deviceId,
      token: shard.token,
      region: shard.region,
      endpoint: identity === undefined ? endpoint : { ...endpoint, identity },
      minInterval: Duration.millis(timing.minInterval),
      maxInterval: Duration.millis(timing.maxInterval),
      pushAfterChanges: t.pushAfterChanges ?? defaultSyncTiming.pushAfterChanges,
      changeCheckEvery: Duration.millis(ms(t.changeCheckMs, defaultSyncTiming.changeCheckEvery)),
      ackTimeout: Duration.millis(ms(t.ackTimeoutMs, defaultSyncTiming.ackTimeout)),
      reconnectBase: Duration.millis(timing.reconnectBase),
      reconnectMax: Duration.millis(timing.reconnectMax)
    } satisfies SyncClientConfig
  })

/** The brain, and the sync client over the shard's transport when there is a shard. */
const tvLayer = (
  { options, sync }: Effect.Success<ReturnType<typeof settingsOf>>,
  events: TvEvents
) => {
  const brain = OmegaBrain.layerLive({
    path: options.path,
    modelDir: options.modelDir,
    config: { ...defaultBrainConfig, runLearningLoops: options.learningLoops ?? true }
  })
  if (sync === undefined) return brain
  return dispatcher(events).pipe(
    Layer.provideMerge(SyncClient.layer(sync.config)),
    Layer.provideMerge(brain),
    Layer.provide(transportLayer(sync.transport))
  )
}

/** Hands the session's events to the app's listeners; subscribed as the TV opens, so none is missed. */
const dispatcher = (events: TvEvents) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const incoming = yield* (yield* SyncClient).events
    yield* incoming.pipe(
      Stream.runForEach((event) => Effect.sync(() => events.dispatch(toTvEvent(event)))),
      Effect.forkScoped
    )
  }))

const syncClient = Effect.flatMap(
  Effect.serviceOption(SyncClient),
  Option.match({
    onNone: () => Effect.fail(new OmegaError("no-shard", "this TV was opened without a shard")),
    onSome: Effect.succeed
  })
)
