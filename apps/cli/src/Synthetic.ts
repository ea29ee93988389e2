/**
 * A seeded synthetic world for demos and benchmarks when MovieLens is not configured: a catalog
 * whose items have genres, release years and popularity, and viewers with a few favourite
 * genres, daily habits (what they watch in the morning differs from late at night) and a
 * tendency to watch popular items, so that both personal taste and crowd signal exist.
 *
 * Real viewing also has structure that no title or genre shows: the films one audience watches
 * together (a franchise, a director's followers, a cult). Each item belongs to one hidden
 * audience circle and each viewer follows a few circles, so part of what a viewer watches next
 * is only predictable from what other viewers of the same items watched: the collaborative
 * signal that co-watch rows carry and a TV alone cannot see.
 */
import {
  type ContentId,
  dayTypeOf,
  seededRandom,
  timeOfDayOf,
  type ViewContext,
  type ViewingEvent
} from "@omega/protocol"
import { type MovieLens, MOVIELENS_GENRES, type Rating } from "./MovieLens.ts"

/** The MovieLens genres (without "unknown"), so synthetic and real viewers share a vocabulary. */
export const SYNTHETIC_GENRES = MOVIELENS_GENRES.filter((genre) => genre !== "unknown")

const WORDS = [
  "Harbor",
  "Winter",
  "Signal",
  "Meadow",
  "Copper",
  "Lantern",
  "Orbit",
  "Willow",
  "Falcon",
  "Ember",
  "Canyon",
  "Velvet",
  "Atlas",
  "Marble",
  "Tide",
  "Ridge",
  "Static",
  "Juniper",
  "Quartz",
  "Hollow",
  "Beacon",
  "Saffron",
  "Drift",
  "Cinder",
  "Prairie",
  "Nova",
  "Thistle",
  "Granite",
  "Echo",
  "Mirage",
  "Summit",
  "Raven"
]

export interface SyntheticItem {
  readonly contentId: ContentId
  readonly title: string
  readonly genres: ReadonlyArray<string>
  /** Relative popularity (Zipf-like). */
  readonly popularity: number
  /** The hidden audience circle the item belongs to (not in its title or genres). */
  readonly circle: number
}

export interface SyntheticViewer {
  readonly id: number
  /** Genre -> preference weight; a few favourites dominate. */
  readonly taste: ReadonlyMap<string, number>
  /** Favourite genre for each part of the day. */
  readonly habits: Readonly<Record<ViewContext["timeOfDay"], string>>
  /** The hidden audience circles the viewer follows. */
  readonly circles: ReadonlyArray<number>
}

export interface SyntheticWorld {
  readonly items: ReadonlyArray<SyntheticItem>
  readonly byGenre: ReadonlyMap<string, ReadonlyArray<SyntheticItem>>
  readonly byCircle: ReadonlyArray<ReadonlyArray<SyntheticItem>>
  readonly viewers: ReadonlyArray<SyntheticViewer>
  /** Share of viewings drawn from one of the viewer's circles (the rest by genre). */
  readonly circleShare: number
  /** Share of viewings drawn from the whole catalog by popularity (the hits everyone watches). */
  readonly mainstreamShare: number
}

export interface WorldOptions {
  readonly items: number
  readonly viewers: number
  readonly seed?: number
  /** Hidden audience circles (default: one per 40 items). */
  readonly circles?: number
  /** Share of viewings drawn from a followed circle (default 0.5; 0 leaves only genre and popularity). */
  readonly circleShare?: number
  /** Share of viewings drawn from the whole catalog by popularity (default 0.15). */
  readonly mainstreamShare?: number
}

/** Share of a circle's films that have its genre and era. */
const CIRCLE_COHERENCE = 0.7

/** Two different circles (one when there is only one). */
const distinctCircles = (count: number, random: () => number): Array<number> => {
  const first = Math.floor(random() * count)
  if (count === 1) return [first]
  return [first, (first + 1 + Math.floor(random() * (count - 1))) % count]
}

