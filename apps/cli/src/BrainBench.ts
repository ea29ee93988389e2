/**
 * `omega bench-brain`: observe and recommend latency of one TV brain as deployed (usearch HNSW,
 * SQLite WAL on disk, hashing embedder) at 1K and 10K learned patterns, with a full co-watch
 * table (20 neighbours for every catalog item) so every watched item votes, then the cold start
 * and RSS of a fresh process that reopens the 10K-pattern brain (BrainColdStart.ts: the brain
 * and Effect only), once with a TV's Node flags and once with Node's defaults.
 */
import { defaultBrainConfig, Embedder, OmegaBrain } from "@omega/brain"
import {
  type ContentEmbedding,
  type ContentId,
  MAX_COWATCH_ROWS,
  seededRandom,
  type ViewContext
} from "@omega/protocol"
import { OmegaTv } from "@omega/sdk"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { ColdStart } from "./BrainColdStart.ts"
import { percentile, printJson, printTable, progress, round } from "./Report.ts"
import { makeWorld, nextViewing, type SyntheticWorld } from "./Synthetic.ts"

export interface BrainBenchOptions {
  readonly json: boolean
  readonly sizes: ReadonlyArray<number>
  /** Timed calls per measurement. */
  readonly samples: number
}

interface SizeResult {
  readonly patterns: number
  readonly observe_p50_ms: number
  readonly observe_p99_ms: number
  readonly recommend_p50_ms: number
  readonly recommend_p99_ms: number
  /** Right after a watch, when nothing derived from the history can be reused. */
  readonly after_watch_p50_ms: number
  readonly after_watch_p99_ms: number
}

const CATALOG_ITEMS = 10_000
const COWATCH_NEIGHBOURS = 20
const config = { ...defaultBrainConfig, runLearningLoops: false }

const timeMs = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const start = process.hrtime.bigint()
    yield* effect
    return Number(process.hrtime.bigint() - start) / 1e6
  })

