import { assert, describe, it } from "@effect/vitest"
import {
  type ContentEmbedding,
  type ContentId,
  EMBEDDING_DIMENSIONS,
  type GlobalPatterns,
  MAX_DELTA_PATTERNS,
  type PatternId,
  type ViewContext,
  type ViewingEvent
} from "@omega/protocol"
import { Context, Effect, Exit, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { BrainStore } from "./BrainStore.ts"
import { Embedder, makeHashing } from "./Embedder.ts"
import { defaultLearningConfig } from "./Learning.ts"
import { defaultTierLimits, MemoryTiers } from "./MemoryTiers.ts"
import { type BrainConfig, defaultBrainConfig, OmegaBrain } from "./OmegaBrain.ts"
import { type IndexHandle, VectorIndex } from "./VectorIndex.ts"

const hashing = makeHashing()
const GENRES = ["Comedy", "Horror", "Documentary", "Romance"] as const
const WORDS = ["Harbor", "Winter", "Signal", "Meadow", "Copper", "Lantern", "Orbit", "Willow", "Falcon", "Ember"]

/** 10 items per genre, embedded with the default embedder. */
const catalog: Array<ContentEmbedding> = GENRES.flatMap((genre) =>
  Array.from({ length: 10 }, (_, i) => {
    const title = `${genre} ${WORDS[i]} (199${i})`
    return {
      contentId: `${genre.toLowerCase()}-${i}` as ContentId,
      title,
      genres: [genre],
      embedding: Effect.runSync(hashing.embedContent({ title, genres: [genre] }))
    }
  })
)
const item = (id: string) => catalog.find((c) => c.contentId === id)!

const evening: ViewContext = { timeOfDay: "evening", dayType: "weekday", recentWatches: [] }
const morning: ViewContext = { timeOfDay: "morning", dayType: "weekend", recentWatches: [] }

const watch = (
  id: string,
  watchShare: number,
  context: ViewContext = evening,
  at = 1_700_000_000_000
): ViewingEvent => {
  const c = item(id)
  return { contentId: c.contentId, title: c.title, genres: c.genres, watchedAt: at, watchShare, context }
}

const config = (overrides: Partial<BrainConfig> = {}): BrainConfig => ({
  ...defaultBrainConfig,
  runLearningLoops: false,
  ...overrides
})

const withBrain = <A, E>(body: (brain: OmegaBrain["Service"]) => Effect.Effect<A, E, MemoryTiers>, c = config()) =>
  Effect.gen(function*() {
    const brain = yield* OmegaBrain
    yield* brain.addContent(catalog)
    return yield* body(brain)
  }).pipe(Effect.provide(OmegaBrain.layerTest(c)))

describe("OmegaBrain.observe", () => {
  it.effect("reinforces a pattern for similar items in the same context and starts one in a new context", () =>
    withBrain((brain) =>
      Effect.gen(function*() {
        const first = yield* brain.observe(watch("comedy-1", 0.9))
        const second = yield* brain.observe(watch("comedy-1", 0.95))
        assert.isTrue(first.newPattern)
        assert.isFalse(second.newPattern)
        assert.strictEqual(second.patternId, first.patternId)
        const other = yield* brain.observe(watch("comedy-1", 0.9, morning))
        assert.isTrue(other.newPattern)
        assert.notStrictEqual(other.patternId, first.patternId)
        assert.strictEqual((yield* brain.stats).patterns, 2)
      })
    ))

  it.effect("rejects malformed events with a typed error and leaves stored state untouched", () =>
    withBrain((brain) =>
      Effect.gen(function*() {
        yield* brain.observe(watch("comedy-1", 0.9))
        const before = yield* brain.stats
        for (const bad of [{ ...watch("comedy-2", 0.9), watchShare: NaN }, { ...watch("comedy-2", 2) }, { nope: 1 }]) {
          const error = yield* Effect.flip(brain.observe(bad))
          assert.strictEqual(error._tag, "ProtocolDecodeError")
        }
        const after = yield* brain.stats
        assert.deepStrictEqual(after.versions, before.versions)
        assert.strictEqual(after.patterns, before.patterns)
      })
    ))

  it.effect("embeds and catalogs an item it has never seen", () =>
    withBrain((brain) =>
      Effect.gen(function*() {
        const before = (yield* brain.stats).catalogItems
        yield* brain.observe({ ...watch("comedy-1", 0.9), contentId: "brand-new", title: "Brand New Comedy (2026)" })
        assert.strictEqual((yield* brain.stats).catalogItems, before + 1)
      })
    ))
})

describe("OmegaBrain.recommend", () => {
  it.effect("ranks items like the ones watched through above others, excludes watched items, explains", () =>
    withBrain((brain) =>
      Effect.gen(function*() {
        for (const id of ["comedy-1", "comedy-2", "comedy-3", "comedy-4"]) yield* brain.observe(watch(id, 0.95))
        yield* brain.observe(watch("horror-1", 0.1))
        const recs = yield* brain.recommend(evening, 5)
        assert.strictEqual(recs.length, 5)
        for (const rec of recs) {
          assert.isTrue(rec.contentId.startsWith("comedy-"), `${rec.contentId} should be a comedy`)
          assert.notInclude(["comedy-1", "comedy-2", "comedy-3", "comedy-4"], rec.contentId as string)
          assert.match(rec.reason, /^Because you watched Comedy /)
          assert.isTrue(rec.confidence > 0 && rec.confidence < 1)
        }
        for (let i = 1; i < recs.length; i++) assert.isTrue(recs[i - 1]!.score >= recs[i]!.score)
      })
    ))

  it.effect("steers by recent watches in the context", () =>
    withBrain((brain) =>
      Effect.gen(function*() {
        for (const id of ["comedy-1", "comedy-2", "romance-1", "romance-2"]) yield* brain.observe(watch(id, 0.95))
        const recentWatches = ["romance-1", "romance-2"] as Array<ContentId>
        const recs = yield* brain.recommend({ ...evening, recentWatches }, 3)
        assert.isTrue(
          recs[0]!.contentId.startsWith("romance-"),
          `top pick ${recs[0]!.contentId} should follow recent watches`
        )
      })
    ))

  it.effect("rejects a malformed context with a typed error", () =>
    withBrain((brain) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(
          brain.recommend({ timeOfDay: "teatime", dayType: "weekday", recentWatches: [] })
        )
        assert.strictEqual(error._tag, "ProtocolDecodeError")
      })
    ))
})

