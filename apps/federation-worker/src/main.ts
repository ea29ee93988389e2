/** `omega-federation`: the cross-shard federation worker (configuration: WorkerConfig.ts). */
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import {
  defaultCoWatchConfig,
  defaultCrossShardConfig,
  federateAcrossShards,
  FederationWorker
} from "@omega/constellation"
import { transportLayer } from "@omega/sync"
import { Duration, Effect, Layer, Redacted } from "effect"
import { HttpRouter } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import { createServer } from "node:http"
import { workerSettingsFromEnv } from "./WorkerConfig.ts"

const program = Effect.gen(function*() {
  const config = yield* workerSettingsFromEnv
  const shards = config.shards
  const worker = FederationWorker.layer({
    workerId: config.workerId,
    fleetSecret: Redacted.value(config.fleetSecret),
    shards,
    every: Duration.millis(config.everyMs),
    roundTimeout: Duration.seconds(10),
    maxPatternsPerShard: 500,
    federate: federateAcrossShards({
      ...defaultCrossShardConfig,
      averaging: { ...defaultCrossShardConfig.averaging, minDevices: config.minDevices }
    }),
    // The same k for co-watch pairs as for pattern groups.
    coWatch: { ...defaultCoWatchConfig, minDevices: config.minDevices }
  }).pipe(
    Layer.provide(transportLayer(config.transport))
  )
  const metrics = HttpRouter.serve(PrometheusMetrics.layerHttp(), { disableLogger: true, disableListenLog: true }).pipe(
    Layer.provide(NodeHttpServer.layer(createServer, { port: config.metricsPort, host: config.host }))
  )
  yield* Effect.logInfo(
    `federation worker ${config.workerId}: ${shards.length} shards, a round every ${config.everyMs} ms`
  )
  return yield* Layer.launch(Layer.mergeAll(worker, metrics))
})

NodeRuntime.runMain(program)