export const makeWorld = (options: WorldOptions): SyntheticWorld => {
  const random = seededRandom(options.seed ?? 7)
  const pick = <A>(xs: ReadonlyArray<A>): A => xs[Math.floor(random() * xs.length)]!
  const circleCount = Math.max(1, options.circles ?? Math.round(options.items / 40))
  // A circle leans to one genre and era (like a franchise or a movement): most of its films have
  // both, so a TV's patterns gather them, yet films of the same genre and era outside it abound.
  const circleGenre = Array.from({ length: circleCount }, () => pick(SYNTHETIC_GENRES))
  const circleYear = Array.from({ length: circleCount }, () => 1965 + Math.floor(Math.pow(random(), 0.5) * 58))
  const items: Array<SyntheticItem> = []
  for (let i = 0; i < options.items; i++) {
    const circle = Math.floor(random() * circleCount)
    const typical = random() < CIRCLE_COHERENCE
    const primary = typical
      ? circleGenre[circle]!
      : SYNTHETIC_GENRES[Math.floor(Math.pow(random(), 1.5) * SYNTHETIC_GENRES.length)]!
    const genres = new Set<string>([primary])
    while (random() < 0.45 && genres.size < 3) genres.add(pick(SYNTHETIC_GENRES))
    const year = typical
      ? circleYear[circle]! + Math.floor(random() * 9) - 4
      : 1960 + Math.floor(Math.pow(random(), 0.5) * 67)
    items.push({
      contentId: `syn-${i}` as ContentId,
      title: `${pick(WORDS)} ${pick(WORDS)} (${year})`,
      genres: [...genres],
      popularity: 1 / Math.pow(1 + i * (0.7 + random() * 0.6), 0.8),
      circle
    })
  }
  const byCircle = Array.from({ length: circleCount }, () => [] as Array<SyntheticItem>)
  for (const item of items) byCircle[item.circle]!.push(item)
  for (const circle of byCircle) circle.sort((a, b) => b.popularity - a.popularity)
  const byGenre = new Map<string, Array<SyntheticItem>>()
  for (const item of items) {
    for (const genre of item.genres) {
      let list = byGenre.get(genre)
      if (list === undefined) byGenre.set(genre, list = [])
      list.push(item)
    }
  }
  const viewers: Array<SyntheticViewer> = []
  for (let v = 0; v < options.viewers; v++) {
    const taste = new Map<string, number>()
    for (const genre of SYNTHETIC_GENRES) taste.set(genre, 0.05 * random())
    const favourites = [pick(SYNTHETIC_GENRES), pick(SYNTHETIC_GENRES), pick(SYNTHETIC_GENRES)]
    favourites.forEach((genre, rank) => taste.set(genre, (taste.get(genre) ?? 0) + 1 / (rank + 1)))
    viewers.push({
      id: v,
      taste,
      habits: {
        morning: pick(favourites),
        afternoon: random() < 0.5 ? "Children's" : pick(favourites),
        evening: favourites[0]!,
        night: random() < 0.5 ? "Thriller" : pick(favourites)
      },
      circles: distinctCircles(circleCount, random)
    })
  }
  return {
    items,
    byGenre,
    byCircle,
    viewers,
    circleShare: options.circleShare ?? 0.5,
    mainstreamShare: options.mainstreamShare ?? 0.15
  }
}

/** Draws the next viewing of `viewer` at time `at`, given what it watched recently. */
export const nextViewing = (
  world: SyntheticWorld,
  viewer: SyntheticViewer,
  at: number,
  recent: ReadonlyArray<ContentId>,
  random: () => number,
  seen: ReadonlySet<ContentId> = new Set()
): ViewingEvent => {
  const date = new Date(at)
  const timeOfDay = timeOfDayOf(date.getUTCHours())
  const draw = random()
  // The hits of the moment, whatever one's taste: what popularity and trends capture.
  const mainstream = draw < world.mainstreamShare
  const circle = !mainstream && draw < world.mainstreamShare + world.circleShare
    ? world.byCircle[viewer.circles[Math.floor(random() * viewer.circles.length)]!]
    : undefined
  const genre = random() < 0.5 ? viewer.habits[timeOfDay] : weightedPick(viewer.taste, random)
  // A circle's films are mostly watched in the order its audience goes through them (most
  // watched first): what a viewer watches next in a circle is what its other viewers watched
  // after the same films.
  const next = circle !== undefined && random() < 0.8 ? circle.find((i) => !seen.has(i.contentId)) : undefined
  const pool = mainstream
    ? world.items
    : circle !== undefined && circle.length > 0
    ? circle
    : world.byGenre.get(genre) ?? world.items
  const item = next ?? popularPick(pool, random)
  // A film of a circle the viewer follows is one it came for, whatever its genres; a hit is
  // mostly enjoyed.
  const genreAffinity = item.genres.reduce((sum, g) => sum + (viewer.taste.get(g) ?? 0), 0) / item.genres.length
  const affinity = viewer.circles.includes(item.circle) ? 1 : mainstream ? Math.max(0.7, genreAffinity) : genreAffinity
  const watchShare = Math.min(1, Math.max(0, 0.35 + 0.6 * affinity + (random() - 0.5) * 0.3))
  const context: ViewContext = {
    timeOfDay,
    dayType: dayTypeOf(date.getUTCDay()),
    recentWatches: recent.slice(-5)
  }
  return { contentId: item.contentId, title: item.title, genres: item.genres, watchedAt: at, watchShare, context }
}

