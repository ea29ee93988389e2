/**
 * The shard's management REST API (schema-first, effect http-api): health for load balancers
 * and Kubernetes probes, statistics, the shard list, announcing new content, and triggering a
 * federation round. Request bodies are validated by the same protocol schemas as sync frames.
 */
import { ContentId, decoder, EmbeddingFromNumbers, Genres, Title } from "@omega/protocol"
import { Clock, Effect, Layer, Schema } from "effect"
import { HttpApi, HttpApiBuilder, HttpApiEndpoint, HttpApiGroup } from "effect/http-api"
import { Federation } from "./Federation.ts"
import { Ingestion } from "./Ingestion.ts"
import { ShardManager } from "./ShardManager.ts"
import { ShardStorage } from "./ShardStorage.ts"

const Health = Schema.Struct({
  status: Schema.Literals(["ok", "degraded"]),
  shardId: Schema.String,
  uptimeSeconds: Schema.Number,
  database: Schema.Literals(["up", "down"]),
  activeDevices: Schema.Number,
  patternsStored: Schema.Number
})

export const ShardApiStats = Schema.Struct({
  shardId: Schema.String,
  registeredDevices: Schema.Number,
  maxDevices: Schema.Number,
  activeSessions: Schema.Number,
  activeDevices: Schema.Number,
  /** Devices held in memory: those with a session and the most recently disconnected. */
  cachedDevices: Schema.Number,
  devicePatterns: Schema.Number,
  aggregatedPatterns: Schema.Number,
  /** Deltas and patterns in the durable log: everything ever acknowledged. */
  loggedDeltas: Schema.Number,
  loggedPatterns: Schema.Number,
  patternsStored: Schema.Number,
  deltasAccepted: Schema.Number,
  deltasDuplicate: Schema.Number,
  deltasRateLimited: Schema.Number,
  patternsAccepted: Schema.Number,
  patternsFiltered: Schema.Number,
  batches: Schema.Number,
  replaying: Schema.Boolean,
  clusters: Schema.Number,
  publishableClusters: Schema.Number,
  /** The process's memory in MB: resident, JS heap in use, and outside the heap (buffers, native). */
  memory: Schema.Struct({
    rssMb: Schema.Number,
    heapUsedMb: Schema.Number,
    externalMb: Schema.Number
  })
})

export const ShardInfo = Schema.Struct({
  shardId: Schema.String,
  region: Schema.String,
  maxDevices: Schema.Number,
  registeredDevices: Schema.Number,
  activeDevices: Schema.Number,
  syncPort: Schema.Number,
  transport: Schema.Literals(["webtransport", "quic", "memory"]),
  /**
   * What a client pins: the QUIC peer id, or the SHA-256 of the WebTransport certificate in hex.
   * Public (a TV holds it too), so a test fleet inside the cluster can read it here.
   */
  pin: Schema.optionalKey(Schema.String)
})

/** How /api/v1/shards describes this shard's sync endpoint. */
export type SyncEndpointInfo = Pick<typeof ShardInfo.Type, "syncPort" | "region" | "transport"> & {
  readonly pin?: string | undefined
}

/** A new catalog item as JSON: the embedding is an array of 384 finite numbers. */
export const NewContent = Schema.Struct({
  contentId: ContentId,
  title: Title,
  genres: Genres,
  embedding: EmbeddingFromNumbers
})

export const ContentAccepted = Schema.Struct({ added: Schema.Number })

export const FederationRound = Schema.Struct({
  round: Schema.Number,
  durationMs: Schema.Number,
  patternsIn: Schema.Number,
  patternsOut: Schema.Number,
  groups: Schema.Number,
  regions: Schema.Array(Schema.String)
})

const memoryMb = () => {
  const usage = process.memoryUsage()
  const mb = (bytes: number) => Math.round(bytes / 2 ** 20)
  return { rssMb: mb(usage.rss), heapUsedMb: mb(usage.heapUsed), externalMb: mb(usage.external) }
}

export class ManagementError extends Schema.TaggedError<ManagementError>()(
  "ManagementError",
  { message: Schema.String },
  { httpApiStatus: 503 }
) {}

/** The request body does not match the protocol; `message` names the field and the rule. */
export class InvalidRequest extends Schema.TaggedError<InvalidRequest>()(
  "InvalidRequest",
  { message: Schema.String },
  { httpApiStatus: 400 }
) {}

