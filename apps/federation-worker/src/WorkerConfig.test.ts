import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Redacted } from "effect"
import { workerSettingsFromEnv } from "./WorkerConfig.ts"

const fromEnv = (env: Record<string, string>) =>
  workerSettingsFromEnv.pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env))))

const SHARDS = "a=127.0.0.1:4433#00ff,b=10.0.0.2:4434#abcd"

describe("federation worker configuration", () => {
  it.effect("refuses to start without FLEET_SECRET or SHARDS, with a typed error naming the setting", () =>
    Effect.gen(function*() {
      const noSecret = yield* Effect.flip(fromEnv({ SHARDS }))
      assert.strictEqual(noSecret._tag, "WorkerConfigError")
      assert.include(noSecret.message, "FLEET_SECRET")
      const noShards = yield* Effect.flip(fromEnv({ FLEET_SECRET: "s3cret" }))
      assert.strictEqual(noShards._tag, "WorkerConfigError")
      assert.include(noShards.message, "SHARDS")
      const empty = yield* Effect.flip(fromEnv({ FLEET_SECRET: "s3cret", SHARDS: " , " }))
      assert.include(empty.message, "no shard")
    }))

  it.effect("names a malformed SHARDS entry", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(fromEnv({ FLEET_SECRET: "s3cret", SHARDS: "a=127.0.0.1#00ff" }))
      assert.strictEqual(error._tag, "WorkerConfigError")
      assert.include(error.message, `"a=127.0.0.1#00ff"`)
    }))

  it.effect("parses the shards and takes the environment over the defaults", () =>
    Effect.gen(function*() {
      const config = yield* fromEnv({ FLEET_SECRET: "s3cret", SHARDS, TRANSPORT: "quic", ROUND_EVERY_MS: "5000" })
      assert.strictEqual(Redacted.value(config.fleetSecret), "s3cret")
      assert.strictEqual(config.everyMs, 5_000)
      assert.strictEqual(config.workerId, "worker-0")
      assert.deepStrictEqual(config.shards.map((s) => s.shardId), ["a", "b"])
      assert.deepStrictEqual(config.shards[1]!.endpoint, { host: "10.0.0.2", port: 4434, serverPeerId: "abcd" })
    }))
})
