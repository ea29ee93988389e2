/**
 * A seeded synthetic world for demos and benchmarks when MovieLens is not configured: a catalog
 * whose items have genres, release years and popularity, and viewers with a few favourite
 * genres, daily habits (what they watch in the morning differs from late at night) and a
 * tendency to watch popular items, so that both personal taste and crowd signal exist.
 */
import {
  type ContentId,
  dayTypeOf,
  seededRandom,
  timeOfDayOf,
  type ViewContext,
  type ViewingEvent
} from "@omega/protocol"
import { MOVIELENS_GENRES } from "./MovieLens.ts"

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
}

export interface SyntheticViewer {
  readonly id: number
  /** Genre -> preference weight; a few favourites dominate. */
  readonly taste: ReadonlyMap<string, number>
  /** Favourite genre for each part of the day. */
  readonly habits: Readonly<Record<ViewContext["timeOfDay"], string>>
}

export interface SyntheticWorld {
  readonly items: ReadonlyArray<SyntheticItem>
  readonly byGenre: ReadonlyMap<string, ReadonlyArray<SyntheticItem>>
  readonly viewers: ReadonlyArray<SyntheticViewer>
}

export const makeWorld = (options: { readonly items: number; readonly viewers: number; readonly seed?: number }) => {
  const random = seededRandom(options.seed ?? 7)
  const pick = <A>(xs: ReadonlyArray<A>): A => xs[Math.floor(random() * xs.length)]!
  const items: Array<SyntheticItem> = []
  for (let i = 0; i < options.items; i++) {
    const primary = SYNTHETIC_GENRES[Math.floor(Math.pow(random(), 1.5) * SYNTHETIC_GENRES.length)]!
    const genres = new Set<string>([primary])
    while (random() < 0.45 && genres.size < 3) genres.add(pick(SYNTHETIC_GENRES))
    const year = 1960 + Math.floor(Math.pow(random(), 0.5) * 67)
    items.push({
      contentId: `syn-${i}` as ContentId,
      title: `${pick(WORDS)} ${pick(WORDS)} (${year})`,
      genres: [...genres],
      popularity: 1 / Math.pow(1 + i * (0.7 + random() * 0.6), 0.8)
    })
  }
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
      }
    })
  }
  return { items, byGenre, viewers } satisfies SyntheticWorld
}

/** Draws the next viewing of `viewer` at time `at`, given what it watched recently. */
export const nextViewing = (
  world: SyntheticWorld,
  viewer: SyntheticViewer,
  at: number,
  recent: ReadonlyArray<ContentId>,
  random: () => number
): ViewingEvent => {
  const date = new Date(at)
  const timeOfDay = timeOfDayOf(date.getUTCHours())
  const genre = random() < 0.5 ? viewer.habits[timeOfDay] : weightedPick(viewer.taste, random)
  const pool = world.byGenre.get(genre) ?? world.items
  const item = popularPick(pool, random)
  const affinity = item.genres.reduce((sum, g) => sum + (viewer.taste.get(g) ?? 0), 0) / item.genres.length
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

/** Popular items are watched more: sample by popularity among a few random candidates. */
const popularPick = (pool: ReadonlyArray<SyntheticItem>, random: () => number): SyntheticItem => {
  let best = pool[Math.floor(random() * pool.length)]!
  for (let i = 0; i < 3; i++) {
    const candidate = pool[Math.floor(random() * pool.length)]!
    if (candidate.popularity * random() > best.popularity * random()) best = candidate
  }
  return best
}
