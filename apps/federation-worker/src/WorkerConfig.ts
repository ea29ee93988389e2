/**
 * The federation worker's configuration from the environment. SHARDS lists the shards as
 * `id=host:port#pin` separated by commas, where the pin is the shard certificate's SHA-256 (hex)
 * for WebTransport or the shard's peer id for QUIC.
 */
import { defaultCrossShardConfig, type ShardEndpoint } from "@omega/constellation"
import { Config, Data, Duration, Effect, Option } from "effect"

/** A setting the worker cannot start without, or cannot use. */
export class WorkerConfigError extends Data.TaggedError("WorkerConfigError")<{ readonly message: string }> {}

export const workerConfig = Config.all({
  workerId: Config.String("WORKER_ID").pipe(Config.withDefault("worker-0")),
  fleetSecret: Config.Redacted("FLEET_SECRET").pipe(Config.option),
  shards: Config.String("SHARDS").pipe(Config.option),
  transport: Config.Literals(["webtransport", "quic"], "TRANSPORT").pipe(Config.withDefault("webtransport" as const)),
  everyMs: Config.Int("ROUND_EVERY_MS").pipe(Config.withDefault(60_000)),
  minDevices: Config.Int("MIN_DEVICES").pipe(Config.withDefault(defaultCrossShardConfig.averaging.minDevices)),
  metricsPort: Config.Port("METRICS_PORT").pipe(Config.withDefault(9465)),
  host: Config.String("HOST").pipe(Config.withDefault("127.0.0.1"))
})

/** The worker's settings from the environment: FLEET_SECRET and SHARDS have no default. */
export const workerSettingsFromEnv = Effect.gen(function*() {
  const env = yield* workerConfig
  if (Option.isNone(env.fleetSecret)) {
    return yield* new WorkerConfigError({
      message: "FLEET_SECRET must be set (it has no default): the worker authenticates to the shards with it"
    })
  }
  if (Option.isNone(env.shards)) {
    return yield* new WorkerConfigError({
      message: "SHARDS must be set (it has no default): the shards to federate, as id=host:port#pin separated by commas"
    })
  }
  const shards = yield* parseShards(env.shards.value, env.transport)
  if (shards.length === 0) return yield* new WorkerConfigError({ message: "SHARDS names no shard" })
  return { ...env, fleetSecret: env.fleetSecret.value, shards }
})

/** Parses SHARDS into endpoints; a malformed entry is a typed error naming it. */
export const parseShards = (spec: string, transport: "webtransport" | "quic") =>
  Effect.forEach(spec.split(",").map((s) => s.trim()).filter((s) => s.length > 0), (entry) => {
    const match = /^([^=]+)=([^:#]+):(\d+)#(.+)$/.exec(entry)
    if (match === null) {
      return Effect.fail(new WorkerConfigError({ message: `SHARDS entry "${entry}" is not id=host:port#pin` }))
    }
    const [, shardId, host, port, pin] = match as unknown as [string, string, string, string, string]
    const endpoint = transport === "quic" ?
      { host, port: Number(port), serverPeerId: pin } :
      { host, port: Number(port), certificateHash: Uint8Array.from(Buffer.from(pin, "hex")) }
    return Effect.succeed({ shardId, endpoint } satisfies ShardEndpoint)
  })

export const roundEvery = (ms: number) => Duration.millis(ms)
