/**
 * The cold-start half of `omega bench-brain`, run as its own process: it reopens a persisted
 * brain, serves recommendations and prints one JSON line with the times and RSS. It imports the
 * brain and Effect only, as a TV's process would; the CLI around it (PGlite, the constellation,
 * the evaluation) would otherwise count as the TV's runtime.
 *
 *   node apps/cli/src/BrainColdStart.ts <brain.db>
 */
import { defaultBrainConfig, OmegaBrain } from "@omega/brain"
import type { ViewContext } from "@omega/protocol"
import { Effect, Layer } from "effect"
import { round } from "./Report.ts"

export interface ColdStart {
  readonly patterns: number
  readonly cold_start_ms: number
  readonly first_recommend_ms: number
  /** From process start (Node boot and module loading included) to a served recommendation. */
  readonly process_ready_ms: number
  readonly rss_mb: number
  /** RSS of the process before the brain was opened: Node, Effect and the brain's code. */
  readonly runtime_rss_mb: number
  /** RSS the opened brain added on top of the runtime. */
  readonly brain_rss_mb: number
}

const mb = (bytes: number) => round(bytes / 1024 / 1024, 1)

const coldStart = (path: string) =>
  Effect.gen(function*() {
    const baselineRss = process.memoryUsage().rss
    const start = process.hrtime.bigint()
    const result = yield* Effect.gen(function*() {
      const brain = yield* OmegaBrain
      const opened = Number(process.hrtime.bigint() - start) / 1e6
      const context: ViewContext = { timeOfDay: "evening", dayType: "weekday", recentWatches: [] }
      const firstStart = process.hrtime.bigint()
      yield* brain.recommend(context, 10)
      const first = Number(process.hrtime.bigint() - firstStart) / 1e6
      // A few more requests so RSS reflects a brain in use, not just loaded.
      for (let i = 0; i < 50; i++) yield* brain.recommend(context, 10)
      const stats = yield* brain.stats
      // Read while the brain is open: closing it frees SQLite's cache and the indexes.
      const rss = process.memoryUsage().rss
      return { patterns: stats.patterns, opened, first, sinceProcessStart: performance.now(), rss }
    }).pipe(
      Effect.provide(
        Layer.fresh(OmegaBrain.layerLive({ path, config: { ...defaultBrainConfig, runLearningLoops: false } }))
      )
    )
    const rss = result.rss
    return {
      patterns: result.patterns,
      cold_start_ms: round(result.opened, 1),
      first_recommend_ms: round(result.first),
      process_ready_ms: round(result.sinceProcessStart, 1),
      rss_mb: mb(rss),
      runtime_rss_mb: mb(baselineRss),
      brain_rss_mb: mb(rss - baselineRss)
    } satisfies ColdStart
  })

if (import.meta.main) {
  const path = process.argv[2]
  if (path === undefined) {
    process.stderr.write("usage: node apps/cli/src/BrainColdStart.ts <brain.db>\n")
    process.exit(2)
  }
  const result = await Effect.runPromise(coldStart(path))
  process.stdout.write(`${JSON.stringify(result)}\n`)
}