export const runBrainBench = Effect.fn("omega.benchBrain")(function*(options: BrainBenchOptions) {
  const dir = mkdtempSync(join(tmpdir(), "omega-bench-brain-"))
  yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
  const path = join(dir, "brain.db")
  // Genre-driven viewing only: circles and hits would bring the same films back, and the
  // benchmark wants patterns to grow.
  const world = makeWorld({ items: CATALOG_ITEMS, viewers: 1, seed: 11, circleShare: 0, mainstreamShare: 0 })
  const catalog = yield* embedWorld(world)
  yield* progress(`bench-brain: catalog of ${catalog.length} items, brain at ${path}`)

  const results: Array<SizeResult> = []
  /** The contexts of the largest size's timed recommends, replayed through the SDK. */
  const contexts: Array<ViewContext> = []
  yield* Effect.gen(function*() {
    const brain = yield* OmegaBrain
    yield* brain.addContent(catalog)
    const random = seededRandom(5)
    const rows = catalog.map((item) => ({
      contentId: item.contentId,
      neighbours: Array.from({ length: COWATCH_NEIGHBOURS }, (_, n) => ({
        contentId: catalog[Math.floor(random() * catalog.length)]!.contentId,
        weight: 1000 - n * 40
      }))
    }))
    for (let i = 0; i < rows.length; i += MAX_COWATCH_ROWS) {
      yield* brain.applyCoWatch({ version: 1, rows: rows.slice(i, i + MAX_COWATCH_ROWS) })
    }
    let at = Date.UTC(2026, 0, 1)
    const recent: Array<ContentId> = []
    // A "power viewer" whose taste spans every genre and context grows patterns fastest.
    const viewer = { ...world.viewers[0]!, taste: new Map([...world.viewers[0]!.taste].map(([g]) => [g, 1])) }
    const nextEvent = () => {
      at += 7 * 60_000 + Math.floor(random() * 3_600_000)
      const event = nextViewing(world, viewer, at, recent, random)
      const mood = (["relaxed", "excited", "focused", "social", undefined] as const)[Math.floor(random() * 5)]
      recent.push(event.contentId)
      if (recent.length > 5) recent.shift()
      return mood === undefined ? event : { ...event, context: { ...event.context, mood } }
    }
    const randomContext = (): ViewContext => nextEvent().context

    for (const target of options.sizes) {
      let grown = 0
      while ((yield* brain.stats).patterns < target) {
        for (let i = 0; i < 50; i++) yield* brain.observe(nextEvent())
        grown += 50
        if (grown % 5_000 === 0) yield* progress(`  growing to ${target} patterns: ${(yield* brain.stats).patterns}`)
      }
      const patterns = (yield* brain.stats).patterns
      // Recommendations first, so the index is exactly at the target size while they are timed.
      const recommend: Array<number> = []
      contexts.length = 0
      for (let i = 0; i < options.samples; i++) {
        const context = randomContext()
        contexts.push(context)
        recommend.push(yield* timeMs(brain.recommend(context, 10)))
      }
      // Real viewing mostly reinforces known tastes: half the timed events re-watch a recent item.
      const observe: Array<number> = []
      const afterWatch: Array<number> = []
      const seen: Array<ReturnType<typeof nextEvent>> = []
      for (let i = 0; i < options.samples; i++) {
        const fresh = nextEvent()
        const event = i % 2 === 1 && seen.length > 0 ?
          { ...seen[Math.floor(random() * seen.length)]!, watchedAt: fresh.watchedAt } :
          fresh
        seen.push(event)
        observe.push(yield* timeMs(brain.observe(event)))
        if (i % 4 === 0) afterWatch.push(yield* timeMs(brain.recommend(event.context, 10)))
      }
      results.push({
        patterns,
        observe_p50_ms: round(percentile(observe, 50)),
        observe_p99_ms: round(percentile(observe, 99)),
        recommend_p50_ms: round(percentile(recommend, 50)),
        recommend_p99_ms: round(percentile(recommend, 99)),
        after_watch_p50_ms: round(percentile(afterWatch, 50)),
        after_watch_p99_ms: round(percentile(afterWatch, 99))
      })
      yield* progress(`  measured at ${patterns} patterns`)
    }
  }).pipe(Effect.provide(OmegaBrain.layerLive({ path, config })))

  yield* progress("  the same recommends through the Promise SDK (OmegaTv on the same file)")
  const sdk = yield* sdkRecommendMs(path, contexts)
  yield* progress("  cold start: reopening the brain in a fresh process")
  const cold = coldStartInChild(path, TV_NODE_FLAGS)
  const coldDefault = coldStartInChild(path, [])
  const largest = results[results.length - 1]!
  yield* printTable("Brain latency (ms) by learned patterns", results.map((r) => ({ ...r })))
  yield* printTable("Recommend at the largest size, the same contexts (ms)", [
    { api: "OmegaBrain (Effect)", p50: largest.recommend_p50_ms, p99: largest.recommend_p99_ms },
    { api: "OmegaTv (Promise SDK, reopened)", p50: round(percentile(sdk, 50)), p99: round(percentile(sdk, 99)) }
  ])
  yield* printTable(
    "Cold start of the largest brain in a fresh process (brain and Effect only, as on a TV)",
    [
      { node_flags: TV_NODE_FLAGS.join(" "), ...cold },
      { node_flags: "(Node defaults)", ...coldDefault }
    ]
  )
  const summary = {
    patterns: largest.patterns,
    recommend_p50_ms: largest.recommend_p50_ms,
    recommend_p99_ms: largest.recommend_p99_ms,
    recommend_after_watch_p50_ms: largest.after_watch_p50_ms,
    recommend_after_watch_p99_ms: largest.after_watch_p99_ms,
    observe_p50_ms: largest.observe_p50_ms,
    observe_p99_ms: largest.observe_p99_ms,
    sdk_recommend_p50_ms: round(percentile(sdk, 50)),
    sdk_recommend_p99_ms: round(percentile(sdk, 99)),
    cold_start_ms: cold.cold_start_ms,
    rss_mb: cold.rss_mb,
    runtime_rss_mb: cold.runtime_rss_mb,
    brain_rss_mb: cold.brain_rss_mb,
    tv_node_flags: TV_NODE_FLAGS.join(" "),
    brain_rss_mb_node_defaults: coldDefault.brain_rss_mb,
    by_size: results,
    catalog_items: catalog.length
  }
  if (options.json) yield* printJson(summary)
  return summary
})

/** Recommend latency through `OmegaTv` (promises over a ManagedRuntime) on the brain at `path`. */
const sdkRecommendMs = (path: string, contexts: ReadonlyArray<ViewContext>) =>
  Effect.promise(async () => {
    await using tv = await OmegaTv.open({ path, learningLoops: false })
    for (const context of contexts.slice(0, 50)) await tv.recommend(context, 10)
    const times: Array<number> = []
    for (const context of contexts) {
      const start = process.hrtime.bigint()
      await tv.recommend(context, 10)
      times.push(Number(process.hrtime.bigint() - start) / 1e6)
    }
    return times
  })

const embedWorld = (world: SyntheticWorld) =>
  Effect.gen(function*() {
    const embedder = yield* Embedder
    return yield* Effect.forEach(world.items, (item) =>
      embedder.embedContent(item).pipe(
        Effect.map((embedding): ContentEmbedding => ({
          contentId: item.contentId,
          title: item.title,
          genres: item.genres,
          embedding
        }))
      ))
  }).pipe(Effect.provide(Embedder.layerHashing))

/**
 * Node flags of a TV's process. V8 otherwise grows its young generation to 64 MB while the brain
 * opens (thousands of rows parsed at once) and keeps it; capped at 2 MB per semi-space it stays
 * small, which is how an embedded Node with a memory budget runs.
 */
export const TV_NODE_FLAGS: ReadonlyArray<string> = ["--max-semi-space-size=2"]

const coldStartInChild = (path: string, flags: ReadonlyArray<string>): ColdStart => {
  const script = join(import.meta.dirname, "BrainColdStart.ts")
  const output = execFileSync(process.execPath, [...flags, script, path], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"]
  })
  return JSON.parse(output.trim().split("\n").at(-1)!) as ColdStart
}
