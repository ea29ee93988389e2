/**
 * The federation worker's configuration from the environment. SHARDS lists the shards as
 * `id=host:port#pin` separated by commas, where the pin is the shard certificate's SHA-256 (hex)
 * for WebTransport or the shard's peer id for QUIC.
 */
import {
  defaultAggregatorConfig,
  defaultCrossShardConfig,
  integerSetting,
  orDefault,
  PORT_RANGE,
  type ShardEndpoint
} from "@omega/constellation"
import { type NetworkTransport, pinnedEndpoint } from "@omega/sync"
import { Config, Data, Duration, Effect, Option } from "effect"

/** A setting the worker cannot start without, or cannot use. */
export class WorkerConfigError extends Data.TaggedError("WorkerConfigError")<{ readonly message: string }> {}

/**
 * The lowest k the worker accepts: the k every shard publishes its own groups with (the shard does
 * not take it from the environment), so federating never publishes a smaller group than a shard would.
 */
export const MIN_K = defaultAggregatorConfig.minDevices

/** The environment, every number checked: one the worker cannot use is a WorkerConfigError naming it. */
export const workerConfig = Effect.all({
  workerId: Config.String("WORKER_ID").pipe(Config.withDefault("worker-0")),
  fleetSecret: Config.Redacted("FLEET_SECRET").pipe(Config.option),
  shards: Config.String("SHARDS").pipe(Config.option),
  transport: Config.Literals(["webtransport", "quic"], "TRANSPORT").pipe(Config.withDefault("webtransport" as const)),
  // 0 would run rounds back to back.
  everyMs: integerSetting("ROUND_EVERY_MS", { min: 1 }).pipe(orDefault(60_000)),
  minDevices: integerSetting("MIN_DEVICES", { min: MIN_K, hint: "k-anonymity: the shards' own k is the floor" }).pipe(
    orDefault(defaultCrossShardConfig.averaging.minDevices)
  ),
  metricsPort: integerSetting("METRICS_PORT", PORT_RANGE).pipe(orDefault(9465)),
  host: Config.String("HOST").pipe(Config.withDefault("127.0.0.1"))
}).pipe(Effect.catchTag("SettingError", (error) => Effect.fail(new WorkerConfigError({ message: error.message }))))

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

/**
 * Parses SHARDS into endpoints; a malformed entry, a port outside 1-65535, a pin that is not the
 * transport's (a QUIC peer id, or a certificate SHA-256 as 64 hex digits) or a repeated id is a
 * typed error naming the entry.
 */
export const parseShards = (spec: string, transport: NetworkTransport) =>
  Effect.gen(function*() {
    const entries = spec.split(",").map((s) => s.trim()).filter((s) => s.length > 0)
    const shards: Array<ShardEndpoint> = []
    for (const entry of entries) {
      const invalid = (problem: string) => new WorkerConfigError({ message: `SHARDS entry "${entry}" ${problem}` })
      const match = /^([^=]+)=([^:#]+):(\d+)#(.+)$/.exec(entry)
      if (match === null) return yield* invalid("is not id=host:port#pin")
      const [, shardId, host, portText, pin] = match as unknown as [string, string, string, string, string]
      const port = Number(portText)
      if (!(port >= PORT_RANGE.min && port <= PORT_RANGE.max!)) {
        return yield* invalid(`has port ${portText}, not 1-65535`)
      }
      if (shards.some((s) => s.shardId === shardId)) return yield* invalid(`repeats the shard id "${shardId}"`)
      const endpoint = yield* pinnedEndpoint({ transport, host, port, pin }).pipe(
        Effect.mapError((error) => invalid(`has a bad pin for TRANSPORT=${transport}: ${error.message}`))
      )
      shards.push({ shardId, endpoint })
    }
    return shards
  })

export const roundEvery = (ms: number) => Duration.millis(ms)