const globalPatterns = (version: number, genre: string, deviceCount = 5): GlobalPatterns => ({
  version,
  similar: [{
    id: `g-${genre}` as PatternId,
    embedding: Effect.runSync(hashing.embedContent({ title: "", genres: [genre] })),
    successRate: 0.9,
    sampleCount: 50,
    deviceCount,
    context: {}
  }],
  trending: [{ contentId: "documentary-7" as ContentId, region: "eu-west", score: 10, velocity: 1 }]
})

describe("OmegaBrain.applyGlobalPatterns", () => {
  it.effect("lets collective patterns and trends recommend to a TV with no history, ignores stale versions", () =>
    withBrain((brain) =>
      Effect.gen(function*() {
        assert.isTrue(yield* brain.applyGlobalPatterns(globalPatterns(3, "Horror")))
        assert.isFalse(yield* brain.applyGlobalPatterns(globalPatterns(2, "Romance")))
        const recs = yield* brain.recommend(evening, 12)
        const horror = recs.filter((r) => r.contentId.startsWith("horror-"))
        assert.isAtLeast(horror.length, 8)
        assert.strictEqual(horror[0]!.reason, "Popular with viewers who share your taste")
        const trending = recs.find((r) => r.contentId === "documentary-7")
        assert.strictEqual(trending?.reason, "Trending in your region")
        assert.strictEqual((yield* brain.stats).versions.global, 3)
      })
    ))

  it.effect("rejects global patterns with a bad embedding and keeps the previous ones", () =>
    withBrain((brain) =>
      Effect.gen(function*() {
        yield* brain.applyGlobalPatterns(globalPatterns(1, "Horror"))
        const bad = globalPatterns(2, "Romance")
        const broken = { ...bad, similar: [{ ...bad.similar[0]!, embedding: new Float32Array(12) }] }
        const error = yield* Effect.flip(brain.applyGlobalPatterns(broken))
        assert.strictEqual(error._tag, "ProtocolDecodeError")
        const stats = yield* brain.stats
        assert.strictEqual(stats.versions.global, 1)
        assert.strictEqual(stats.collectivePatterns, 1)
      })
    ))

  it.effect("keeps the last of patterns that repeat an id instead of failing the update", () =>
    withBrain((brain) =>
      Effect.gen(function*() {
        const [horror] = globalPatterns(1, "Horror").similar
        const [romance] = globalPatterns(1, "Romance").similar
        const again = { ...horror!, deviceCount: 9 }
        assert.isTrue(
          yield* brain.applyGlobalPatterns({ ...globalPatterns(1, "Horror"), similar: [horror, romance, again] })
        )
        const stats = yield* brain.stats
        assert.strictEqual(stats.versions.global, 1)
        assert.strictEqual(stats.collectivePatterns, 2)
        assert.deepStrictEqual((yield* MemoryTiers).collective.all().find((p) => p.id === horror!.id), again)
      })
    ))
})

