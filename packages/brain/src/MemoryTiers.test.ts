import { assert, describe, it } from "@effect/vitest"
import {
  type ContentId,
  EMBEDDING_DIMENSIONS,
  type GlobalPattern,
  type PatternId,
  type TrendSignal,
  type ViewingEvent
} from "@omega/protocol"
import { Effect, Layer } from "effect"
import type { LocalPattern } from "./BrainStore.ts"
import { defaultTierLimits, MemoryTiers, type TierLimits } from "./MemoryTiers.ts"
import { VectorIndex } from "./VectorIndex.ts"

/** Fresh tiers per test, on the exact brute-force index. */
const withTiers = <A, E>(
  body: (tiers: MemoryTiers["Service"]) => Effect.Effect<A, E>,
  limits: Partial<TierLimits> = {}
) =>
  Effect.flatMap(MemoryTiers, body).pipe(
    Effect.provide(MemoryTiers.layer({ ...defaultTierLimits, ...limits }).pipe(Layer.provide(VectorIndex.layerTest)))
  )

/** Mostly along axis `axis`, so each axis is its own neighbourhood. */
const direction = (axis: number, tilt = 0) => {
  const v = new Float32Array(EMBEDDING_DIMENSIONS)
  v[axis] = 1
  v[axis + 1] = tilt
  return v
}

const event = (n: number): ViewingEvent => ({
  contentId: `item-${n}` as ContentId,
  title: `Title ${n}`,
  genres: ["Drama"],
  watchedAt: 1_700_000_000_000 + n,
  watchShare: 0.7,
  context: { timeOfDay: "night", dayType: "weekend", recentWatches: [] }
})

const skill = (id: string, axis: number, overrides: Partial<LocalPattern> = {}): LocalPattern => ({
  id: id as PatternId,
  embedding: direction(axis),
  successRate: 0.8,
  sampleCount: 3,
  context: { timeOfDay: "night" },
  createdAt: 0,
  updatedAt: 0,
  version: 1,
  createdVersion: 1,
  exemplar: undefined,
  ...overrides
})

const globalPattern = (id: string, axis: number, successRate: number, sampleCount: number): GlobalPattern => ({
  id: id as PatternId,
  embedding: direction(axis),
  successRate,
  sampleCount,
  deviceCount: 5,
  context: {}
})

const trend = (contentId: string, score: number): TrendSignal => ({
  contentId: contentId as ContentId,
  region: "eu-west",
  score,
  velocity: 0.5
})

const contentId = (s: string) => s as ContentId
const itemId = (n: number) => `item-${n}` as ContentId

const idsOf = (neighbours: ReadonlyArray<{ readonly value: { readonly id: PatternId } }>) =>
  neighbours.map((n): string => n.value.id)

describe("MemoryTiers.episodes", () => {
  it.effect("keeps the newest events up to the bound, newest last, across every wrap-around", () =>
    withTiers((tiers) =>
      Effect.sync(() => {
        const { episodes } = tiers
        assert.deepStrictEqual(episodes.recent(10), [])
        const events = Array.from({ length: 11 }, (_, i) => event(i + 1))
        for (const [i, e] of events.entries()) {
          episodes.remember(e)
          const seen = events.slice(0, i + 1)
          assert.deepStrictEqual(episodes.recent(10), seen.slice(-4), `after ${i + 1} events`)
          assert.deepStrictEqual(episodes.recent(2), seen.slice(-2), `after ${i + 1} events`)
        }
        assert.deepStrictEqual(episodes.recent(0), [])
        assert.strictEqual(episodes.recent(4).at(-1), events.at(-1))
      }), { episodes: 4 }))

  it.effect("remembers everything ever watched, beyond the episode bound", () =>
    withTiers((tiers) =>
      Effect.sync(() => {
        const { episodes } = tiers
        for (let n = 1; n <= 6; n++) episodes.remember(event(n))
        episodes.remember(event(2))
        assert.strictEqual(episodes.watchedCount(), 6)
        assert.isTrue(episodes.hasWatched("item-1" as ContentId))
        assert.isFalse(episodes.hasWatched("item-7" as ContentId))
        episodes.markWatched(["item-7", "item-1", "item-8"] as Array<ContentId>)
        assert.strictEqual(episodes.watchedCount(), 8)
        assert.isTrue(episodes.hasWatched("item-8" as ContentId))
        // Marking watched (a restart restoring the set) adds no episode.
        assert.deepStrictEqual(episodes.recent(10).map((e): string => e.contentId), ["item-5", "item-6", "item-2"])
      }), { episodes: 3 }))
})

