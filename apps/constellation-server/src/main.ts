/** `omega-shard`: one constellation shard, configured from the environment (see ServerConfig.ts). */
import { NodeRuntime } from "@effect/platform-node"
import { shardLayer, SyncServer } from "@omega/constellation"
import { Effect, Layer } from "effect"
import { shardOptionsFromEnv } from "./ServerConfig.ts"

const program = Effect.gen(function*() {
  const { identity, options } = yield* shardOptionsFromEnv
  return yield* Layer.launch(
    Layer.effectDiscard(Effect.gen(function*() {
      const server = yield* SyncServer
      yield* Effect.logInfo(
        `shard ${options.shardId} (${options.region}) ready: sync ${options.transport} on ${server.host}:${server.port}, ` +
          `api :${options.httpPort}, metrics :${options.metricsPort}, storage ${
            options.postgresUrl === undefined
              ? `PGlite${options.pgliteDir ? ` at ${options.pgliteDir}` : " (memory)"}`
              : "PostgreSQL"
          }${options.transport === "quic" ? `, QUIC peer id ${identity.peerId}` : ""}`
      )
    })).pipe(Layer.provide(shardLayer(options)))
  )
})

NodeRuntime.runMain(program)