describe("OmegaBrain.prepareSyncDelta", () => {
  it.effect("shares every pattern with enough evidence, with its success rate, and keeps them until acknowledged", () =>
    withBrain((brain) =>
      Effect.gen(function*() {
        for (let i = 0; i < 3; i++) yield* brain.observe(watch("comedy-1", 0.9))
        for (let i = 0; i < 3; i++) yield* brain.observe(watch("horror-1", 0.2))
        yield* brain.observe(watch("romance-1", 0.9)) // one sample only: not an aggregate yet, not shared
        const delta = yield* brain.prepareSyncDelta()
        assert.strictEqual(delta.baseVersion, 0)
        // The abandoned horror is viewing too: the shard counts it for trends and co-watch, and
        // leaves it out of global patterns by its success rate.
        const rates = delta.added.map((p) => p.successRate).sort((a, b) => a - b)
        assert.strictEqual(rates.length, 2)
        assert.isBelow(rates[0]!, 0.7)
        assert.isAtLeast(rates[1]!, 0.7)
        assert.strictEqual(delta.added[0]!.embedding.length, EMBEDDING_DIMENSIONS)
        assert.notProperty(delta.added[0]!, "createdAt")
        assert.strictEqual((yield* brain.pendingDeltas).length, 1)

        yield* brain.acknowledgeDelta(delta.version)
        assert.strictEqual((yield* brain.pendingDeltas).length, 0)
        const next = yield* brain.prepareSyncDelta()
        assert.strictEqual(next.baseVersion, delta.version)
        assert.strictEqual(next.added.length + next.updated.length, 0)

        // Reinforcing a shared pattern later makes it an update, not an addition.
        yield* brain.observe(watch("comedy-1", 0.95))
        const later = yield* brain.prepareSyncDelta()
        assert.strictEqual(later.added.length, 0)
        assert.strictEqual(later.updated.length, 1)
      })
    ))

  it.effect("caps the delta and carries what was left behind in the next one", () =>
    withBrain(
      (brain) =>
        Effect.gen(function*() {
          for (const genre of ["comedy", "horror", "documentary", "romance"]) {
            for (let i = 0; i < 2; i++) yield* brain.observe(watch(`${genre}-1`, 0.9))
          }
          const first = yield* brain.prepareSyncDelta()
          assert.strictEqual(first.added.length, 2)
          yield* brain.acknowledgeDelta(first.version)
          const second = yield* brain.prepareSyncDelta()
          assert.strictEqual(second.added.length + second.updated.length, 2)
          const ids = new Set([...first.added, ...second.added, ...second.updated].map((p) => p.id))
          assert.strictEqual(ids.size, 4)
        }),
      config({ maxDeltaPatterns: 2 })
    ))

  it.effect("with a share threshold, keeps patterns below it to itself and withdraws one that falls below", () =>
    withBrain(
      (brain) =>
        Effect.gen(function*() {
          for (let i = 0; i < 3; i++) yield* brain.observe(watch("comedy-1", 0.9))
          for (let i = 0; i < 3; i++) yield* brain.observe(watch("horror-1", 0.2))
          const delta = yield* brain.prepareSyncDelta()
          assert.deepStrictEqual(delta.added.map((p) => p.successRate >= 0.7), [true])
          yield* brain.acknowledgeDelta(delta.version)
          // Comedy is abandoned again and again until its success rate falls under the threshold.
          for (let i = 0; i < 6; i++) yield* brain.observe(watch("comedy-1", 0.1))
          const next = yield* brain.prepareSyncDelta()
          assert.deepStrictEqual(next.removed, [delta.added[0]!.id])
        }),
      config({ shareThreshold: 0.7 })
    ))
})

/**
 * Prepares and acknowledges deltas until the brain has nothing left to send, checking the caps of
 * each; `drained` is false if it still had something after `rounds` deltas.
 */
