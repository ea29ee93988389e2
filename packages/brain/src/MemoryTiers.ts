/**
 * The brain's working memory, in four tiers on different time scales:
 * episodes (recent raw events, bounded), skills (consolidated local patterns with a
 * nearest-neighbour index, up to 10,000), collective (global patterns from the
 * constellation, bounded) and causal (which recommendation source led to a good watch).
 * Purely in memory: BrainStore persists, OmegaBrain decides what goes where.
 */
import {
  type ContentId,
  EMBEDDING_DIMENSIONS,
  type GlobalPattern,
  MAX_SKILL_PATTERNS,
  type PatternId,
  type TrendSignal,
  type ViewingEvent
} from "@omega/protocol"
import { Context, Effect, Layer } from "effect"
import type { LocalPattern } from "./BrainStore.ts"
import { loadSnapshot, saveSnapshot } from "./internal/IndexSnapshot.ts"
import { KeyMap } from "./internal/KeyMap.ts"
import { type IndexError, type IndexHandle, VectorIndex } from "./VectorIndex.ts"

export interface TierLimits {
  readonly episodes: number
  readonly skills: number
  readonly collective: number
  /** Recommendations remembered while waiting to see whether they were watched. */
  readonly pendingActions: number
}

export const defaultTierLimits: TierLimits = {
  episodes: 500,
  skills: MAX_SKILL_PATTERNS,
  collective: 2_000,
  pendingActions: 200
}

/**
 * HNSW settings for the brain's indices: modest graph-building effort keeps an observe under a
 * millisecond, and the search breadth keeps neighbours accurate on clustered taste vectors.
 */
export const INDEX_TUNING = { connectivity: 16, expansionAdd: 64, expansionSearch: 96 } as const

/** Where a recommendation came from; the causal tier learns which sources pay off. */
export type RecommendationSource = "local" | "collective" | "cowatch" | "trend"

export interface SourceOutcome {
  /** Recommendations from this source that were then watched. */
  readonly watched: number
  /** Of those, how many were watched through (successes). */
  readonly successes: number
}

export interface Neighbour<A> {
  readonly value: A
  readonly similarity: number
}

export class MemoryTiers extends Context.Service<MemoryTiers, {
  readonly limits: TierLimits
  readonly episodes: {
    readonly remember: (event: ViewingEvent) => void
    /** Newest last. */
    readonly recent: (n: number) => ReadonlyArray<ViewingEvent>
    readonly hasWatched: (id: ContentId) => boolean
    /** Everything ever watched, by last watch, oldest first. */
    readonly watched: () => IterableIterator<ContentId>
    readonly markWatched: (ids: Iterable<ContentId>) => void
    readonly watchedCount: () => number
    /** Counts changes to the watched set or its order: anything derived from them is stale once it moves. */
    readonly watchedVersion: () => number
  }
  readonly skills: {
    readonly get: (id: PatternId) => LocalPattern | undefined
    readonly all: () => IterableIterator<LocalPattern>
    readonly size: () => number
    readonly upsert: (pattern: LocalPattern) => Effect.Effect<void, IndexError>
    /** Loads many patterns at once (start-up). */
    readonly upsertMany: (patterns: ReadonlyArray<LocalPattern>) => Effect.Effect<void, IndexError>
    readonly remove: (id: PatternId) => Effect.Effect<void>
    /** Counts changes to the patterns: anything derived from them is stale once it moves. */
    readonly version: () => number
    readonly nearest: (v: Float32Array, k: number) => Effect.Effect<ReadonlyArray<Neighbour<LocalPattern>>, IndexError>
    /** Saves the index and its keys to `path`, stamped with the store version it reflects. */
    readonly save: (path: string, stamp: number) => Effect.Effect<void, unknown>
    /** Takes `patterns` with the index saved at `path` if its stamp matches; false means rebuild. */
    readonly restore: (path: string, stamp: number, patterns: ReadonlyArray<LocalPattern>) => Effect.Effect<boolean>
  }
  readonly collective: {
    /** Replaces the tier with a new global version, keeping the best `limits.collective`. */
    readonly replace: (
      patterns: ReadonlyArray<GlobalPattern>,
      trends: ReadonlyArray<TrendSignal>
    ) => Effect.Effect<void, IndexError>
    readonly all: () => ReadonlyArray<GlobalPattern>
    readonly trends: () => ReadonlyArray<TrendSignal>
    readonly nearest: (v: Float32Array, k: number) => Effect.Effect<ReadonlyArray<Neighbour<GlobalPattern>>, IndexError>
  }
  readonly causal: {
    /** Remembers that `id` was recommended because of `source`. */
    readonly recordAction: (id: ContentId, source: RecommendationSource) => void
    /** Credits the source of an earlier recommendation of `id`, if any, with this outcome. */
    readonly recordOutcome: (id: ContentId, success: boolean) => RecommendationSource | undefined
    readonly outcomes: () => Readonly<Record<RecommendationSource, SourceOutcome>>
  }
}>()("omega/brain/MemoryTiers") {
  static readonly layer = (limits: TierLimits = defaultTierLimits) => Layer.effect(MemoryTiers, make(limits))
}

