/** The shard server's configuration, from the environment with defaults for a laptop. */
import type { ShardOptions } from "@omega/constellation"
import { makeDevCertificate, makeQuicIdentity, quicIdentityFromPrivateKey, type TransportChoice } from "@omega/sync"
import { Config, Data, Effect, Option } from "effect"

export const serverConfig = Config.all({
  shardId: Config.String("SHARD_ID").pipe(Config.withDefault("shard-0")),
  region: Config.String("REGION").pipe(Config.withDefault("eu-west")),
  maxDevices: Config.Int("MAX_DEVICES").pipe(Config.withDefault(4_000_000)),
  fleetSecret: Config.Redacted("FLEET_SECRET").pipe(Config.option),
  postgresUrl: Config.String("POSTGRES_URL").pipe(Config.option),
  postgresSchema: Config.String("POSTGRES_SCHEMA").pipe(Config.option),
  pgliteDir: Config.String("PGLITE_DIR").pipe(Config.option),
  transport: Config.Literals(["webtransport", "quic"], "TRANSPORT").pipe(Config.withDefault("webtransport" as const)),
  host: Config.String("HOST").pipe(Config.withDefault("127.0.0.1")),
  syncPort: Config.Port("SYNC_PORT").pipe(Config.withDefault(4433)),
  httpPort: Config.Port("HTTP_PORT").pipe(Config.withDefault(8080)),
  metricsPort: Config.Port("METRICS_PORT").pipe(Config.withDefault(9464)),
  certFile: Config.String("TLS_CERT_FILE").pipe(Config.option),
  keyFile: Config.String("TLS_KEY_FILE").pipe(Config.option),
  quicIdentityFile: Config.String("QUIC_IDENTITY_FILE").pipe(Config.option),
  minSyncIntervalMs: Config.Int("MIN_SYNC_INTERVAL_MS").pipe(Config.withDefault(60_000)),
  pushEveryMs: Config.Int("PUSH_EVERY_MS").pipe(Config.withDefault(60_000)),
  materializeEveryMs: Config.Int("MATERIALIZE_EVERY_MS").pipe(Config.option)
})

/** A setting the shard cannot start without, or cannot use. */
export class ServerConfigError extends Data.TaggedError("ServerConfigError")<{ readonly message: string }> {}

/** Turns the environment into shard options; without a certificate a short-lived dev one is made. */
export const shardOptionsFromEnv = Effect.gen(function*() {
  const env = yield* serverConfig
  if (Option.isNone(env.fleetSecret)) {
    return yield* new ServerConfigError({
      message: "FLEET_SECRET must be set (it has no default): device tokens are derived from it"
    })
  }
  const fs = yield* Effect.promise(() => import("node:fs/promises"))
  const certFile = Option.getOrUndefined(env.certFile)
  const keyFile = Option.getOrUndefined(env.keyFile)
  const certificate = certFile !== undefined && keyFile !== undefined ?
    {
      certificate: yield* Effect.promise(() => fs.readFile(certFile, "utf8")),
      privateKey: yield* Effect.promise(() => fs.readFile(keyFile, "utf8"))
    } :
    yield* makeDevCertificate({ hosts: [env.host, "localhost"] })
  // QUIC: the shard's Ed25519 identity (TVs pin its peer id); a new one per start when not configured.
  const identityFile = Option.getOrUndefined(env.quicIdentityFile)
  const identity = identityFile === undefined ?
    makeQuicIdentity() :
    yield* quicIdentityFromPrivateKey(new Uint8Array(yield* Effect.promise(() => fs.readFile(identityFile))))
  const options: ShardOptions = {
    shardId: env.shardId,
    region: env.region,
    maxDevices: env.maxDevices,
    fleetSecret: env.fleetSecret.value,
    postgresUrl: Option.getOrUndefined(env.postgresUrl),
    postgresSchema: Option.getOrUndefined(env.postgresSchema),
    pgliteDir: Option.getOrUndefined(env.pgliteDir),
    transport: env.transport as TransportChoice,
    sync: { host: env.host, port: env.syncPort, certificate, identity },
    host: env.host,
    httpPort: env.httpPort,
    metricsPort: env.metricsPort,
    ingestion: {
      minSyncInterval: env.minSyncIntervalMs,
      pushEvery: env.pushEveryMs,
      // Applying the durable log to device_patterns is opt-in: it re-decodes every frame and writes every
      // pattern row into an HNSW index (~600-1,900 rows/s), more work per delta than ingesting it.
      materializeEvery: Option.getOrUndefined(env.materializeEveryMs)
    }
  }
  return { options, certificate, identity }
})
