/** The shard server's configuration, from the environment with defaults for a laptop. */
import { integerSetting, orDefault, PORT_RANGE, type ShardOptions } from "@omega/constellation"
import { makeDevCertificate, makeQuicIdentity, quicIdentityFromPrivateKey, type TransportChoice } from "@omega/sync"
import { Config, Data, Effect, Option } from "effect"
import { readFile } from "node:fs/promises"

/** A setting the shard cannot start without, or cannot use. */
export class ServerConfigError extends Data.TaggedError("ServerConfigError")<{ readonly message: string }> {}

/** The environment, every number checked: one the shard cannot use is a ServerConfigError naming it. */
export const serverConfig = Effect.all({
  shardId: Config.String("SHARD_ID").pipe(Config.withDefault("shard-0")),
  region: Config.String("REGION").pipe(Config.withDefault("eu-west")),
  maxDevices: integerSetting("MAX_DEVICES", { min: 1 }).pipe(orDefault(4_000_000)),
  fleetSecret: Config.Redacted("FLEET_SECRET").pipe(Config.option),
  postgresUrl: Config.String("POSTGRES_URL").pipe(Config.option),
  postgresSchema: Config.String("POSTGRES_SCHEMA").pipe(Config.option),
  pgliteDir: Config.String("PGLITE_DIR").pipe(Config.option),
  transport: Config.Literals(["webtransport", "quic"], "TRANSPORT").pipe(Config.withDefault("webtransport" as const)),
  host: Config.String("HOST").pipe(Config.withDefault("127.0.0.1")),
  syncPort: integerSetting("SYNC_PORT", PORT_RANGE).pipe(orDefault(4433)),
  httpPort: integerSetting("HTTP_PORT", PORT_RANGE).pipe(orDefault(8080)),
  metricsPort: integerSetting("METRICS_PORT", PORT_RANGE).pipe(orDefault(9464)),
  certFile: Config.String("TLS_CERT_FILE").pipe(Config.option),
  keyFile: Config.String("TLS_KEY_FILE").pipe(Config.option),
  quicIdentityFile: Config.String("QUIC_IDENTITY_FILE").pipe(Config.option),
  // 0 is no rate limit: the load test runs its shard so.
  minSyncIntervalMs: integerSetting("MIN_SYNC_INTERVAL_MS", { min: 0, hint: "0 turns rate limiting off" }).pipe(
    orDefault(60_000)
  ),
  // 0 pushes every change at once, as the tests' shards do.
  pushEveryMs: integerSetting("PUSH_EVERY_MS", { min: 0 }).pipe(orDefault(60_000)),
  // 0 would have the materializer poll the database without a pause.
  materializeEveryMs: integerSetting("MATERIALIZE_EVERY_MS", { min: 1, hint: "unset turns materializing off" })
}).pipe(Effect.catchTag("SettingError", (error) => Effect.fail(new ServerConfigError({ message: error.message }))))

/** Turns the environment into shard options; without a certificate a short-lived dev one is made. */
export const shardOptionsFromEnv = Effect.gen(function*() {
  const env = yield* serverConfig
  if (Option.isNone(env.fleetSecret)) {
    return yield* new ServerConfigError({
      message: "FLEET_SECRET must be set (it has no default): device tokens are derived from it"
    })
  }
  if (Option.isSome(env.certFile) !== Option.isSome(env.keyFile)) {
    const [set, unset] = Option.isSome(env.certFile)
      ? ["TLS_CERT_FILE", "TLS_KEY_FILE"]
      : ["TLS_KEY_FILE", "TLS_CERT_FILE"]
    return yield* new ServerConfigError({
      message: `${set} is set but ${unset} is not: set both (certificate and key) or neither (a dev certificate)`
    })
  }
  const certificate = Option.isSome(env.certFile) && Option.isSome(env.keyFile) ?
    {
      certificate: (yield* readSettingFile("TLS_CERT_FILE", env.certFile.value)).toString("utf8"),
      privateKey: (yield* readSettingFile("TLS_KEY_FILE", env.keyFile.value)).toString("utf8")
    } :
    yield* makeDevCertificate({ hosts: [env.host, "localhost"] })
  // QUIC: the shard's Ed25519 identity (TVs pin its peer id); a new one per start when not configured.
  const identityFile = Option.getOrUndefined(env.quicIdentityFile)
  const identity = identityFile === undefined ?
    makeQuicIdentity() :
    yield* quicIdentityFromPrivateKey(new Uint8Array(yield* readSettingFile("QUIC_IDENTITY_FILE", identityFile))).pipe(
      Effect.mapError((error) =>
        new ServerConfigError({
          message: `QUIC_IDENTITY_FILE (${identityFile}) holds no QUIC identity: ${error.message}`
        })
      )
    )
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

/** The bytes of the file a setting names; one that cannot be read is a ServerConfigError saying why. */
function readSettingFile(name: string, path: string) {
  return Effect.tryPromise({
    try: () => readFile(path),
    catch: (cause) =>
      new ServerConfigError({
        message: `${name} (${path}) could not be read: ${cause instanceof Error ? cause.message : String(cause)}`
      })
  })
}
