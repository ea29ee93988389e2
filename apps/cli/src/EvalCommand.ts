/** `omega eval`: the MovieLens quality evaluation as a table and one JSON line. */
import { Embedder } from "@omega/brain"
import { Effect } from "effect"
import {
  embedCatalog,
  evaluate,
  leaveLastPositiveOut,
  localBrainRanker,
  type Metrics,
  popularityRanker,
  randomRanker
} from "./Evaluation.ts"
import { datasetPath, loadMovieLens } from "./MovieLens.ts"
import { printJson, printTable, progress, round } from "./Report.ts"

export interface EvalOptions {
  readonly dataset: string | undefined
  readonly json: boolean
  /** Evaluate only the first N users (quick runs); undefined means all. */
  readonly users: number | undefined
}

export const runEval = Effect.fn("omega.eval")(function*(options: EvalOptions) {
  const dir = datasetPath(options.dataset)
  const ml = yield* loadMovieLens(dir)
  const splits = leaveLastPositiveOut(ml).slice(0, options.users)
  yield* progress(`eval: ${ml.movies.length} movies, ${splits.length} users (TVs) from ${dir}`)
  const catalog = yield* embedCatalog(ml).pipe(Effect.provide(Embedder.layerHashing))

  const results: Record<string, Metrics> = {}
  results["random"] = yield* evaluate("random", splits, randomRanker(ml.movies.map((m) => m.contentId)))
  results["popularity"] = yield* evaluate("popularity", splits, popularityRanker(splits))
  results["local"] = yield* evaluate("local", splits, localBrainRanker(catalog))

  const rows = Object.entries(results).map(([method, m]) => ({
    method,
    "HR@10": round(m.hr10, 4),
    "NDCG@10": round(m.ndcg10, 4),
    "x random": round(m.hr10 / Math.max(results["random"]!.hr10, 1e-9), 2)
  }))
  yield* printTable(
    `MovieLens 100K, leave-last-positive-out, full ranking over unseen items (${splits.length} TVs)`,
    rows
  )
  const local = results["local"]!
  const popularity = results["popularity"]!
  yield* progress(
    `local-only brain vs popularity: HR@10 ${(local.hr10 / popularity.hr10).toFixed(2)}x, NDCG@10 ${
      (local.ndcg10 / popularity.ndcg10).toFixed(2)
    }x`
  )
  const json = Object.fromEntries(
    Object.entries(results).map(([k, m]) => [k, { hr10: round(m.hr10, 4), ndcg10: round(m.ndcg10, 4) }])
  )
  if (options.json) yield* printJson({ users: splits.length, ...json })
  return json
})