describe("MemoryTiers.skills", () => {
  it.effect("upsert adds or replaces a pattern, remove forgets it, nearest ranks by similarity", () =>
    withTiers((tiers) =>
      Effect.gen(function*() {
        const { skills } = tiers
        assert.deepStrictEqual(yield* skills.nearest(direction(0), 5), [])
        // The version moves with every change, so what is derived from the patterns can be kept until it does.
        let version = skills.version()
        const changed = () => {
          const moved = skills.version() !== version
          version = skills.version()
          return moved
        }
        yield* skills.upsert(skill("p-a", 0))
        assert.isTrue(changed())
        yield* skills.upsert(skill("p-b", 10))
        yield* skills.upsertMany([skill("p-c", 20), skill("p-d", 30)])
        assert.isTrue(changed())
        assert.strictEqual(skills.size(), 4)
        yield* skills.nearest(direction(0), 5)
        assert.isFalse(changed(), "reading changes nothing")
        assert.sameMembers([...skills.all()].map((p): string => p.id), ["p-a", "p-b", "p-c", "p-d"])

        const near = yield* skills.nearest(direction(10, 0.2), 2)
        assert.strictEqual(near.length, 2)
        assert.strictEqual(near[0]!.value.id, "p-b")
        assert.closeTo(near[0]!.similarity, 1 / Math.sqrt(1.04), 1e-5)
        assert.closeTo(near[1]!.similarity, 0, 1e-5)

        // Replacing moves p-b to where its new embedding points and keeps one entry for it.
        const moved = skill("p-b", 40, { successRate: 0.3, sampleCount: 7, version: 5 })
        yield* skills.upsert(moved)
        assert.strictEqual(skills.size(), 4)
        assert.strictEqual(skills.get("p-b" as PatternId), moved)
        assert.deepStrictEqual(idsOf(yield* skills.nearest(direction(40), 1)), ["p-b"])
        assert.notStrictEqual(idsOf(yield* skills.nearest(direction(10), 1))[0], "p-b")
        assert.strictEqual(idsOf(yield* skills.nearest(direction(0), 10)).filter((id) => id === "p-b").length, 1)

        yield* skills.remove("p-a" as PatternId)
        assert.isTrue(changed())
        yield* skills.remove("p-unknown" as PatternId)
        assert.strictEqual(skills.size(), 3)
        assert.isUndefined(skills.get("p-a" as PatternId))
        // Gone from the index too: it no longer takes one of the k places next to where it was.
        assert.sameMembers(idsOf(yield* skills.nearest(direction(0), 3)), ["p-b", "p-c", "p-d"])

        // A removed id can come back.
        yield* skills.upsert(skill("p-a", 50))
        assert.deepStrictEqual(idsOf(yield* skills.nearest(direction(50), 1)), ["p-a"])
        assert.strictEqual(skills.size(), 4)
      })
    ))

  it.effect("a pattern the index rejects fails with IndexError and leaves the previous one in place", () =>
    withTiers((tiers) =>
      Effect.gen(function*() {
        const { skills } = tiers
        const original = skill("p-a", 0)
        yield* skills.upsert(original)
        const error = yield* Effect.flip(
          skills.upsert(skill("p-a", 0, { embedding: new Float32Array(EMBEDDING_DIMENSIONS) }))
        )
        assert.strictEqual(error._tag, "IndexError")
        const fresh = yield* Effect.flip(skills.upsert(skill("p-z", 0, { embedding: new Float32Array(3) })))
        assert.strictEqual(fresh._tag, "IndexError")
        assert.strictEqual(skills.size(), 1)
        assert.strictEqual(skills.get("p-a" as PatternId), original)
        assert.isUndefined(skills.get("p-z" as PatternId))
        assert.deepStrictEqual(idsOf(yield* skills.nearest(direction(0), 5)), ["p-a"])
      })
    ))
})

