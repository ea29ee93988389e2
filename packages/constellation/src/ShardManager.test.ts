import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Redacted } from "effect"
import { type AuthError, deviceToken, ShardManager } from "./ShardManager.ts"
import { ShardStorage, StorageError } from "./ShardStorage.ts"

const SECRET = "manager-test-secret"
/** The reason of an AuthError (anything else, a storage failure, fails the test). */
const reasonOf = (
  error: AuthError | StorageError
) => (error._tag === "AuthError" ? error.reason : `storage: ${error.message}`)

/** A manager over whatever ShardStorage is provided. */
const managerOnly = (maxDevices: number) =>
  ShardManager.layer({ shardId: "m", defaultRegion: "eu-west", maxDevices, fleetSecret: Redacted.make(SECRET) })

/** A second manager over the storage in context (a restarted shard, or one with a doctored storage). */
const buildManager = <E, R>(layer: Layer.Layer<ShardManager, E, R>) =>
  Layer.build(layer).pipe(Effect.map((context) => Context.get(context, ShardManager)))

const manager = managerOnly(2).pipe(Layer.provideMerge(ShardStorage.layerTest))

describe("ShardManager", () => {
  it.live(
    "keeps devices with a session and the most recently disconnected in memory, and reads the rest back",
    () =>
      Effect.gen(function*() {
        const storage = yield* ShardStorage
        const shard = yield* buildManager(
          ShardManager.layer({
            shardId: "m",
            defaultRegion: "eu-west",
            maxDevices: 100,
            fleetSecret: Redacted.make(SECRET),
            idleDeviceMemory: 2
          })
        )
        const visit = (id: string) =>
          Effect.gen(function*() {
            const state = yield* shard.authenticate(id, deviceToken(SECRET, id), "eu")
            shard.sessionOpened(id)
            return state
          })
        const a = yield* visit("tv-a")
        // What ingestion does once tv-a's delta 7 is durable: the log has it, the state says so.
        yield* storage.appendDeltas([{
          deviceId: "tv-a",
          version: 7,
          region: "eu",
          patterns: 0,
          frame: new Uint8Array([1])
        }])
        a.lastVersion = 7
        for (const id of ["tv-b", "tv-c", "tv-d"]) yield* visit(id)
        assert.strictEqual((yield* shard.stats).cachedDevices, 4, "every device with a session")
        for (const id of ["tv-a", "tv-b", "tv-c", "tv-d"]) shard.sessionClosed(id)
        assert.strictEqual((yield* shard.stats).cachedDevices, 2, "the two most recently disconnected")
        const d = yield* visit("tv-d")
        assert.strictEqual((yield* visit("tv-d")).id, d.id)
        // tv-a was forgotten: it comes back from storage, its version with it, and is not registered twice.
        const back = yield* visit("tv-a")
        assert.notStrictEqual(back, a)
        assert.strictEqual(back.lastVersion, 7)
        assert.strictEqual((yield* storage.counts).devices, 4)
        assert.strictEqual((yield* shard.stats).registeredDevices, 4)
      }).pipe(Effect.provide(ShardStorage.layerTest)),
    30_000
  )

  it.live(
    "lets in devices with their token, registers them once, refuses forged tokens and a full shard",
    () =>
      Effect.gen(function*() {
        const shard = yield* ShardManager
        const storage = yield* ShardStorage
        const a = yield* shard.authenticate("tv-a", deviceToken(SECRET, "tv-a"), "")
        assert.strictEqual(a.region, "eu-west", "a TV that does not say its region gets the shard's")
        const again = yield* shard.authenticate("tv-a", deviceToken(SECRET, "tv-a"), "")
        assert.strictEqual(again, a, "the same state object: one registry entry per device")
        const forged = yield* Effect.flip(shard.authenticate("tv-b", deviceToken("other-secret", "tv-b"), "eu"))
        assert.strictEqual(reasonOf(forged), "unauthorized")
        const swapped = yield* Effect.flip(shard.authenticate("tv-b", deviceToken(SECRET, "tv-a"), "eu"))
        assert.strictEqual(reasonOf(swapped), "unauthorized", "a token is bound to its device id")
        yield* shard.authenticate("tv-b", deviceToken(SECRET, "tv-b"), "us-east")
        const full = yield* Effect.flip(shard.authenticate("tv-c", deviceToken(SECRET, "tv-c"), "eu"))
        assert.strictEqual(reasonOf(full), "shard-full")
        assert.strictEqual((yield* storage.counts).devices, 2)
        const stats = yield* shard.stats
        assert.deepStrictEqual([stats.registeredDevices, stats.maxDevices], [2, 2])
      }).pipe(Effect.provide(manager)),
    30_000
  )

  it.live(
    "admits devices that arrive together in batches: each registered once, none past capacity",
    () =>
      Effect.gen(function*() {
        const shard = yield* ShardManager
        const storage = yield* ShardStorage
        // Six sessions at once, two of them the same TV, for a shard with room for two devices.
        const ids = ["tv-1", "tv-2", "tv-2", "tv-3", "tv-4", "tv-5"]
        const results = yield* Effect.forEach(
          ids,
          (id) => Effect.result(shard.authenticate(id, deviceToken(SECRET, id), "eu")),
          { concurrency: "unbounded" }
        )
        const admitted = new Set(results.flatMap((r) => (r._tag === "Success" ? [r.success.id] : [])))
        const refused = results.flatMap((r) => (r._tag === "Failure" ? [reasonOf(r.failure)] : []))
        assert.strictEqual(admitted.size, 2, `admitted ${[...admitted].join(", ")}`)
        assert.isTrue(refused.every((reason) => reason === "shard-full"), refused.join(", "))
        assert.strictEqual((yield* storage.counts).devices, 2)
        assert.strictEqual((yield* shard.stats).registeredDevices, 2)
        // A restarted shard (a new manager over the same storage) finds them in one lookup.
        const restarted = yield* buildManager(managerOnly(2))
        const again = yield* Effect.forEach(
          [...admitted],
          (id) => restarted.authenticate(id, deviceToken(SECRET, id), "ignored"),
          { concurrency: "unbounded" }
        )
        assert.deepStrictEqual(again.map((d) => d.region), ["eu", "eu"], "the stored region, not the one said now")
      }).pipe(Effect.scoped, Effect.provide(manager)),
    30_000
  )

  it.live(
    "a registration the database refuses fails only the new devices of the batch; known ones are let in",
    () =>
      Effect.gen(function*() {
        const storage = yield* ShardStorage
        yield* storage.registerDevice({ id: "tv-known", tokenHash: "h", region: "eu" })
        // The same database, but inserts of new devices fail (a full disk, say).
        const refusing = Layer.succeed(ShardStorage, {
          ...storage,
          registerDevices: () => Effect.fail(new StorageError({ operation: "registerDevices", message: "disk full" }))
        })
        const shard = yield* buildManager(managerOnly(10).pipe(Layer.provide(refusing)))
        const [known, fresh] = yield* Effect.forEach(
          ["tv-known", "tv-new"],
          (id) => Effect.result(shard.authenticate(id, deviceToken(SECRET, id), "eu")),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(known?._tag === "Success" ? known.success.id : "refused", "tv-known")
        assert.strictEqual(fresh?._tag === "Failure" ? reasonOf(fresh.failure) : "admitted", "storage: disk full")
      }).pipe(Effect.scoped, Effect.provide(ShardStorage.layerTest)),
    30_000
  )

  it.live(
    "keeps the federation namespace for workers: devices cannot use it, workers need the secret",
    () =>
      Effect.gen(function*() {
        const shard = yield* ShardManager
        const asDevice = yield* Effect.flip(
          shard.authenticate("federation:w1", deviceToken(SECRET, "federation:w1"), "eu")
        )
        assert.strictEqual(reasonOf(asDevice), "unauthorized")
        yield* shard.authenticatePeer("federation:w1", deviceToken(SECRET, "federation:w1"))
        const forged = yield* Effect.flip(shard.authenticatePeer("federation:w1", "nope"))
        assert.strictEqual(forged.reason, "unauthorized")
        const notAWorker = yield* Effect.flip(shard.authenticatePeer("tv-a", deviceToken(SECRET, "tv-a")))
        assert.strictEqual(notAWorker.reason, "unauthorized")
      }).pipe(Effect.provide(manager)),
    30_000
  )
})
