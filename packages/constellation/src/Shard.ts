/**
 * One constellation shard as a single layer: storage (PostgreSQL + pgvector, or embedded
 * PGlite), device registry, ingestion and aggregation, federation rounds, the sync endpoint on
 * the chosen transport, the management REST API and Prometheus metrics on their own ports.
 * The server app, the demo and the load test all start a shard through this.
 */
import { NodeHttpServer } from "@effect/platform-node"
import { certificateSha256, type ListenOptions, type TransportChoice, transportLayer } from "@omega/sync"
import { Duration, Effect, Layer, Redacted } from "effect"
import { HttpRouter } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import { createServer } from "node:http"
import { Federation } from "./Federation.ts"
import { defaultIngestionConfig, Ingestion, type IngestionConfig } from "./Ingestion.ts"
import { managementLayer } from "./ManagementApi.ts"
import { ShardManager } from "./ShardManager.ts"
import { ShardStorage } from "./ShardStorage.ts"
import { SyncServer } from "./SyncServer.ts"

export interface ShardOptions {
  readonly shardId: string
  readonly region: string
  readonly maxDevices: number
  readonly fleetSecret: string | Redacted.Redacted<string>
  /** PostgreSQL URL; absent means embedded PGlite (in `pgliteDir` when given, else in memory). */
  readonly postgresUrl?: string | undefined
  /** A PostgreSQL schema of the shard's own (created if missing). */
  readonly postgresSchema?: string | undefined
  readonly pgliteDir?: string | undefined
  readonly transport: TransportChoice
  readonly sync: ListenOptions
  readonly host: string
  /** 0 disables the management API. */
  readonly httpPort: number
  /** 0 disables the metrics endpoint. */
  readonly metricsPort: number
  readonly ingestion?: Partial<IngestionConfig>
  readonly federationEvery?: Duration.Input
}

export const storageLayer = (options: Pick<ShardOptions, "postgresUrl" | "postgresSchema" | "pgliteDir">) =>
  options.postgresUrl !== undefined ?
    ShardStorage.layerPg(
      options.postgresSchema === undefined ?
        { url: options.postgresUrl } :
        { url: options.postgresUrl, schema: options.postgresSchema }
    ) :
    ShardStorage.layerPglite(
      options.pgliteDir === undefined ? { ownThread: true } : { ownThread: true, dataDir: options.pgliteDir }
    )

/** What the core services need; storage, transport and the HTTP ports are the caller's. */
export type ShardCoreOptions = Pick<
  ShardOptions,
  "shardId" | "region" | "maxDevices" | "fleetSecret" | "sync" | "ingestion" | "federationEvery"
>

/** The shard's core services, over a ShardStorage and a SyncTransport the caller provides (no HTTP). */
export const shardCore = (options: ShardCoreOptions) => {
  const core = SyncServer.layer({ listen: options.sync, helloTimeout: Duration.seconds(5) }).pipe(
    Layer.provideMerge(Federation.layer({ every: options.federationEvery ?? Duration.minutes(1) })),
    Layer.provideMerge(Ingestion.layer({ ...defaultIngestionConfig, ...options.ingestion })),
    Layer.provideMerge(ShardManager.layer({
      shardId: options.shardId,
      defaultRegion: options.region,
      maxDevices: options.maxDevices,
      fleetSecret: Redacted.isRedacted(options.fleetSecret) ?
        options.fleetSecret :
        Redacted.make(options.fleetSecret)
    }))
  )
  return core
}

/** A whole shard: core services, management API and metrics, each on its port. */
export const shardLayer = (options: ShardOptions) => {
  const http = <E, R>(port: number, routes: Layer.Layer<never, E, R>) =>
    port === 0 ? Layer.empty : HttpRouter.serve(routes, { disableLogger: true, disableListenLog: true }).pipe(
      Layer.provide(NodeHttpServer.layer(createServer, { port, host: options.host }))
    )
  // The API reports the sync port the transport actually bound (0 in options means any free port).
  const api = Layer.unwrap(Effect.gen(function*() {
    const server = yield* SyncServer
    return http(
      options.httpPort,
      managementLayer({
        syncPort: server.port,
        region: options.region,
        transport: options.transport,
        pin: syncPin(options)
      })
    )
  }))
  return Layer.mergeAll(api, http(options.metricsPort, PrometheusMetrics.layerHttp())).pipe(
    Layer.provideMerge(shardCore(options)),
    Layer.provide(Layer.mergeAll(storageLayer(options), transportLayer(options.transport)))
  )
}

/** What TVs pin for this shard: its QUIC peer id, or its WebTransport certificate's SHA-256 in hex. */
export const syncPin = (options: Pick<ShardOptions, "transport" | "sync">): string | undefined =>
  options.transport === "quic" ?
    options.sync.identity?.peerId :
    options.transport === "webtransport" && options.sync.certificate !== undefined ?
    Buffer.from(certificateSha256(options.sync.certificate.certificate)).toString("hex") :
    undefined