const drain = (brain: OmegaBrain["Service"], rounds = 50) =>
  Effect.gen(function*() {
    const shared = new Set<PatternId>()
    const removed = new Set<PatternId>()
    for (let deltas = 0; deltas < rounds; deltas++) {
      const delta = yield* brain.prepareSyncDelta()
      if (delta.version <= delta.baseVersion) return { shared, removed, deltas, drained: true }
      assert.isAtMost(delta.added.length + delta.updated.length, defaultBrainConfig.maxDeltaPatterns)
      assert.isAtMost(delta.removed.length, MAX_DELTA_PATTERNS)
      for (const p of [...delta.added, ...delta.updated]) shared.add(p.id)
      for (const id of delta.removed) removed.add(id)
      yield* brain.acknowledgeDelta(delta.version)
    }
    return { shared, removed, deltas: rounds, drained: false }
  })

/** The brute-force index, yielding to other fibers at every search as a busy runtime may. */
const yieldingIndex = Layer.effect(
  VectorIndex,
  Effect.gen(function*() {
    const exact = yield* VectorIndex
    const yielding = (handle: IndexHandle): IndexHandle => ({
      ...handle,
      search: (query, k) => Effect.andThen(Effect.yieldNow, handle.search(query, k))
    })
    return VectorIndex.of({
      ...exact,
      create: (options) => Effect.map(exact.create(options), yielding),
      load: (path, options) => Effect.map(exact.load(path, options), yielding)
    })
  })
).pipe(Layer.provide(VectorIndex.layerTest))

/** Ids of the patterns the brain holds now. */
const patternIds = Effect.map(MemoryTiers, (tiers) => new Set([...tiers.skills.all()].map((p) => p.id)))

