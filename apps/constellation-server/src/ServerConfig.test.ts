import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Redacted } from "effect"
import { shardOptionsFromEnv } from "./ServerConfig.ts"

const fromEnv = (env: Record<string, string>) =>
  shardOptionsFromEnv.pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env))))

describe("shard configuration", () => {
  it.effect("refuses to start without FLEET_SECRET, with a typed error naming it", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(fromEnv({ SHARD_ID: "shard-1" }))
      assert.strictEqual(error._tag, "ServerConfigError")
      assert.include(error.message, "FLEET_SECRET")
    }))

  it.effect("takes the environment over the defaults", () =>
    Effect.gen(function*() {
      const { options } = yield* fromEnv({ FLEET_SECRET: "s3cret", SHARD_ID: "shard-7", TRANSPORT: "quic" })
      assert.strictEqual(options.shardId, "shard-7")
      assert.strictEqual(options.transport, "quic")
      assert.strictEqual(options.region, "eu-west")
      assert.strictEqual(options.sync.port, 4433)
      assert.strictEqual(Redacted.value(options.fleetSecret as Redacted.Redacted<string>), "s3cret")
    }))
})