const weightedPick = (weights: ReadonlyMap<string, number>, random: () => number): string => {
  let total = 0
  for (const w of weights.values()) total += w
  let r = random() * total
  for (const [key, w] of weights) {
    r -= w
    if (r <= 0) return key
  }
  return [...weights.keys()][0]!
}

/** Popular items are watched more: a draw from the pool in proportion to popularity. */
const popularPick = (pool: ReadonlyArray<SyntheticItem>, random: () => number): SyntheticItem => {
  let cumulative = cumulativePopularity.get(pool)
  if (cumulative === undefined) {
    cumulative = cumulativeSums(pool.map((item) => item.popularity))
    cumulativePopularity.set(pool, cumulative)
  }
  return pool[drawIndex(cumulative, random)]!
}

const cumulativePopularity = new WeakMap<ReadonlyArray<SyntheticItem>, Float64Array>()

const cumulativeSums = (weights: ReadonlyArray<number>): Float64Array => {
  let total = 0
  return Float64Array.from(weights, (w) => total += w)
}

/** An index drawn in proportion to the weights whose running sums are `cumulative`. */
const drawIndex = (cumulative: Float64Array, random: () => number): number => {
  const r = random() * cumulative[cumulative.length - 1]!
  let lo = 0
  let hi = cumulative.length - 1
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (cumulative[mid]! < r) lo = mid + 1
    else hi = mid
  }
  return lo
}

/**
 * Hours of the day TVs are watched, as running sums of weights (index = hour, UTC as the replay
 * reads it): prime time dominates, mornings are rare.
 */
const VIEWING_HOURS = cumulativeSums([2, 1, 0.5, 0, 0, 0, 0.5, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 4, 6, 10, 12, 12, 8, 4])

/**
 * Viewings of every viewer of `world`, between a quarter and 1.75 times `viewings` (0.75 times
 * on average, at least 10), one every day or two at a TV-like hour, as MovieLens-shaped ratings
 * (watch share x 5), so the evaluation's splits and replay read them like MovieLens. A viewer
 * rarely watches a film twice: a draw of something already watched is drawn again (up to three
 * times).
 */
export const syntheticRatings = (world: SyntheticWorld, viewings: number, seed: number): MovieLens => {
  const random = seededRandom(seed)
  const byUser = new Map<number, Array<Rating>>()
  for (const viewer of world.viewers) {
    const ratings: Array<Rating> = []
    const recent: Array<ContentId> = []
    const seen = new Set<ContentId>()
    // TVs join over the first four months, and some watch far more than others (a few heavy viewers).
    let day = Date.UTC(2026, 8, 1) + Math.floor(random() * 120) * 86_400_000
    let at = day
    const count = Math.max(10, Math.round(viewings * (0.25 + 1.5 * random() ** 2)))
    for (let i = 0; i < count; i++) {
      // Most evenings one film, some evenings two; a day or two off now and then.
      if (random() < 0.7) day += 86_400_000 * (random() < 0.8 ? 1 : 2)
      at = Math.max(at + 60_000, day + drawIndex(VIEWING_HOURS, random) * 3_600_000 + Math.floor(random() * 3_600_000))
      let event = nextViewing(world, viewer, at, recent, random, seen)
      for (let retry = 0; retry < 3 && seen.has(event.contentId); retry++) {
        event = nextViewing(world, viewer, at, recent, random, seen)
      }
      seen.add(event.contentId)
      ratings.push({ user: viewer.id, contentId: event.contentId, rating: event.watchShare * 5, at })
      recent.push(event.contentId)
    }
    byUser.set(viewer.id, ratings)
  }
  return {
    movies: world.items.map(({ contentId, genres, title }) => ({ contentId, title, genres })),
    byUser
  }
}