// Every trigger below changes more patterns at once than one delta may carry.
describe("OmegaBrain sync after a batch of changes", () => {
  it.effect("an eviction of more patterns than a delta may remove is sent over several deltas", () =>
    Effect.gen(function*() {
      // A full tier evicts 2% of its bound at once (201 of 10,000). Cheaper to reach here: a brain
      // restarted with a smaller bound evicts the excess in one batch at its next consolidation.
      const store = Layer.succeedContext(yield* Layer.build(BrainStore.layerTest))
      const brainWith = (skills: number) =>
        OmegaBrain.layer(config({
          tiers: { ...defaultTierLimits, skills },
          learning: { ...defaultLearningConfig, assignThreshold: 1.01, mergeThreshold: 1.01 }
        })).pipe(Layer.provideMerge(Layer.mergeAll(Embedder.layerHashing, VectorIndex.layerTest, store)))
      const observed = yield* Effect.gen(function*() {
        const brain = yield* OmegaBrain
        yield* brain.addContent(catalog)
        const ids = new Set<PatternId>()
        for (let i = 0; i < 100; i++) ids.add((yield* brain.observe(watch("comedy-1", 0.9))).patternId)
        assert.isTrue((yield* drain(brain)).drained)
        return ids
      }).pipe(Effect.provide(brainWith(1_000)))
      yield* Effect.gen(function*() {
        const brain = yield* OmegaBrain
        assert.deepStrictEqual(yield* brain.consolidate, { merged: 0, patterns: 30 })
        const sync = yield* drain(brain)
        assert.isTrue(sync.drained)
        assert.isAtLeast(sync.deltas, 2)
        const kept = yield* patternIds
        assert.deepStrictEqual([...sync.removed].sort(), [...observed].filter((id) => !kept.has(id)).sort())
        assert.strictEqual((yield* brain.pendingDeltas).length, 0)
      }).pipe(Effect.provide(brainWith(30)))
    }))

  it.effect("a consolidation merging more patterns than a delta may carry is sent over several deltas", () =>
    Effect.gen(function*() {
      const brain = yield* OmegaBrain
      yield* brain.addContent(catalog)
      const observed = new Set<PatternId>()
      for (let i = 0; i < 160; i++) {
        observed.add((yield* brain.observe(watch(catalog[i % catalog.length]!.contentId, 0.9))).patternId)
      }
      assert.isTrue((yield* drain(brain)).drained)
      const report = yield* brain.consolidate
      assert.isAbove(report.merged, MAX_DELTA_PATTERNS)
      const sync = yield* drain(brain)
      assert.isTrue(sync.drained)
      assert.isAtLeast(sync.deltas, 2)
      const kept = yield* patternIds
      assert.deepStrictEqual([...sync.removed].sort(), [...observed].filter((id) => !kept.has(id)).sort())
      // Every pattern a merge grew (the rest kept their one sample and are not shared) went out too.
      const grown = [...(yield* MemoryTiers).skills.all()].filter((p) => p.sampleCount > 1).map((p) => p.id)
      assert.isAbove(grown.length, defaultBrainConfig.maxDeltaPatterns)
      for (const id of grown) assert.isTrue(sync.shared.has(id), `${id} was never sent`)
    }).pipe(
      Effect.provide(OmegaBrain.layerTest(config({
        learning: { ...defaultLearningConfig, assignThreshold: 1.01, mergeThreshold: -1 }
      })))
    ))

  it.effect("a daily decay of more patterns than a delta may carry is sent over several deltas", () =>
    Effect.gen(function*() {
      const brain = yield* OmegaBrain
      yield* brain.addContent(catalog)
      for (const { contentId } of catalog) {
        for (let i = 0; i < 3; i++) yield* brain.observe(watch(contentId, 0.9, evening, 0))
      }
      const ids = yield* patternIds
      assert.strictEqual(ids.size, catalog.length)
      assert.isTrue((yield* drain(brain)).drained)
      yield* TestClock.adjust("1 day")
      assert.deepStrictEqual(yield* brain.decay, { forgotten: 0, patterns: catalog.length })
      const sync = yield* drain(brain)
      assert.isTrue(sync.drained)
      assert.isAtLeast(sync.deltas, 2)
      assert.deepStrictEqual([...sync.shared].sort(), [...ids].sort())
    }).pipe(
      Effect.provide(OmegaBrain.layerTest(config({
        // Strict enough that each item keeps a pattern of its own.
        learning: { ...defaultLearningConfig, assignThreshold: 0.999 }
      })))
    ))

  it.effect("a batch stored at one version by an older release is spread over versions of its own and sent", () =>
    Effect.gen(function*() {
      const store = yield* Layer.build(BrainStore.layerTest)
      // A consolidation as it was written before: merged patterns and tombstones, all at version 1.
      const merged = catalog.slice(0, 25).map((c, i) => ({
        id: `merged-${i}` as PatternId,
        embedding: c.embedding,
        successRate: 1,
        sampleCount: 2,
        context: { timeOfDay: "evening", dayType: "weekday" } as const,
        createdAt: 0,
        updatedAt: 0,
        version: 1,
        createdVersion: 1,
        exemplar: c.contentId
      }))
      const absorbed = Array.from({ length: 70 }, (_, i) => ({ id: `absorbed-${i}` as PatternId, version: 1 }))
      yield* Context.get(store, BrainStore).rewritePatterns(merged, absorbed, 1)
      const sync = yield* Effect.flatMap(OmegaBrain, (brain) => drain(brain)).pipe(
        Effect.provide(
          OmegaBrain.layer(config()).pipe(
            Layer.provide(Layer.mergeAll(Embedder.layerHashing, VectorIndex.layerTest, Layer.succeedContext(store)))
          )
        )
      )
      assert.isTrue(sync.drained)
      assert.sameMembers([...sync.shared], merged.map((p) => p.id))
      assert.sameMembers([...sync.removed], absorbed.map((r) => r.id))
    }))

  it.effect("an observation made while consolidation runs is neither lost nor given a version already used", () =>
    Effect.gen(function*() {
      const brain = yield* OmegaBrain
      yield* brain.addContent(catalog)
      const ids = catalog.filter((c) => c.contentId.startsWith("comedy-")).map((c) => c.contentId)
      for (const id of ids) yield* brain.observe(watch(id, 0.9))
      const consolidating = yield* Effect.forkChild(brain.consolidate)
      yield* Effect.yieldNow // consolidation starts, and yields at its first search
      const late = yield* brain.observe(watch(ids[1]!, 0.9))
      const report = yield* Fiber.join(consolidating)
      assert.isAbove(report.merged, 0)
      const patterns = [...(yield* MemoryTiers).skills.all()]
      // Merging adds sample counts: every observation is still counted, the late one included.
      assert.closeTo(patterns.reduce((sum, p) => sum + p.sampleCount, 0), ids.length + 1, 1e-9)
      // Each write took a version of its own, and the local version is the last of them.
      const removals = yield* (yield* BrainStore).removedSince(0)
      const versions = [...patterns, ...removals].map((c) => c.version)
      assert.strictEqual(new Set(versions).size, versions.length)
      assert.strictEqual((yield* brain.stats).versions.local, Math.max(...versions, late.version))
    }).pipe(
      Effect.provide(
        OmegaBrain.layer(config({
          learning: { ...defaultLearningConfig, assignThreshold: 0.999, mergeThreshold: 0.5 }
        })).pipe(Layer.provideMerge(Layer.mergeAll(Embedder.layerHashing, yieldingIndex, BrainStore.layerTest)))
      )
    ))
})

