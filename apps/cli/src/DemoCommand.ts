/**
 * `omega demo` (the README's main job): a fleet of TV brains replays real viewers (MovieLens
 * when configured, else a synthetic world), then each TV recommends for the moment of its
 * viewer's next good watch. Prints sample recommendations with their reasons and the numbers:
 * hit rate, latency, patterns learned and what each TV would share.
 */
import { BrainStore, defaultBrainConfig, Embedder, OmegaBrain, VectorIndex } from "@omega/brain"
import { type ContentEmbedding, type ContentId } from "@omega/protocol"
import { Console, Effect, Layer } from "effect"
import { embedCatalog, leaveLastPositiveOut, replay, type Split } from "./Evaluation.ts"
import { contextAt, datasetPath, loadMovieLens, type Rating } from "./MovieLens.ts"
import { mulberry32 } from "./Random.ts"
import { percentile, printJson, printTable, progress, round } from "./Report.ts"
import { makeWorld, nextViewing } from "./Synthetic.ts"

export interface DemoOptions {
  readonly tvs: number
  readonly dataset: string | undefined
  readonly json: boolean
}

interface DemoWorld {
  readonly source: string
  readonly catalog: ReadonlyArray<ContentEmbedding>
  readonly splits: ReadonlyArray<Split>
}

/** MovieLens when its folder is there, otherwise a seeded synthetic catalog and viewers. */
const loadWorld = (options: DemoOptions) =>
  Effect.gen(function*() {
    const ml = yield* Effect.option(loadMovieLens(datasetPath(options.dataset)))
    if (ml._tag === "Some") {
      const catalog = yield* embedCatalog(ml.value)
      const splits = leaveLastPositiveOut(ml.value).slice(0, options.tvs)
      return { source: `MovieLens 100K (${ml.value.movies.length} movies)`, catalog, splits } satisfies DemoWorld
    }
    yield* progress("demo: MovieLens not found (set OMEGA_DATASET); using a synthetic catalog and viewers")
    const world = makeWorld({ items: 3_000, viewers: options.tvs, seed: 3 })
    const embedder = yield* Embedder
    const catalog = yield* Effect.forEach(world.items, (item) =>
      embedder.embedContent(item).pipe(Effect.map((embedding): ContentEmbedding => ({
        contentId: item.contentId,
        title: item.title,
        genres: item.genres,
        embedding
      }))))
    const random = mulberry32(17)
    const splits: Array<Split> = []
    for (const viewer of world.viewers) {
      const ratings: Array<Rating> = []
      const recent: Array<ContentId> = []
      let at = Date.UTC(2026, 8, 1)
      for (let i = 0; i < 120; i++) {
        at += Math.floor(random() * 20 * 3_600_000)
        const event = nextViewing(world, viewer, at, recent, random)
        ratings.push({ user: viewer.id, contentId: event.contentId, rating: event.watchShare * 5, at })
        recent.push(event.contentId)
      }
      const last = ratings.findLastIndex((r) =>
        r.rating >= 4
      )
      if (last > 0) splits.push({ user: viewer.id, train: ratings.slice(0, last), heldOut: ratings[last]! })
    }
    return { source: `synthetic (${catalog.length} items)`, catalog, splits } satisfies DemoWorld
  }).pipe(Effect.provide(Embedder.layerHashing))

export const runDemo = Effect.fn("omega.demo")(function*(options: DemoOptions) {
  const world = yield* loadWorld(options)
  yield* progress(`demo: ${world.splits.length} TVs replaying viewers from ${world.source}`)
  const titles = new Map(world.catalog.map((c) => [c.contentId, c]))
  const observeMs: Array<number> = []
  const recommendMs: Array<number> = []
  let hits = 0
  let events = 0
  let patterns = 0
  let shared = 0
  const config = { ...defaultBrainConfig, runLearningLoops: false }
  // Each TV: usearch index as deployed, SQLite in memory (the demo keeps nothing on disk).
  const tvLayer = OmegaBrain.layer(config).pipe(
    Layer.provide(Layer.mergeAll(Embedder.layerHashing, VectorIndex.layer, BrainStore.layerTest))
  )

  for (const [n, split] of world.splits.entries()) {
    yield* Effect.gen(function*() {
      const brain = yield* OmegaBrain
      yield* brain.addContent(world.catalog)
      const started = performance.now()
      yield* replay(brain, { titles }, split.train)
      observeMs.push((performance.now() - started) / split.train.length)
      const recent = split.train.slice(-5).map((r) => r.contentId)
      const context = contextAt(split.heldOut.at, recent)
      const t0 = performance.now()
      const recs = yield* brain.recommend(context, 10)
      recommendMs.push(performance.now() - t0)
      const hit = recs.findIndex((r) => r.contentId === split.heldOut.contentId)
      if (hit >= 0) hits += 1
      const delta = yield* brain.prepareSyncDelta()
      const stats = yield* brain.stats
      events += split.train.length
      patterns += stats.patterns
      shared += delta.added.length + delta.updated.length
      if (n < 3) {
        yield* Console.log(
          `\nTV ${split.user}: watched ${split.train.length} items, learned ${stats.patterns} patterns; ` +
            `${context.dayType} ${context.timeOfDay}, next good watch was "${
              titles.get(split.heldOut.contentId)?.title
            }"`
        )
        for (const rec of recs.slice(0, 5)) {
          yield* Console.log(`  ${rec.score.toFixed(2).padStart(6)}  ${rec.title}  (${rec.reason})`)
        }
      }
    }).pipe(Effect.provide(tvLayer))
    if ((n + 1) % 10 === 0) yield* progress(`  ${n + 1}/${world.splits.length} TVs done`)
  }

  const summary = {
    source: world.source,
    tvs: world.splits.length,
    events,
    patterns_per_tv: round(patterns / world.splits.length, 1),
    hr10: round(hits / world.splits.length, 4),
    observe_mean_ms: round(observeMs.reduce((a, b) => a + b, 0) / observeMs.length),
    recommend_p50_ms: round(percentile(recommendMs, 50)),
    recommend_p99_ms: round(percentile(recommendMs, 99)),
    shareable_patterns_per_tv: round(shared / world.splits.length, 1)
  }
  yield* printTable("Demo: one brain per TV, learning locally (nothing has left any TV yet)", [summary])
  if (options.json) yield* printJson(summary)
})
