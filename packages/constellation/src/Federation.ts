/**
 * Federation rounds as seen from one shard: recompute every region's global patterns from the
 * aggregated device patterns and publish them (sessions push them to their TVs), ask connected
 * federation workers for a cross-shard round, and announce new content to connected TVs. Rounds
 * run on a schedule and on POST /api/v1/federation/trigger.
 */
import type { ContentEmbedding } from "@omega/protocol"
import { Clock, Context, Duration, Effect, Layer, PubSub, Schedule } from "effect"
import { Ingestion } from "./Ingestion.ts"
import type { StorageError } from "./ShardStorage.ts"

export interface RoundReport {
  readonly round: number
  readonly durationMs: number
  readonly patternsIn: number
  readonly patternsOut: number
  readonly groups: number
  readonly regions: ReadonlyArray<string>
}

export class Federation extends Context.Service<Federation, {
  readonly runRound: Effect.Effect<RoundReport, StorageError>
  /** New catalog items go out to every open session (and into the shard's trend decoding). */
  readonly announceContent: (items: ReadonlyArray<ContentEmbedding>) => Effect.Effect<void>
  readonly content: PubSub.PubSub<ReadonlyArray<ContentEmbedding>>
  /** Asks connected federation workers to start a cross-shard round (they listen on their sessions). */
  readonly roundRequests: PubSub.PubSub<string>
}>()("omega/constellation/Federation") {
  static readonly layer = (options: { readonly every: Duration.Input }) => Layer.effect(Federation, make(options))
}

function make(options: { readonly every: Duration.Input }) {
  return Effect.gen(function*() {
    const ingestion = yield* Ingestion
    const content = yield* PubSub.unbounded<ReadonlyArray<ContentEmbedding>>()
    const roundRequests = yield* PubSub.unbounded<string>()
    let round = 0

    const localRound = Effect.gen(function*() {
      const started = yield* Clock.currentTimeMillis
      const before = yield* ingestion.stats
      const report = yield* ingestion.refresh(true)
      round += 1
      return {
        round,
        durationMs: (yield* Clock.currentTimeMillis) - started,
        patternsIn: before.patternsAccepted,
        patternsOut: report.published,
        groups: report.clusters,
        regions: report.regions
      } satisfies RoundReport
    }).pipe(Effect.withSpan("Federation.localRound"))

    // On demand, the cross-shard round too: connected workers get a RoundRequest on their sessions.
    const runRound = PubSub.publish(roundRequests, "requested through the shard's API").pipe(
      Effect.andThen(localRound)
    )

    yield* localRound.pipe(
      Effect.catch((error) => Effect.logWarning("federation round failed", error)),
      Effect.schedule(Schedule.spaced(options.every)),
      Effect.forkScoped
    )

    return Federation.of({
      runRound,
      // The shard decodes trends against its catalog, so it learns new items before the TVs do.
      announceContent: (items) => ingestion.addContent(items).pipe(Effect.andThen(PubSub.publish(content, items))),
      content,
      roundRequests
    })
  })
}
