import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Redacted } from "effect"
import { fileURLToPath } from "node:url"
import { shardOptionsFromEnv } from "./ServerConfig.ts"

const fromEnv = (env: Record<string, string>) =>
  shardOptionsFromEnv.pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env))))

/** The typed error a setting gets, with FLEET_SECRET set so that it is not the one refused. */
const refused = (env: Record<string, string>) =>
  Effect.gen(function*() {
    const error = yield* Effect.flip(fromEnv({ FLEET_SECRET: "s3cret", ...env }))
    assert.strictEqual(error._tag, "ServerConfigError")
    return error.message
  })

// A file that exists and can be read, but holds neither a certificate nor a key.
const READABLE_FILE = fileURLToPath(import.meta.url)
const MISSING_FILE = "/nonexistent/omega-shard-test.pem"

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
      assert.strictEqual(options.maxDevices, 4_000_000)
      assert.strictEqual(options.ingestion?.minSyncInterval, 60_000)
      assert.strictEqual(options.ingestion?.pushEvery, 60_000)
      assert.isUndefined(options.ingestion?.materializeEvery)
      assert.strictEqual(Redacted.value(options.fleetSecret as Redacted.Redacted<string>), "s3cret")
    }))

  it.effect("accepts 0 for MIN_SYNC_INTERVAL_MS and PUSH_EVERY_MS, and numbers in range", () =>
    Effect.gen(function*() {
      const { options } = yield* fromEnv({
        FLEET_SECRET: "s3cret",
        MIN_SYNC_INTERVAL_MS: "0",
        PUSH_EVERY_MS: "0",
        MATERIALIZE_EVERY_MS: "250",
        MAX_DEVICES: "10",
        SYNC_PORT: "65535",
        HTTP_PORT: "1"
      })
      assert.strictEqual(options.ingestion?.minSyncInterval, 0)
      assert.strictEqual(options.ingestion?.pushEvery, 0)
      assert.strictEqual(options.ingestion?.materializeEvery, 250)
      assert.strictEqual(options.maxDevices, 10)
      assert.strictEqual(options.sync.port, 65_535)
      assert.strictEqual(options.httpPort, 1)
    }))

  it.effect("refuses a negative MIN_SYNC_INTERVAL_MS, naming the variable, the value and what is allowed", () =>
    Effect.gen(function*() {
      const message = yield* refused({ MIN_SYNC_INTERVAL_MS: "-1" })
      assert.include(message, "MIN_SYNC_INTERVAL_MS")
      assert.include(message, `"-1"`)
      assert.include(message, ">= 0")
    }))

  it.effect("refuses MATERIALIZE_EVERY_MS=0 (the materializer would poll without a pause)", () =>
    Effect.gen(function*() {
      const message = yield* refused({ MATERIALIZE_EVERY_MS: "0" })
      assert.include(message, "MATERIALIZE_EVERY_MS")
      assert.include(message, `"0"`)
      assert.include(message, ">= 1")
    }))

  it.effect("refuses a MAX_DEVICES that is not a positive whole number", () =>
    Effect.gen(function*() {
      for (const value of ["0", "-5", "1.5", "many"]) {
        const message = yield* refused({ MAX_DEVICES: value })
        assert.include(message, "MAX_DEVICES")
        assert.include(message, JSON.stringify(value))
        assert.include(message, ">= 1")
      }
    }))

  it.effect("refuses ports outside 1-65535 and intervals that are not whole numbers of at least 0", () =>
    Effect.gen(function*() {
      for (const name of ["SYNC_PORT", "HTTP_PORT", "METRICS_PORT"]) {
        for (const value of ["0", "65536", "-1", "80.5", "http"]) {
          const message = yield* refused({ [name]: value })
          assert.include(message, name)
          assert.include(message, JSON.stringify(value))
          assert.include(message, "from 1 to 65535")
        }
      }
      for (const name of ["MIN_SYNC_INTERVAL_MS", "PUSH_EVERY_MS", "MATERIALIZE_EVERY_MS"]) {
        for (const value of ["-1", "1.5", "1e3", "soon"]) {
          const message = yield* refused({ [name]: value })
          assert.include(message, name)
          assert.include(message, JSON.stringify(value))
        }
      }
    }))

  it.effect("refuses TLS_CERT_FILE without TLS_KEY_FILE and the reverse, instead of a dev certificate", () =>
    Effect.gen(function*() {
      const certOnly = yield* refused({ TLS_CERT_FILE: READABLE_FILE })
      assert.include(certOnly, "TLS_CERT_FILE is set but TLS_KEY_FILE is not")
      const keyOnly = yield* refused({ TLS_KEY_FILE: READABLE_FILE })
      assert.include(keyOnly, "TLS_KEY_FILE is set but TLS_CERT_FILE is not")
    }))

  it.effect("names a certificate, key or identity file that cannot be read, and why", () =>
    Effect.gen(function*() {
      const cert = yield* refused({ TLS_CERT_FILE: MISSING_FILE, TLS_KEY_FILE: READABLE_FILE })
      assert.include(cert, "TLS_CERT_FILE")
      assert.include(cert, MISSING_FILE)
      assert.include(cert, "ENOENT")
      const key = yield* refused({ TLS_CERT_FILE: READABLE_FILE, TLS_KEY_FILE: MISSING_FILE })
      assert.include(key, "TLS_KEY_FILE")
      assert.include(key, MISSING_FILE)
      const directory = fileURLToPath(new URL(".", import.meta.url))
      const notAFile = yield* refused({ TLS_CERT_FILE: READABLE_FILE, TLS_KEY_FILE: directory })
      assert.include(notAFile, "TLS_KEY_FILE")
      assert.include(notAFile, "EISDIR")
      const identity = yield* refused({ QUIC_IDENTITY_FILE: MISSING_FILE })
      assert.include(identity, "QUIC_IDENTITY_FILE")
      assert.include(identity, MISSING_FILE)
      const notAKey = yield* refused({ QUIC_IDENTITY_FILE: READABLE_FILE })
      assert.include(notAKey, "QUIC_IDENTITY_FILE")
      assert.include(notAKey, "no QUIC identity")
    }))
})
