/**
 * Which devices a shard serves: authentication of per-device tokens, the device registry
 * (persisted in ShardStorage; in memory, the devices with an open session and the most recently
 * disconnected ones), capacity, and live statistics. A device token
 * is HMAC-SHA256(fleet secret, device id): the shard verifies it without a lookup, and a device
 * is registered on its first successful sync until the shard is full.
 */
import { Context, Data, Deferred, Effect, Layer, Queue, Redacted } from "effect"
import { createHash, createHmac, timingSafeEqual } from "node:crypto"
import { type NewDevice, ShardStorage, type StorageError } from "./ShardStorage.ts"

/** A device waiting to be looked up or registered. */
interface Admission {
  readonly deviceId: string
  readonly token: string
  readonly region: string
  readonly done: Deferred.Deferred<DeviceState, AuthError | StorageError>
}

/** Devices looked up (and registered) per statement. */
const ADMISSION_BATCH = 500

export interface ShardConfig {
  readonly shardId: string
  /** Region of TVs that do not say theirs. */
  readonly defaultRegion: string
  readonly maxDevices: number
  /** Secret that device tokens derive from (provisioned to TVs at the factory). */
  readonly fleetSecret: Redacted.Redacted<string>
  /**
   * Devices without an open session kept in memory, the most recently disconnected; one that comes
   * back after being forgotten is read back from storage (its last version and sync time are in the
   * delta log). Without a bound, every device that ever synced stays: millions on a full shard.
   */
  readonly idleDeviceMemory?: number
}

/** How many disconnected devices a shard keeps in memory by default. */
export const DEFAULT_IDLE_DEVICE_MEMORY = 100_000

/** A device with an open session, as ingestion needs it. */
export interface DeviceState {
  readonly id: string
  readonly region: string
  /** Highest delta version made durable. */
  lastVersion: number
  /** Epoch ms of the last accepted delta (rate limiting). */
  lastSyncAt: number
}

export interface ShardStats {
  readonly shardId: string
  readonly registeredDevices: number
  readonly maxDevices: number
  readonly activeSessions: number
  readonly activeDevices: number
  /** Devices held in memory: those with a session and up to idleDeviceMemory disconnected ones. */
  readonly cachedDevices: number
}

/** The device could not be let in; `reason` says why (and what the TV is told). */
export class AuthError extends Data.TaggedError("AuthError")<{
  readonly reason: "unauthorized" | "shard-full"
  readonly message: string
}> {}

export class ShardManager extends Context.Service<ShardManager, {
  readonly config: ShardConfig
  /** Checks the device's token and returns its state, registering it on first sight. */
  readonly authenticate: (
    deviceId: string,
    token: string,
    region: string
  ) => Effect.Effect<DeviceState, AuthError | StorageError>
  /** Checks a federation worker's credentials (an id in the "federation:" namespace); no registration. */
  readonly authenticatePeer: (peerId: string, token: string) => Effect.Effect<void, AuthError>
  readonly sessionOpened: (deviceId: string) => void
  readonly sessionClosed: (deviceId: string) => void
  readonly stats: Effect.Effect<ShardStats>
}>()("omega/constellation/ShardManager") {
  static readonly layer = (config: ShardConfig) => Layer.effect(ShardManager, make(config))
}

/** Session ids of federation workers start with this; devices cannot register such ids. */
export const FEDERATION_PEER_PREFIX = "federation:"

/** The token a device with `deviceId` holds under `fleetSecret`. */
export const deviceToken = (fleetSecret: Redacted.Redacted<string> | string, deviceId: string): string =>
  createHmac("sha256", Redacted.isRedacted(fleetSecret) ? Redacted.value(fleetSecret) : fleetSecret)
    .update(deviceId)
    .digest("base64url")

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex")

