/** What the end-to-end tests share: a shard, a TV (brain + sync client) on it, and waiting for pushes. */
import { assert } from "@effect/vitest"
import { defaultBrainConfig, OmegaBrain } from "@omega/brain"
import { deviceToken, shardCore, ShardStorage } from "@omega/constellation"
import { type ConnectOptions, type ListenOptions, SyncClient } from "@omega/sync"
import { Duration, Effect, Layer } from "effect"

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
