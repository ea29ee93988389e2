/** What a TV sees: viewing events and the context they happen in. These never leave the TV. */
import { Schema } from "effect"
import { MAX_RECENT_WATCHES } from "./Constants.ts"
import { isNulFree } from "./Text.ts"

/** Identifier of a catalog item (movie, episode, channel programme). */
export const ContentId = Schema.String.check(Schema.isBetweenLength(1, 128), isNulFree).pipe(
  Schema.brand("ContentId")
)
export type ContentId = typeof ContentId.Type

/** Title of a catalog item. */
export const Title = Schema.String.check(Schema.isMaxLength(512), isNulFree)

/** One genre of a catalog item. */
export const Genre = Schema.String.check(Schema.isBetweenLength(1, 64), isNulFree)

/** The genres of a catalog item. */
export const Genres = Schema.Array(Genre).check(Schema.isMaxLength(32))

export const TimeOfDay = Schema.Literals(["morning", "afternoon", "evening", "night"])
export type TimeOfDay = typeof TimeOfDay.Type

export const DayType = Schema.Literals(["weekday", "weekend"])
export type DayType = typeof DayType.Type

export const Mood = Schema.Literals(["relaxed", "excited", "focused", "social"])
export type Mood = typeof Mood.Type

/** Epoch milliseconds. */
export const Timestamp = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 8.64e15 }))

/** A share in [0, 1]: watch share, success rate, confidence. */
export const UnitInterval = Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 1 }))

/** When and how the TV is being watched. */
export const ViewContext = Schema.Struct({
  timeOfDay: TimeOfDay,
  dayType: DayType,
  recentWatches: Schema.Array(ContentId).check(Schema.isMaxLength(MAX_RECENT_WATCHES)),
  mood: Schema.optionalKey(Mood)
})
export type ViewContext = typeof ViewContext.Type

/** One thing watched on this TV, with how much of it was watched. */
export const ViewingEvent = Schema.Struct({
  contentId: ContentId,
  title: Title,
  genres: Genres,
  watchedAt: Timestamp,
  /** Share of the item that was watched, 0..1. */
  watchShare: UnitInterval,
  context: ViewContext
})
export type ViewingEvent = typeof ViewingEvent.Type

/** Context of an hour of a day (local time) as the brain buckets it. */
export const timeOfDayOf = (hour: number): TimeOfDay =>
  hour >= 5 && hour < 12
    ? "morning"
    : hour >= 12 && hour < 17
    ? "afternoon"
    : hour >= 17 && hour < 23
    ? "evening"
    : "night"

/** Weekday or weekend of a day of the week (0 = Sunday). */
export const dayTypeOf = (dayOfWeek: number): DayType => (dayOfWeek === 0 || dayOfWeek === 6 ? "weekend" : "weekday")