function make(limits: TierLimits) {
  return Effect.gen(function*() {
    const vectorIndex = yield* VectorIndex

    // Episodes: a ring buffer of the newest events, plus the set of everything watched.
    const ring: Array<ViewingEvent> = []
    let ringStart = 0
    const watched = new Set<ContentId>()
    let watchedVersion = 0
    const episodes = {
      remember: (event: ViewingEvent) => {
        watchedVersion += 1
        // Re-inserted, so the set's order stays by last watch (a re-watched item is the newest again).
        watched.delete(event.contentId)
        watched.add(event.contentId)
        if (ring.length < limits.episodes) ring.push(event)
        else {
          ring[ringStart] = event
          ringStart = (ringStart + 1) % limits.episodes
        }
      },
      recent: (n: number) => {
        const ordered = ring.length < limits.episodes ? ring : [...ring.slice(ringStart), ...ring.slice(0, ringStart)]
        return ordered.slice(Math.max(0, ordered.length - n))
      },
      hasWatched: (id: ContentId) => watched.has(id),
      watched: () => watched.values(),
      markWatched: (ids: Iterable<ContentId>) => {
        watchedVersion += 1
        for (const id of ids) watched.add(id)
      },
      watchedCount: () => watched.size,
      watchedVersion: () => watchedVersion
    }

    // Skills: patterns by id, with index keys assigned on first sight.
    const skillOptions = {
      dimensions: EMBEDDING_DIMENSIONS,
      quantization: "f16",
      capacity: 1_024,
      ...INDEX_TUNING
    } as const
    let skillIndex = yield* vectorIndex.create(skillOptions)
    const patterns = new Map<PatternId, LocalPattern>()
    let keys = new KeyMap<PatternId>()
    // Bumped with every change to `patterns`, which changes only here.
    let skillsVersion = 0
    const skills = {
      get: (id: PatternId) => patterns.get(id),
      all: () => patterns.values(),
      size: () => patterns.size,
      version: () => skillsVersion,
      upsert: (pattern: LocalPattern) =>
        skillIndex.upsert(keys.keyOf(pattern.id), pattern.embedding).pipe(
          Effect.tap(() =>
            Effect.sync(() => {
              patterns.set(pattern.id, pattern)
              skillsVersion += 1
            })
          )
        ),
      upsertMany: (many: ReadonlyArray<LocalPattern>) =>
        skillIndex.upsertMany(many.map((p) => [keys.keyOf(p.id), p.embedding] as const)).pipe(
          Effect.tap(() =>
            Effect.sync(() => {
              for (const p of many) patterns.set(p.id, p)
              skillsVersion += 1
            })
          )
        ),
      remove: (id: PatternId) =>
        Effect.suspend(() => {
          const key = keys.release(id)
          patterns.delete(id)
          skillsVersion += 1
          return key === undefined ? Effect.void : skillIndex.remove(key)
        }),
      nearest: (v: Float32Array, k: number) =>
        skillIndex.search(v, k).pipe(Effect.map((hits) => keys.resolve(hits, patterns))),
      save: (path: string, stamp: number) => saveSnapshot(skillIndex, keys, path, stamp),
      restore: (path: string, stamp: number, restored: ReadonlyArray<LocalPattern>) =>
        loadSnapshot(vectorIndex, path, stamp, restored.map((p) => p.id), skillOptions).pipe(
          Effect.map((snapshot) => {
            if (snapshot === undefined) return false
            skillIndex = snapshot.index
            keys = snapshot.keys
            patterns.clear()
            for (const p of restored) patterns.set(p.id, p)
            skillsVersion += 1
            return true
          })
        )
    }

    // Collective: rebuilt on every new global version (they arrive every few minutes at most).
    let collectivePatterns: ReadonlyArray<GlobalPattern> = []
    let collectiveIndex: IndexHandle | undefined
    let trendSignals: ReadonlyArray<TrendSignal> = []
    const collectiveById = new Map<PatternId, GlobalPattern>()
    let collectiveKeys = new KeyMap<PatternId>()
    const collective = {
      replace: Effect.fnUntraced(function*(incoming: ReadonlyArray<GlobalPattern>, trends: ReadonlyArray<TrendSignal>) {
        const kept = [...incoming]
          .sort((a, b) => quality(b) - quality(a))
          .slice(0, limits.collective)
        const index = yield* vectorIndex.create({
          dimensions: EMBEDDING_DIMENSIONS,
          quantization: "f16",
          capacity: Math.max(16, kept.length),
          ...INDEX_TUNING
        })
        // Keyed aside and swapped in only on success: a rejected version leaves the current one searchable.
        const nextKeys = new KeyMap<PatternId>()
        yield* index.upsertMany(kept.map((p) => [nextKeys.keyOf(p.id), p.embedding] as const))
        collectiveKeys = nextKeys
        collectiveById.clear()
        for (const p of kept) collectiveById.set(p.id, p)
        collectivePatterns = kept
        collectiveIndex = index
        trendSignals = trends
      }),
      all: () => collectivePatterns,
      trends: () => trendSignals,
      nearest: (v: Float32Array, k: number) =>
        collectiveIndex === undefined ?
          Effect.succeed([]) :
          collectiveIndex.search(v, k).pipe(Effect.map((hits) => collectiveKeys.resolve(hits, collectiveById)))
    }

    // Causal: recommendation -> outcome, credited to the source that produced it.
    const pending = new Map<ContentId, RecommendationSource>()
    const outcomes: Record<RecommendationSource, { watched: number; successes: number }> = {
      local: { watched: 0, successes: 0 },
      collective: { watched: 0, successes: 0 },
      cowatch: { watched: 0, successes: 0 },
      trend: { watched: 0, successes: 0 }
    }
    const causal = {
      recordAction: (id: ContentId, source: RecommendationSource) => {
        pending.delete(id)
        pending.set(id, source)
        if (pending.size > limits.pendingActions) pending.delete(pending.keys().next().value!)
      },
      recordOutcome: (id: ContentId, success: boolean) => {
        const source = pending.get(id)
        if (source === undefined) return undefined
        pending.delete(id)
        outcomes[source].watched += 1
        if (success) outcomes[source].successes += 1
        return source
      },
      // A copy: the counts change with every watch, and a caller's stats must not move with them.
      outcomes: () => structuredClone(outcomes)
    }

    return MemoryTiers.of({ limits, episodes, skills, collective, causal })
  })
}

/** Quality of a global pattern: success weighted by how much evidence backs it. */
const quality = (p: GlobalPattern) => p.successRate * Math.log1p(p.sampleCount)