describe("MemoryTiers.collective", () => {
  it.effect("keeps the best patterns by success weighted by evidence, searches them, and keeps the trends", () =>
    withTiers((tiers) =>
      Effect.gen(function*() {
        const { collective } = tiers
        assert.deepStrictEqual(yield* collective.nearest(direction(0), 3), [])
        const incoming = [
          globalPattern("g-lucky", 0, 1, 1), // 1.0 * ln 2 = 0.69: perfect but on one sample
          globalPattern("g-solid", 10, 0.8, 100), // 3.69
          globalPattern("g-broad", 20, 0.5, 1_000), // 3.45
          globalPattern("g-fair", 30, 0.9, 10), // 2.16
          globalPattern("g-weak", 40, 0.2, 50) // 0.79
        ]
        const trends = [trend("item-1", 5), trend("item-2", 3)]
        yield* collective.replace(incoming, trends)
        assert.deepStrictEqual(collective.all().map((p): string => p.id), ["g-solid", "g-broad", "g-fair"])
        assert.deepStrictEqual(collective.trends(), trends)

        assert.deepStrictEqual(idsOf(yield* collective.nearest(direction(20, 0.1), 1)), ["g-broad"])
        // The ones dropped are not searchable either.
        const everything = yield* collective.nearest(direction(0), 10)
        assert.sameMembers(idsOf(everything), ["g-solid", "g-broad", "g-fair"])

        // A new global version replaces the tier wholesale.
        const next = [globalPattern("g-new", 60, 0.7, 20)]
        yield* collective.replace(next, [])
        assert.deepStrictEqual(collective.all(), next)
        assert.deepStrictEqual(collective.trends(), [])
        assert.deepStrictEqual(idsOf(yield* collective.nearest(direction(10), 10)), ["g-new"])
      }), { collective: 3 }))

  it.effect("a rejected global version fails with IndexError and the previous one keeps answering", () =>
    withTiers((tiers) =>
      Effect.gen(function*() {
        const { collective } = tiers
        const kept = [globalPattern("g-a", 0, 0.9, 10), globalPattern("g-b", 10, 0.8, 10)]
        yield* collective.replace(kept, [trend("item-1", 1)])
        // Finite, so it passes the protocol schema, but has no direction to compare by.
        const zero = { ...globalPattern("g-zero", 0, 0.9, 10), embedding: new Float32Array(EMBEDDING_DIMENSIONS) }
        const error = yield* Effect.flip(collective.replace([globalPattern("g-c", 20, 0.9, 10), zero], []))
        assert.strictEqual(error._tag, "IndexError")
        assert.deepStrictEqual(collective.all(), kept)
        assert.strictEqual(collective.trends().length, 1)
        assert.deepStrictEqual(idsOf(yield* collective.nearest(direction(10), 1)), ["g-b"])
        assert.sameMembers(idsOf(yield* collective.nearest(direction(0), 10)), ["g-a", "g-b"])
      })
    ))
})

describe("MemoryTiers.causal", () => {
  it.effect("credits the source that recommended the watched item, once", () =>
    withTiers((tiers) =>
      Effect.sync(() => {
        const { causal } = tiers
        causal.recordAction(contentId("a"), "local")
        causal.recordAction(contentId("b"), "collective")
        causal.recordAction(contentId("c"), "trend")
        causal.recordAction(contentId("d"), "local")
        // Recommended again from another source: the latest recommendation gets the credit.
        causal.recordAction(contentId("d"), "trend")

        assert.strictEqual(causal.recordOutcome(contentId("b"), true), "collective")
        assert.strictEqual(causal.recordOutcome(contentId("c"), false), "trend")
        assert.strictEqual(causal.recordOutcome(contentId("d"), true), "trend")
        assert.strictEqual(causal.recordOutcome(contentId("a"), false), "local")
        // Each recommendation is credited once, and a watch nobody recommended credits nobody.
        assert.isUndefined(causal.recordOutcome(contentId("b"), true))
        assert.isUndefined(causal.recordOutcome(contentId("never-recommended"), true))
        assert.deepStrictEqual(causal.outcomes(), {
          local: { watched: 1, successes: 0 },
          collective: { watched: 1, successes: 1 },
          cowatch: { watched: 0, successes: 0 },
          trend: { watched: 2, successes: 1 }
        })
      })
    ))

  it.effect("remembers at most `pendingActions` recommendations, forgetting the least recently made", () =>
    withTiers((tiers) =>
      Effect.sync(() => {
        const { causal } = tiers
        for (let n = 1; n <= 3; n++) causal.recordAction(itemId(n), "local")
        causal.recordAction(itemId(1), "collective") // refreshed: now the newest
        causal.recordAction(itemId(4), "trend") // over the bound: item-2 goes
        causal.recordAction(itemId(5), "trend") // and then item-3

        assert.isUndefined(causal.recordOutcome(itemId(2), true))
        assert.isUndefined(causal.recordOutcome(itemId(3), true))
        assert.strictEqual(causal.recordOutcome(itemId(1), true), "collective")
        assert.strictEqual(causal.recordOutcome(itemId(4), true), "trend")
        assert.strictEqual(causal.recordOutcome(itemId(5), false), "trend")
        assert.deepStrictEqual(causal.outcomes(), {
          local: { watched: 0, successes: 0 },
          collective: { watched: 1, successes: 1 },
          cowatch: { watched: 0, successes: 0 },
          trend: { watched: 2, successes: 1 }
        })
      }), { pendingActions: 3 }))
})