describe("learning loops", () => {
  it.effect("consolidate near-duplicate patterns every session", () =>
    Effect.gen(function*() {
      const brain = yield* OmegaBrain
      yield* brain.addContent(catalog)
      // Items of one genre differ only in title words: with a strict assignment threshold each
      // starts its own pattern, and consolidation should fold them together.
      for (const id of ["comedy-1", "comedy-2", "comedy-3"]) yield* brain.observe(watch(id, 0.9))
      assert.strictEqual((yield* brain.stats).patterns, 3)
      yield* TestClock.adjust("31 minutes")
      assert.isBelow((yield* brain.stats).patterns, 3)
    }).pipe(
      Effect.provide(OmegaBrain.layerTest(config({
        runLearningLoops: true,
        learning: { ...defaultLearningConfig, assignThreshold: 0.999, mergeThreshold: 0.5 }
      })))
    ))

  it.effect("decay daily and forget patterns whose evidence faded", () =>
    Effect.gen(function*() {
      const brain = yield* OmegaBrain
      yield* brain.addContent(catalog)
      yield* brain.observe(watch("comedy-1", 0.9, evening, 0))
      yield* brain.observe(watch("horror-1", 0.9, evening, 0))
      yield* brain.observe(watch("horror-1", 0.9, evening, 0))
      assert.strictEqual((yield* brain.stats).patterns, 2)
      // The single-sample pattern falls under the floor first; the reinforced one lasts a day longer.
      yield* TestClock.adjust("1 day")
      assert.strictEqual((yield* brain.stats).patterns, 1)
      yield* TestClock.adjust("1 day")
      assert.strictEqual((yield* brain.stats).patterns, 0)
    }).pipe(
      Effect.provide(OmegaBrain.layerTest(config({
        runLearningLoops: true,
        learning: { ...defaultLearningConfig, dailyDecay: 0.5, forgetBelow: 0.6 }
      })))
    ))
})

/** comedy-1's viewers also watched horror-3 (strongly) and romance-5. */
const coWatch = (version: number, neighbours = [{ contentId: "horror-3", weight: 900 }, {
  contentId: "romance-5",
  weight: 400
}]) => ({ version, rows: [{ contentId: "comedy-1", neighbours }] })

const coWatchConfig = config({
  recommender: { ...defaultBrainConfig.recommender, sourceWeights: { local: 1, collective: 1, cowatch: 30, trend: 1 } }
})

