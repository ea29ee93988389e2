/** What the end-to-end tests share: a shard, a TV (brain + sync client) on it, and waiting for pushes. */
import { assert } from "@effect/vitest"
import { defaultBrainConfig, OmegaBrain } from "@omega/brain"
import { deviceToken, shardCore, ShardStorage, SyncServer } from "@omega/constellation"
import type { ShardOptions } from "@omega/sdk"
import { type ConnectOptions, type ListenOptions, makeQuicIdentity, SyncClient, SyncTransport } from "@omega/sync"
import { Context, Duration, Effect, Layer } from "effect"

/**
 * A shard on PGlite in memory that takes every sync at once and pushes its snapshot as soon as it
 * changes (no rate limit, no push window); the caller provides the transport.
 */
export const testShard = (options: {
  readonly shardId: string
  readonly fleetSecret: string
  readonly region: string
  readonly sync: ListenOptions
  readonly snapshotEvery: Duration.Input
  readonly federationEvery?: Duration.Input
}) =>
  shardCore({
    shardId: options.shardId,
    region: options.region,
    maxDevices: 100,
    fleetSecret: options.fleetSecret,
    sync: options.sync,
    ingestion: {
      minSyncInterval: Duration.zero,
      pushEvery: Duration.zero,
      pushSpread: Duration.zero,
      snapshotEvery: options.snapshotEvery
    },
    ...(options.federationEvery === undefined ? {} : { federationEvery: options.federationEvery })
  }).pipe(Layer.provideMerge(ShardStorage.layerTest))

/**
 * A test shard (as `testShard`) on real QUIC on 127.0.0.1, built in the caller's scope, and the
 * options an SDK TV of it opens with: its token, the shard's pin, and syncs the test drives itself
 * (timed pushes are an hour away), as `testTv` has them.
 */
export const testShardForSdk = (options: Omit<Parameters<typeof testShard>[0], "sync">) =>
  Effect.gen(function*() {
    const identity = makeQuicIdentity()
    const context = yield* Layer.build(
      testShard({ ...options, sync: { host: "127.0.0.1", port: 0, identity } }).pipe(
        Layer.provideMerge(SyncTransport.layerQuic())
      )
    )
    const tvOptions = (deviceId: string): ShardOptions => ({
      transport: "quic",
      host: "127.0.0.1",
      port: Context.get(context, SyncServer).port,
      pin: identity.peerId,
      deviceId,
      token: deviceToken(options.fleetSecret, deviceId),
      region: options.region,
      timing: { minIntervalMs: 3_600_000, maxIntervalMs: 7_200_000, reconnectBaseMs: 50, reconnectMaxMs: 1_000 }
    })
    return { context, tvOptions }
  })

/** A TV whose syncs the test drives itself (timed pushes are an hour away). */
export const testTv = (options: {
  readonly deviceId: string
  readonly fleetSecret: string
  readonly region: string
  readonly endpoint: ConnectOptions
}) =>
  SyncClient.layer({
    deviceId: options.deviceId,
    token: deviceToken(options.fleetSecret, options.deviceId),
    region: options.region,
    endpoint: options.endpoint,
    minInterval: Duration.hours(1),
    maxInterval: Duration.hours(2),
    pushAfterChanges: 1_000,
    changeCheckEvery: Duration.hours(1),
    ackTimeout: Duration.seconds(5),
    reconnectBase: Duration.millis(50),
    reconnectMax: Duration.seconds(1)
  }).pipe(Layer.provideMerge(OmegaBrain.layerTest({ ...defaultBrainConfig, runLearningLoops: false })))

/** Polls `check` for up to 10 s (pushes arrive asynchronously); fails the test naming `what`. */
export const eventually = <E, R>(check: Effect.Effect<boolean, E, R>, what: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 100; i++) {
      if (yield* check) return
      yield* Effect.sleep(Duration.millis(100))
    }
    assert.fail(`timed out waiting until ${what}`)
  })