const NewContentBody = Schema.Union([NewContent, Schema.Array(NewContent).check(Schema.isBetweenLength(1, 1_000))])
// Decoded in the handler so a rejected body gets a 400 that says what is wrong (not an empty one).
const decodeNewContent = decoder(NewContentBody, "NewContent")

export class ShardApiGroup extends HttpApiGroup.make("shard", { topLevel: true }).add(
  HttpApiEndpoint.get("health", "/health", { success: Health }),
  HttpApiEndpoint.get("stats", "/api/v1/stats", { success: ShardApiStats, error: ManagementError }),
  HttpApiEndpoint.get("shards", "/api/v1/shards", { success: Schema.Array(ShardInfo) }),
  HttpApiEndpoint.post("addContent", "/api/v1/content", {
    payload: Schema.Unknown,
    success: ContentAccepted,
    error: [ManagementError, InvalidRequest]
  }),
  HttpApiEndpoint.post("triggerFederation", "/api/v1/federation/trigger", {
    success: FederationRound,
    error: ManagementError
  })
) {}

export class ManagementApi extends HttpApi.make("omega-shard").add(ShardApiGroup) {}

/** Handlers over the shard's services; `info` describes this shard's sync endpoint in /api/v1/shards. */
export const managementHandlers = (info: SyncEndpointInfo) =>
  HttpApiBuilder.group(
    ManagementApi,
    "shard",
    Effect.fn(function*(handlers) {
      const manager = yield* ShardManager
      const ingestion = yield* Ingestion
      const storage = yield* ShardStorage
      const federation = yield* Federation
      const startedAt = yield* Clock.currentTimeMillis

      return handlers.handleAll({
        health: () =>
          Effect.gen(function*() {
            // A probe runs often: one trivial query, not the table scans of /api/v1/stats (on PGlite's
            // one connection those would hold up the group commits queued behind them).
            const up = yield* storage.ping.pipe(Effect.as(true), Effect.catch(() => Effect.succeed(false)))
            const shard = yield* manager.stats
            const ingest = yield* ingestion.stats
            return {
              status: up ? "ok" as const : "degraded" as const,
              shardId: shard.shardId,
              uptimeSeconds: ((yield* Clock.currentTimeMillis) - startedAt) / 1000,
              database: up ? "up" as const : "down" as const,
              activeDevices: shard.activeDevices,
              patternsStored: ingest.patternsStored
            }
          }),
        stats: () =>
          Effect.gen(function*() {
            const counts = yield* storage.counts.pipe(Effect.mapError(unavailable))
            const shard = yield* manager.stats
            const ingest = yield* ingestion.stats
            return {
              ...shard,
              devicePatterns: counts.devicePatterns,
              aggregatedPatterns: counts.aggregatedPatterns,
              loggedDeltas: counts.loggedDeltas,
              loggedPatterns: counts.loggedPatterns,
              ...ingest,
              memory: memoryMb()
            }
          }),
        shards: () =>
          Effect.map(manager.stats, (shard) => [{
            shardId: shard.shardId,
            region: info.region,
            maxDevices: shard.maxDevices,
            registeredDevices: shard.registeredDevices,
            activeDevices: shard.activeDevices,
            syncPort: info.syncPort,
            transport: info.transport,
            ...(info.pin === undefined ? {} : { pin: info.pin })
          }]),
        addContent: ({ payload }) =>
          Effect.gen(function*() {
            const body = yield* decodeNewContent(payload).pipe(
              Effect.mapError((e) => new InvalidRequest({ message: e.message }))
            )
            const items: ReadonlyArray<typeof NewContent.Type> = Array.isArray(body) ? body : [body]
            yield* storage.addContent(items).pipe(Effect.mapError(unavailable))
            yield* federation.announceContent(items)
            return { added: items.length }
          }),
        triggerFederation: () => federation.runRound.pipe(Effect.mapError(unavailable))
      })
    })
  )

const unavailable = (e: { readonly message: string }) => new ManagementError({ message: e.message })

export const managementLayer = (info: SyncEndpointInfo) =>
  HttpApiBuilder.layer(ManagementApi).pipe(Layer.provide(managementHandlers(info)))