describe("OmegaBrain.applyCoWatch", () => {
  it.effect("recommends what viewers of a watched item also watched, ignores stale versions, withdraws empty rows", () =>
    withBrain((brain) =>
      Effect.gen(function*() {
        yield* brain.observe(watch("comedy-1", 0.9))
        assert.isTrue(yield* brain.applyCoWatch(coWatch(2)))
        assert.isFalse(yield* brain.applyCoWatch(coWatch(1, [{ contentId: "documentary-2", weight: 1000 }])))
        const recs = yield* brain.recommend(evening, 5)
        assert.deepStrictEqual(recs.slice(0, 2).map((r): string => r.contentId), ["horror-3", "romance-5"])
        assert.strictEqual(recs[0]!.reason, `Viewers of ${item("comedy-1").title} also watched this`)
        assert.strictEqual((yield* brain.stats).versions.coWatch, 2)

        assert.isTrue(yield* brain.applyCoWatch(coWatch(3, [])))
        const after = yield* brain.recommend(evening, 5)
        assert.isFalse(after.some((r) => r.reason.startsWith("Viewers of")))
      }), coWatchConfig))

  it.effect("weighs the rows of what was watched last the most", () =>
    withBrain((brain) =>
      Effect.gen(function*() {
        yield* brain.observe(watch("comedy-1", 0.9, evening, 1_700_000_000_000))
        yield* brain.observe(watch("romance-1", 0.9, evening, 1_700_000_100_000))
        yield* brain.applyCoWatch({
          version: 1,
          rows: [
            { contentId: "comedy-1", neighbours: [{ contentId: "horror-3", weight: 1000 }] },
            { contentId: "romance-1", neighbours: [{ contentId: "documentary-4", weight: 1000 }] }
          ]
        })
        const recs = yield* brain.recommend(evening, 2)
        assert.deepStrictEqual(recs.map((r): string => r.contentId), ["documentary-4", "horror-3"])
        // One watch later the newer row's votes are worth 2^(1/8) of the older one's.
        assert.closeTo(recs[0]!.score / recs[1]!.score, Math.pow(2, 1 / 8), 0.05)
        // Watching comedy-1 again makes it the newest: its row now leads, nothing stale is reused.
        yield* brain.observe(watch("comedy-1", 0.9, evening, 1_700_000_200_000))
        const after = yield* brain.recommend(evening, 2)
        assert.deepStrictEqual(after.map((r): string => r.contentId), ["horror-3", "documentary-4"])
      }), coWatchConfig))

  it.effect("ignores rows of items it has never watched", () =>
    withBrain((brain) =>
      Effect.gen(function*() {
        yield* brain.observe(watch("romance-1", 0.9))
        yield* brain.applyCoWatch(coWatch(1))
        const recs = yield* brain.recommend(evening, 5)
        assert.isFalse(recs.some((r) => r.reason.startsWith("Viewers of")))
      }), coWatchConfig))

  it.effect("rejects malformed rows with a typed error and keeps the rows it had", () =>
    withBrain((brain) =>
      Effect.gen(function*() {
        yield* brain.observe(watch("comedy-1", 0.9))
        yield* brain.applyCoWatch(coWatch(1))
        for (
          const bad of [
            coWatch(2, [{ contentId: "horror-4", weight: 0 }]),
            coWatch(2, [{ contentId: "horror-4", weight: 1001 }]),
            coWatch(2, Array.from({ length: 65 }, (_, i) => ({ contentId: `x-${i}`, weight: 10 }))),
            { version: -1, rows: [] },
            { rows: [] }
          ]
        ) {
          const error = yield* Effect.flip(brain.applyCoWatch(bad))
          assert.strictEqual(error._tag, "ProtocolDecodeError")
        }
        assert.strictEqual((yield* brain.stats).versions.coWatch, 1)
        assert.strictEqual((yield* brain.recommend(evening, 1))[0]!.contentId, "horror-3")
      }), coWatchConfig))
})

/** A brain database in a temporary directory removed after the test, and the brain on it. */
const onDisk = Effect.gen(function*() {
  const dir = mkdtempSync(join(tmpdir(), "omega-brain-"))
  yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
  const path = join(dir, "brain.db")
  const layer = (c: BrainConfig) =>
    OmegaBrain.layer(c).pipe(
      Layer.provide(Layer.mergeAll(Embedder.layerHashing, VectorIndex.layerTest, BrainStore.layer({ path })))
    )
  return { path, layer }
})

