import { assert, describe, it } from "@effect/vitest"
import { makeQuicIdentity } from "@omega/sync"
import { ConfigProvider, Effect, Redacted } from "effect"
import { MIN_K, workerSettingsFromEnv } from "./WorkerConfig.ts"

const fromEnv = (env: Record<string, string>) =>
  workerSettingsFromEnv.pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env))))

// Pins as shards print them: a QUIC peer id, or a certificate's SHA-256 as 64 hex digits.
const PEER_A = makeQuicIdentity().peerId
const PEER_B = makeQuicIdentity().peerId
const SHA_A = "00ff".repeat(16)
const SHA_B = "ABCD".repeat(16)
const SHARDS = `a=127.0.0.1:4433#${PEER_A},b=10.0.0.2:4434#${PEER_B}`

/** The typed error's message, with FLEET_SECRET and SHARDS set so that neither is the one refused. */
const refused = (env: Record<string, string>) =>
  Effect.gen(function*() {
    const error = yield* Effect.flip(fromEnv({ FLEET_SECRET: "s3cret", SHARDS, TRANSPORT: "quic", ...env }))
    assert.strictEqual(error._tag, "WorkerConfigError")
    return error.message
  })

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
      assert.strictEqual(config.minDevices, 3)
      assert.strictEqual(config.metricsPort, 9465)
      assert.deepStrictEqual(config.shards.map((s) => s.shardId), ["a", "b"])
      assert.deepStrictEqual(config.shards[1]!.endpoint, { host: "10.0.0.2", port: 4434, serverPeerId: PEER_B })
    }))

  it.effect("takes a WebTransport pin as the certificate's SHA-256 in 64 hex digits, either case", () =>
    Effect.gen(function*() {
      const config = yield* fromEnv({ FLEET_SECRET: "s3cret", SHARDS: `a=h:1#${SHA_A},b=h:2#${SHA_B}` })
      const [a, b] = config.shards.map((s) => [...s.endpoint.certificateHash!])
      assert.deepStrictEqual(a, Array.from({ length: 16 }, () => [0x00, 0xff]).flat())
      assert.deepStrictEqual(b, Array.from({ length: 16 }, () => [0xab, 0xcd]).flat())
    }))

  it.effect("names a SHARDS entry whose pin is not the transport's", () =>
    Effect.gen(function*() {
      const webTransport = (pin: string) =>
        refused({ TRANSPORT: "webtransport", SHARDS: `a=h:1#${SHA_A},b=h:2#${pin}` })
      for (const pin of ["00ff", `${SHA_A}00`, "zz".repeat(32), PEER_A]) {
        const message = yield* webTransport(pin)
        assert.include(message, `"b=h:2#${pin}"`)
        assert.include(message, "64 hex digits")
      }
      for (const pin of ["abcd", SHA_A, `${PEER_A}x`, PEER_A.replace("W", "0")]) {
        const message = yield* refused({ SHARDS: `a=h:1#${PEER_A},b=h:2#${pin}` })
        assert.include(message, `"b=h:2#${pin}"`)
        assert.include(message, "peer id")
      }
    }))

  it.effect("names a SHARDS entry with a port outside 1-65535 or a repeated shard id", () =>
    Effect.gen(function*() {
      for (const port of ["0", "65536"]) {
        const message = yield* refused({ SHARDS: `a=h:${port}#${PEER_A}` })
        assert.include(message, `"a=h:${port}#${PEER_A}"`)
        assert.include(message, "1-65535")
      }
      const repeated = yield* refused({ SHARDS: `a=h:1#${PEER_A},a=h:2#${PEER_B}` })
      assert.include(repeated, `"a=h:2#${PEER_B}"`)
      assert.include(repeated, "repeats")
    }))

  it.effect("refuses a MIN_DEVICES below the shards' k, instead of publishing smaller groups or dying", () =>
    Effect.gen(function*() {
      assert.strictEqual(MIN_K, 3)
      for (const value of ["2", "1", "0", "-3", "3.5", "three"]) {
        const message = yield* refused({ MIN_DEVICES: value })
        assert.include(message, "MIN_DEVICES")
        assert.include(message, JSON.stringify(value))
        assert.include(message, ">= 3")
      }
      const config = yield* fromEnv({ FLEET_SECRET: "s3cret", SHARDS, TRANSPORT: "quic", MIN_DEVICES: "5" })
      assert.strictEqual(config.minDevices, 5)
    }))

  it.effect("refuses ROUND_EVERY_MS=0 (rounds back to back) and a METRICS_PORT outside 1-65535", () =>
    Effect.gen(function*() {
      for (const value of ["0", "-1000", "1.5"]) {
        const message = yield* refused({ ROUND_EVERY_MS: value })
        assert.include(message, "ROUND_EVERY_MS")
        assert.include(message, JSON.stringify(value))
        assert.include(message, ">= 1")
      }
      for (const value of ["0", "65536"]) {
        const message = yield* refused({ METRICS_PORT: value })
        assert.include(message, "METRICS_PORT")
        assert.include(message, "from 1 to 65535")
      }
    }))
})
