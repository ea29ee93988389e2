/**
 * Learned patterns and what the constellation sends back. A pattern is a taste
 * (a centroid in embedding space) with quality statistics in a coarse context; it
 * carries no content id, title or timestamp of anything watched.
 */
import { Schema } from "effect"
import {
  MAX_COWATCH_COUNT_NEIGHBOURS,
  MAX_COWATCH_NEIGHBOURS,
  MAX_DELTA_PATTERNS,
  MAX_GLOBAL_PATTERNS,
  MAX_TRENDS
} from "./Constants.ts"
import { Embedding } from "./Embedding.ts"
import { isNulFree } from "./Text.ts"
import { ContentId, DayType, Genres, Mood, TimeOfDay, Timestamp, Title, UnitInterval } from "./Viewing.ts"

export const PatternId = Schema.String.check(Schema.isBetweenLength(1, 64), isNulFree).pipe(Schema.brand("PatternId"))
export type PatternId = typeof PatternId.Type

export const Region = Schema.String.check(Schema.isBetweenLength(1, 32), isNulFree)

/** Monotonic version counter (local pattern versions, global versions). */
export const Version = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

export const SampleCount = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0))

/** The coarse context a pattern applies in; no recent watches, nothing identifying. */
export const PatternContext = Schema.Struct({
  timeOfDay: Schema.optionalKey(TimeOfDay),
  dayType: Schema.optionalKey(DayType),
  mood: Schema.optionalKey(Mood)
})
export type PatternContext = typeof PatternContext.Type

/** A pattern as the brain stores it. */
export const ViewingPattern = Schema.Struct({
  id: PatternId,
  embedding: Embedding,
  successRate: UnitInterval,
  /** Decayed count of viewings folded into this pattern. */
  sampleCount: SampleCount,
  context: PatternContext,
  createdAt: Timestamp,
  updatedAt: Timestamp
})
export type ViewingPattern = typeof ViewingPattern.Type

/** A pattern as it leaves the TV: the stored pattern without its timestamps. */
export const SharedPattern = Schema.Struct({
  id: PatternId,
  embedding: Embedding,
  successRate: UnitInterval,
  sampleCount: SampleCount,
  context: PatternContext
})
export type SharedPattern = typeof SharedPattern.Type

/** Changes to a TV's shareable patterns since `baseVersion`, up to `version`. */
export const PatternDelta = Schema.Struct({
  baseVersion: Version,
  version: Version,
  added: Schema.Array(SharedPattern).check(Schema.isMaxLength(MAX_DELTA_PATTERNS)),
  updated: Schema.Array(SharedPattern).check(Schema.isMaxLength(MAX_DELTA_PATTERNS)),
  removed: Schema.Array(PatternId).check(Schema.isMaxLength(MAX_DELTA_PATTERNS))
}).check(
  Schema.makeFilter((d) =>
    d.version >= d.baseVersion || `version ${d.version} is older than baseVersion ${d.baseVersion}`
  )
)
export type PatternDelta = typeof PatternDelta.Type

/** A pattern aggregated across devices by the constellation. */
export const GlobalPattern = Schema.Struct({
  id: PatternId,
  embedding: Embedding,
  successRate: UnitInterval,
  sampleCount: SampleCount,
  /** Distinct devices folded into this pattern; never below the k-anonymity floor. */
  deviceCount: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  context: PatternContext
})
export type GlobalPattern = typeof GlobalPattern.Type

/** Something gaining viewers in a region. */
export const TrendSignal = Schema.Struct({
  contentId: ContentId,
  region: Region,
  /** Relative momentum, higher is hotter; decays over time. */
  score: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)),
  /** Momentum change per hour. */
  velocity: Schema.Finite
})
export type TrendSignal = typeof TrendSignal.Type

/**
 * How strongly viewers of one item also watch another, in 1/1000: co-watching devices over a
 * mean of both items' viewing devices that leans towards the other item's (the constellation's
 * popularityPenalty; an even mean would be the cosine of the items' device sets), so a neighbour
 * everyone watches counts for less. Integers keep it to one or two bytes on the wire.
 */
export const CoWatchWeight = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 1000 }))

/** A catalog item co-watched with another, and how strongly. */
export const CoWatchNeighbour = Schema.Struct({ contentId: ContentId, weight: CoWatchWeight })
export type CoWatchNeighbour = typeof CoWatchNeighbour.Type

/**
 * The items most often watched by the same devices as `contentId`, strongest first. The
 * constellation publishes a pair only when at least k distinct devices watched both; an empty
 * list withdraws the item's row.
 */
export const CoWatchRow = Schema.Struct({
  contentId: ContentId,
  neighbours: Schema.Array(CoWatchNeighbour).check(Schema.isMaxLength(MAX_COWATCH_NEIGHBOURS))
})
export type CoWatchRow = typeof CoWatchRow.Type

/** Devices behind a count: at least one, at most 2^31 (more TVs than a shard will ever see). */
const DeviceCount = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 2 ** 31 }))

/**
 * One item's co-watch counts on a shard, for the federation worker (never for a TV): how many of
 * the shard's devices watched it, and for its most shared neighbours how many watched both. The
 * worker sums them over shards, so a pair can reach k across shards that no shard has alone.
 */
export const CoWatchCount = Schema.Struct({
  contentId: ContentId,
  devices: DeviceCount,
  neighbours: Schema.Array(Schema.Struct({ contentId: ContentId, devices: DeviceCount })).check(
    Schema.isMaxLength(MAX_COWATCH_COUNT_NEIGHBOURS)
  )
})
export type CoWatchCount = typeof CoWatchCount.Type

/** An item of the catalog with its embedding; new content is announced this way. */
export const ContentEmbedding = Schema.Struct({
  contentId: ContentId,
  title: Title,
  genres: Genres,
  embedding: Embedding
})
export type ContentEmbedding = typeof ContentEmbedding.Type

/** What a TV pulls from the constellation. */
export const GlobalPatterns = Schema.Struct({
  version: Version,
  similar: Schema.Array(GlobalPattern).check(Schema.isMaxLength(MAX_GLOBAL_PATTERNS)),
  trending: Schema.Array(TrendSignal).check(Schema.isMaxLength(MAX_TRENDS))
})
export type GlobalPatterns = typeof GlobalPatterns.Type

/** One ranked suggestion with the reason shown to the viewer. */
export const Recommendation = Schema.Struct({
  contentId: ContentId,
  title: Schema.String,
  score: Schema.Finite,
  reason: Schema.String,
  confidence: UnitInterval
})
export type Recommendation = typeof Recommendation.Type