describe("persistence", () => {
  it.effect("a restarted brain resumes its patterns, versions, watched items, outbox and co-watch rows", () =>
    Effect.gen(function*() {
      const disk = yield* onDisk
      const layer = () => disk.layer(coWatchConfig)
      const first = yield* Effect.gen(function*() {
        const brain = yield* OmegaBrain
        yield* brain.addContent(catalog)
        for (let i = 0; i < 3; i++) yield* brain.observe(watch("comedy-1", 0.9))
        yield* brain.prepareSyncDelta()
        yield* brain.applyGlobalPatterns(globalPatterns(4, "Horror"))
        yield* brain.applyCoWatch(coWatch(2))
        return { stats: yield* brain.stats, recs: yield* brain.recommend(evening, 5) }
      }).pipe(Effect.provide(layer()))

      const second = yield* Effect.gen(function*() {
        const brain = yield* OmegaBrain
        return { stats: yield* brain.stats, recs: yield* brain.recommend(evening, 5) }
      }).pipe(Effect.provide(layer()))

      assert.deepStrictEqual(second.stats.versions, first.stats.versions)
      assert.strictEqual(second.stats.patterns, first.stats.patterns)
      assert.strictEqual(second.stats.catalogItems, catalog.length)
      assert.strictEqual(second.stats.pendingDeltas, 1)
      assert.strictEqual(second.stats.collectivePatterns, 1)
      assert.deepStrictEqual(second.recs.map((r) => r.contentId), first.recs.map((r) => r.contentId))
      assert.notInclude(second.recs.map((r): string => r.contentId), "comedy-1")
      assert.strictEqual(second.stats.versions.coWatch, 2)
      assert.include(second.recs.map((r) => r.reason), `Viewers of ${item("comedy-1").title} also watched this`)
    }))

  it.effect("a restarted brain still knows which watch was the newest (co-watch recency)", () =>
    Effect.gen(function*() {
      const disk = yield* onDisk
      // One recent episode: the rest of the order comes back from the store, not from replayed events.
      const layer = () => disk.layer({ ...coWatchConfig, tiers: { ...coWatchConfig.tiers, episodes: 1 } })
      // Watched in the opposite order to their ids, and the oldest watched again last.
      const history = ["romance-1", "horror-1", "comedy-1", "horror-1"]
      const first = yield* Effect.gen(function*() {
        const brain = yield* OmegaBrain
        yield* brain.addContent(catalog)
        for (const [i, id] of history.entries()) yield* brain.observe(watch(id, 0.9, evening, 1_700_000_000_000 + i))
        yield* brain.applyCoWatch({
          version: 1,
          rows: [
            { contentId: "romance-1", neighbours: [{ contentId: "documentary-4", weight: 1000 }] },
            { contentId: "horror-1", neighbours: [{ contentId: "documentary-5", weight: 1000 }] },
            { contentId: "comedy-1", neighbours: [{ contentId: "documentary-6", weight: 1000 }] }
          ]
        })
        return yield* brain.recommend(evening, 3)
      }).pipe(Effect.provide(layer()))
      const second = yield* Effect.gen(function*() {
        const brain = yield* OmegaBrain
        return yield* brain.recommend(evening, 3)
      }).pipe(Effect.provide(layer()))
      // Newest first: horror-1 (watched again), comedy-1, romance-1; their ids sort the other way.
      const order = ["documentary-5", "documentary-6", "documentary-4"]
      assert.deepStrictEqual(first.map((r): string => r.contentId), order)
      assert.deepStrictEqual(second.map((r): string => r.contentId), order)
    }))

  it.effect("restarts from index snapshots, and rebuilds them when the store moved on after they were saved", () =>
    Effect.gen(function*() {
      const disk = yield* onDisk
      const path = disk.path
      const layer = () => disk.layer(config())
      const patternsOf = Effect.gen(function*() {
        const brain = yield* OmegaBrain
        return (yield* brain.stats).patterns
      })
      const before = yield* Effect.gen(function*() {
        const brain = yield* OmegaBrain
        yield* brain.addContent(catalog)
        yield* brain.observe(watch("comedy-1", 0.9))
        yield* brain.observe(watch("horror-1", 0.9))
        return (yield* brain.stats).patterns
      }).pipe(Effect.provide(layer()))
      assert.isTrue(existsSync(`${path}.skills.usearch.keys.json`))
      assert.isTrue(existsSync(`${path}.catalog.usearch.keys.json`))

      // Written behind the brain's back, as a crash after a commit but before a snapshot would leave it.
      yield* Effect.gen(function*() {
        const store = yield* BrainStore
        const snapshot = yield* store.load(0)
        const pattern = snapshot.patterns[0]!
        yield* store.recordObservation(watch("romance-1", 0.9), {
          ...pattern,
          id: "written-after-snapshot" as PatternId,
          embedding: item("romance-1").embedding,
          version: snapshot.versions.local + 1,
          createdVersion: snapshot.versions.local + 1
        })
      }).pipe(Effect.provide(BrainStore.layer({ path })))

      const after = yield* patternsOf.pipe(Effect.provide(layer()))
      assert.strictEqual(after, before + 1)
      const recs = yield* Effect.gen(function*() {
        const brain = yield* OmegaBrain
        return yield* brain.recommend({ ...evening, recentWatches: [item("romance-1").contentId] }, 3)
      }).pipe(Effect.provide(layer()))
      assert.isTrue(recs[0]!.contentId.startsWith("romance-"), "the rebuilt index must know the late pattern")
    }))

  it.effect("fails with a typed error when the database cannot be opened", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(
        Effect.provide(
          Effect.asVoid(OmegaBrain),
          OmegaBrain.layer(config()).pipe(
            Layer.provide(Layer.mergeAll(
              Embedder.layerHashing,
              VectorIndex.layerTest,
              BrainStore.layer({ path: "/nonexistent/dir/brain.db" })
            ))
          )
        )
      )
      assert.isTrue(Exit.isFailure(exit))
      assert.include(String(Exit.isFailure(exit) ? exit.cause : ""), "StoreError")
    }))
})