function make(config: ShardConfig) {
  return Effect.gen(function*() {
    const storage = yield* ShardStorage
    let registered = (yield* storage.counts).devices
    /** Devices with an open session, or admitted and about to open one. */
    const devices = new Map<string, DeviceState>()
    /** Devices whose last session closed, least recently closed first. */
    const idle = new Map<string, DeviceState>()
    const idleMemory = config.idleDeviceMemory ?? DEFAULT_IDLE_DEVICE_MEMORY
    const sessions = new Map<string, number>()
    /** The device's state if it is in memory (an idle one becomes active again). */
    const cached = (deviceId: string): DeviceState | undefined => {
      const active = devices.get(deviceId)
      if (active !== undefined) return active
      const state = idle.get(deviceId)
      if (state === undefined) return undefined
      idle.delete(deviceId)
      devices.set(deviceId, state)
      return state
    }
    let activeSessions = 0

    const verify = (deviceId: string, token: string) => {
      const expected = Buffer.from(deviceToken(config.fleetSecret, deviceId))
      const given = Buffer.from(token)
      return expected.length === given.length && timingSafeEqual(expected, given)
    }

    // Admission in batches: every device waiting for its first lookup (or registration) when the
    // last batch finished goes to the database in one statement each way. One lookup per device
    // let a restarted shard readmit only ~100 TVs a second on PGlite.
    const admissions = yield* Queue.unbounded<Admission>()
    const admit = (batch: ReadonlyArray<Admission>) =>
      Effect.gen(function*() {
        const unknown = [...new Set(batch.map((a) => a.deviceId).filter((id) => cached(id) === undefined))]
        for (const stored of yield* storage.findDevices(unknown)) {
          devices.set(stored.id, {
            id: stored.id,
            region: stored.region,
            lastVersion: stored.lastVersion,
            lastSyncAt: stored.lastSyncAt ?? 0
          })
        }
        const fresh = new Map<string, NewDevice>()
        for (const a of batch) {
          if (devices.has(a.deviceId) || fresh.has(a.deviceId) || registered + fresh.size >= config.maxDevices) continue
          fresh.set(a.deviceId, {
            id: a.deviceId,
            tokenHash: sha256(a.token),
            region: a.region.length > 0 ? a.region : config.defaultRegion
          })
        }
        // A failed registration fails only the devices it was for; those found are let in.
        const registering = yield* Effect.exit(storage.registerDevices([...fresh.values()]))
        if (registering._tag === "Success") {
          registered += registering.value.length
          for (const device of fresh.values()) {
            devices.set(device.id, { id: device.id, region: device.region, lastVersion: 0, lastSyncAt: 0 })
          }
        }
        yield* Effect.forEach(batch, (a) => {
          const state = devices.get(a.deviceId)
          if (state !== undefined) return Deferred.succeed(a.done, state)
          if (registering._tag === "Failure" && fresh.has(a.deviceId)) {
            return Deferred.failCause(a.done, registering.cause)
          }
          return Deferred.fail(
            a.done,
            new AuthError({
              reason: "shard-full",
              message: `shard ${config.shardId} serves its maximum of ${config.maxDevices} devices`
            })
          )
        }, { discard: true })
      }).pipe(
        // The lookup failed: nobody in the batch can be answered but with that failure.
        Effect.catchCause((cause) => Effect.forEach(batch, (a) => Deferred.failCause(a.done, cause), { discard: true }))
      )
    yield* Queue.takeBetween(admissions, 1, ADMISSION_BATCH).pipe(
      Effect.flatMap(admit),
      Effect.forever,
      Effect.forkScoped
    )

    const authenticate = Effect.fn("ShardManager.authenticate")(
      function*(deviceId: string, token: string, region: string) {
        if (!verify(deviceId, token) || deviceId.startsWith(FEDERATION_PEER_PREFIX)) {
          return yield* new AuthError({
            reason: "unauthorized",
            message: `unknown device or wrong token for ${deviceId}`
          })
        }
        const state = cached(deviceId)
        if (state !== undefined) return state
        const done = yield* Deferred.make<DeviceState, AuthError | StorageError>()
        yield* Queue.offer(admissions, { deviceId, token, region, done })
        return yield* Deferred.await(done)
      }
    )

    return ShardManager.of({
      config,
      authenticate,
      authenticatePeer: (peerId, token) =>
        peerId.startsWith(FEDERATION_PEER_PREFIX) && verify(peerId, token) ?
          Effect.void :
          Effect.fail(new AuthError({ reason: "unauthorized", message: `${peerId} is not a federation worker` })),
      sessionOpened: (deviceId) => {
        activeSessions += 1
        sessions.set(deviceId, (sessions.get(deviceId) ?? 0) + 1)
        // A second session admitted while the first was closing finds its state back among the active.
        cached(deviceId)
      },
      sessionClosed: (deviceId) => {
        activeSessions -= 1
        const open = (sessions.get(deviceId) ?? 1) - 1
        if (open > 0) return void sessions.set(deviceId, open)
        sessions.delete(deviceId)
        const state = devices.get(deviceId)
        if (state === undefined) return
        devices.delete(deviceId)
        idle.set(deviceId, state)
        if (idle.size > idleMemory) idle.delete(idle.keys().next().value!)
      },
      stats: Effect.sync(() => ({
        shardId: config.shardId,
        registeredDevices: registered,
        maxDevices: config.maxDevices,
        activeSessions,
        activeDevices: sessions.size,
        cachedDevices: devices.size + idle.size
      }))
    })
  })
}
