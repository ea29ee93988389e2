/** `omega-shard`: one constellation shard, configured from the environment (see ServerConfig.ts). */
import { NodeRuntime } from "@effect/platform-node"
import { shardLayer, syncPin, SyncServer } from "@omega/constellation"
import { Effect, Layer } from "effect"
import { shardOptionsFromEnv } from "./ServerConfig.ts"

const program = Effect.gen(function*() {
  const { options } = yield* shardOptionsFromEnv
  // What a TV (or `omega simulate --pin`) pins: the QUIC peer id, or the certificate's SHA-256.
  const pin = `${options.transport === "quic" ? "QUIC peer id" : "certificate sha256"} ${syncPin(options)}`
  return yield* Layer.launch(
    Layer.effectDiscard(Effect.gen(function*() {
      const server = yield* SyncServer
      yield* Effect.logInfo(
        `shard ${options.shardId} (${options.region}) ready: sync ${options.transport} on ${server.host}:${server.port}, ` +
          `api :${options.httpPort}, metrics :${options.metricsPort}, storage ${
            options.postgresUrl === undefined
              ? `PGlite${options.pgliteDir ? ` at ${options.pgliteDir}` : " (memory)"}`
              : "PostgreSQL"
          }, ${pin}`
      )
    })).pipe(Layer.provide(shardLayer(options)))
  )
})

NodeRuntime.runMain(program)
