/** `omega eval`: the MovieLens quality evaluation as a table and one JSON line. */
import { Embedder } from "@omega/brain"
import { defaultCoWatchConfig } from "@omega/constellation"
import { Effect } from "effect"
import { alsRanker, itemKnnAtTimeRanker, itemKnnRanker, tvScoringItemKnn } from "./CentralBaseline.ts"
import {
  embedCatalog,
  evaluate,
  hitRatioInterval,
  leaveLastPositiveOut,
  localBrainRanker,
  type Metrics,
  popularityRanker,
  randomRanker,
  validationSplits
} from "./Evaluation.ts"
import {
  federatedEvalConfig,
  type FederatedResult,
  recentPopularityRanker,
  roundBoundaries,
  runFederated
} from "./FederatedEvaluation.ts"
import { datasetPath, loadMovieLens } from "./MovieLens.ts"
import { printJson, printTable, progress, round } from "./Report.ts"

export interface EvalOptions {
  readonly dataset: string | undefined
  readonly json: boolean
  /** Evaluate only the first N users (quick runs); undefined means all. */
  readonly users: number | undefined
  /** Sync and federation rounds of the federated replay. */
  readonly rounds?: number | undefined
  /** Also run the federated fleet with (epsilon, 1e-5)-DP noise on every uploaded pattern. */
  readonly dpEpsilon?: number | undefined
  /** Hold out each user's second-to-last positive instead (for tuning; the test positives stay unseen). */
  readonly validation?: boolean | undefined
}

/** The issue's targets for the federated brain. */
const TARGETS = { overLocal: 1.1, ofCentral: 0.95, bytesPerSync: 6 * 1024 }

const DP_DELTA = 1e-5

export const runEval = Effect.fn("omega.eval")(function*(options: EvalOptions) {
  const dir = datasetPath(options.dataset)
  const ml = yield* loadMovieLens(dir)
  const all = leaveLastPositiveOut(ml)
  const splits = (options.validation === true ? validationSplits(all) : all).slice(0, options.users)
  const protocol = options.validation === true ? "second-to-last positive (validation)" : "last positive"
  yield* progress(
    `eval: ${ml.movies.length} movies, ${splits.length} users (TVs) from ${dir}, holding out the ${protocol}`
  )
  const catalog = yield* embedCatalog(ml).pipe(Effect.provide(Embedder.layerHashing))
  const ids = ml.movies.map((m) => m.contentId)

  const results: Record<string, Metrics> = {}
  results["random"] = yield* evaluate("random", splits, randomRanker(ids))
  results["popularity"] = yield* evaluate("popularity", splits, popularityRanker(splits))
  results["local"] = yield* evaluate("local", splits, localBrainRanker(catalog))

  const config = federatedEvalConfig(options.rounds)
  // The trends' central counterpart: as fresh as what the federated TVs hold, from exact counts.
  results["popularity_recent"] = yield* evaluate(
    "popularity_recent",
    splits,
    recentPopularityRanker(splits, config.rounds, config.trend.halfLifeMs)
  )
  const federatedCatalog = yield* embedCatalog(ml).pipe(Effect.provide(Embedder.layerHashingWith(config.embedder)))
  // The same local-only brain on the federated TVs' embedder and learning settings: what federation alone adds.
  results["local_tv_embedder"] = yield* evaluate(
    "local_tv_embedder",
    splits,
    localBrainRanker(federatedCatalog, config.brain)
  )
  yield* progress(`  federated: ${config.rounds} rounds, ${config.shards} shards, k = ${config.federation.minDevices}`)
  const federated = yield* runFederated(splits, federatedCatalog, config)
  results["federated"] = federated.metrics
  yield* progress("  federated, with trends decoded only from published k-anonymous groups (never from one upload)")
  const groupTrends = yield* runFederated(splits, federatedCatalog, { ...config, trendSource: "groups" })
  results["federated_group_trends"] = groupTrends.metrics
  let private_: FederatedResult | undefined
  if (options.dpEpsilon !== undefined) {
    yield* progress(`  federated with (${options.dpEpsilon}, ${DP_DELTA})-DP noise on every uploaded pattern`)
    private_ = yield* runFederated(splits, federatedCatalog, {
      ...config,
      privacy: { epsilon: options.dpEpsilon, delta: DP_DELTA }
    })
    results["federated_dp"] = private_.metrics
  }

  yield* progress("  central: training iALS on all raw training ratings")
  results["central"] = yield* evaluate("central", splits, alsRanker(splits, ids))
  results["central_itemknn"] = yield* evaluate("central_itemknn", splits, itemKnnRanker(splits, ids))
  // What a cloud item-kNN knows at each TV's held-out time: the ratings up to the TV's last round end.
  results["central_itemknn_at_time"] = yield* evaluate(
    "central_itemknn_at_time",
    splits,
    itemKnnAtTimeRanker(splits, ids, roundBoundaries(splits, config.rounds))
  )
  // The TVs' own co-watch scoring on raw counts: from every item each viewer watched, then from at
  // most as many per viewer as the federated co-watch counts held per device (a random sample).
  const coWatch = config.coWatch ?? defaultCoWatchConfig
  const tvScoring = {
    neighbours: coWatch.neighbours,
    minDevices: coWatch.minDevices,
    popularityPenalty: coWatch.popularityPenalty,
    halfLife: config.brain.recommender.coWatchHalfLife,
    history: config.brain.recommender.coWatchHistory
  }
  const complete = tvScoringItemKnn(splits, ids, tvScoring)
  results["central_itemknn_tv_scoring"] = yield* evaluate("central_itemknn_tv_scoring", splits, complete.ranker)
  const itemsPerDevice = Math.round(federated.coWatchItemsPerDevice)
  const sampled = config.coWatch === undefined ? undefined : tvScoringItemKnn(splits, ids, {
    ...tvScoring,
    itemsPerViewer: itemsPerDevice
  })
  if (sampled !== undefined) {
    results["central_itemknn_tv_scoring_sampled"] = yield* evaluate(
      "central_itemknn_tv_scoring_sampled",
      splits,
      sampled.ranker
    )
  }

  const rows = Object.entries(results).map(([method, m]) => ({
    method,
    "HR@10": round(m.hr10, 4),
    "NDCG@10": round(m.ndcg10, 4),
    "x random": round(m.hr10 / Math.max(results["random"]!.hr10, 1e-9), 2)
  }))
  yield* printTable(
    `MovieLens 100K, held out: each user's ${protocol}, full ranking over unseen items (${splits.length} TVs)`,
    rows
  )
  yield* printTable(
    "Federated rounds (global time windows; a TV syncs after each from its first watch until it is scored)",
    federated.rounds.map((r) => ({
      round: r.round,
      "patterns in": r.patternsIn,
      "device patterns": r.devicePatterns,
      "shard groups": r.shardGroups,
      "global (k>=3)": r.published,
      trends: r.trends,
      "co-watch rows": r.coWatchRows,
      "co-watch bytes": r.coWatchBytes,
      seconds: (r.ms / 1000).toFixed(1)
    }))
  )
  yield* printTable(
    "Where the federated TVs' suggestions came from (the reason shown with each)",
    Object.entries(federated.sources).map(([source, { hits, shown }]) => ({
      source,
      shown,
      hits,
      "hit rate": round(hits / Math.max(1, shown), 4)
    }))
  )
  const bytes = federated.bytes
  yield* printTable("Bytes per TV sync (real wire frames: DeltaUpload up; DeltaAck + GlobalUpdate down)", [
    {
      syncs: bytes.syncs,
      "mean up": round(bytes.up, 0),
      "mean down": round(bytes.down, 0),
      "mean total": round(bytes.total, 0),
      max: bytes.max
    }
  ])

  // The target compares with the better of the two local-only rows.
  const local = results["local"]!.hr10 >= results["local_tv_embedder"]!.hr10
    ? results["local"]!
    : results["local_tv_embedder"]!
  const fed = results["federated"]!
  const central = results["central"]!
  const popularity = results["popularity"]!
  const targets = {
    over_popularity: fed.hr10 >= popularity.hr10,
    over_local: fed.hr10 >= TARGETS.overLocal * local.hr10,
    of_central: fed.hr10 >= TARGETS.ofCentral * central.hr10,
    bytes: bytes.total <= TARGETS.bytesPerSync
  }
  const verdict = (met: boolean) => (met ? "met" : "NOT met")
  // How far a ratio moves when these TVs' outcomes are resampled (the federated tables held fixed).
  const against = (other: Metrics) => ({ ratio: fed.hr10 / other.hr10, ...hitRatioInterval(fed, other) })
  const interval = (r: { readonly low: number; readonly high: number }) =>
    `95% CI ${r.low.toFixed(2)}-${r.high.toFixed(2)}, paired bootstrap over TVs`
  const ofCentral = against(central)
  const ofTvScoring = against(results["central_itemknn_tv_scoring"]!)
  const ofSampled = sampled === undefined ?
    undefined :
    { ...against(results["central_itemknn_tv_scoring_sampled"]!), itemsCounted: sampled.itemsCounted }
  yield* progress(
    [
      `federated HR@10 ${fed.hr10.toFixed(4)}: ${(fed.hr10 / popularity.hr10).toFixed(2)}x popularity (target >= 1: ${
        verdict(targets.over_popularity)
      })`,
      `  ${(fed.hr10 / local.hr10).toFixed(2)}x local-only (target >= ${TARGETS.overLocal}: ${
        verdict(targets.over_local)
      })`,
      `  ${ofCentral.ratio.toFixed(2)}x central iALS (target >= ${TARGETS.ofCentral}: ${verdict(targets.of_central)}; ${
        interval(ofCentral)
      })`,
      `  ${
        (fed.hr10 / results["popularity_recent"]!.hr10).toFixed(2)
      }x popularity as fresh as the trends (exact counts)`,
      `  ${Math.round(bytes.total)} bytes per sync (target <= ${TARGETS.bytesPerSync}: ${verdict(targets.bytes)})`,
      `  co-watch table: ${federated.rounds.at(-1)?.coWatchRows ?? 0} rows, ${
        federated.rounds.at(-1)?.coWatchBytes ?? 0
      } bytes per round (catalog knowledge, sent apart from syncs); its counts held ${
        federated.coWatchItemsPerDevice.toFixed(1)
      } items per device`,
      `  against central item-kNN with the TVs' co-watch scoring: ${ofTvScoring.ratio.toFixed(2)}x from all ${
        complete.itemsCounted.toFixed(1)
      } items per viewer (${interval(ofTvScoring)})${
        ofSampled === undefined ?
          "" :
          `, ${ofSampled.ratio.toFixed(2)}x from at most ${itemsPerDevice} random ones (${
            ofSampled.itemsCounted.toFixed(1)
          } on average; ${interval(ofSampled)})`
      }`,
      `  trends from published k-anonymous groups only: HR@10 ${groupTrends.metrics.hr10.toFixed(4)}, ${
        Math.round(groupTrends.bytes.total)
      } bytes per sync`,
      ...(private_?.privacy === undefined ? [] : [
        `  with DP: HR@10 ${private_.metrics.hr10.toFixed(4)} at epsilon ${private_.privacy.perPattern} per pattern, ${
          private_.privacy.perDevice.toFixed(1)
        } per device over the run (zCDP), delta ${DP_DELTA}`
      ])
    ].join("\n")
  )
  const json: Record<string, unknown> = Object.fromEntries(
    Object.entries(results).map(([k, m]) => [k, { hr10: round(m.hr10, 4), ndcg10: round(m.ndcg10, 4) }])
  )
  const output = {
    users: splits.length,
    ...json,
    bytes_per_sync: round(bytes.total, 0),
    sync: { syncs: bytes.syncs, up: round(bytes.up, 0), down: round(bytes.down, 0), max: bytes.max },
    cowatch: {
      rows: federated.rounds.at(-1)?.coWatchRows ?? 0,
      bytes: federated.rounds.at(-1)?.coWatchBytes ?? 0,
      items_per_device: round(federated.coWatchItemsPerDevice, 1)
    },
    ...(private_?.privacy === undefined ? {} : {
      dp: {
        epsilon_per_pattern: private_.privacy.perPattern,
        epsilon_per_device: round(private_.privacy.perDevice, 2),
        delta: DP_DELTA
      }
    }),
    federated_of_central_hr10: {
      ratio: round(ofCentral.ratio, 3),
      low: round(ofCentral.low, 3),
      high: round(ofCentral.high, 3)
    },
    targets
  }
  if (options.json) yield* printJson(output)
  return output
})
