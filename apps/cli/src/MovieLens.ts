/**
 * Reads MovieLens 100K (u.data, u.item) into viewing events: each user is one TV, a rating is a
 * viewing with watch share rating / 5 (rating >= 4 is a success) at the rating's timestamp.
 */
import { type ContentId, dayTypeOf, timeOfDayOf, type ViewContext } from "@omega/protocol"
import { Data, Effect } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"

export interface Movie {
  readonly contentId: ContentId
  readonly title: string
  readonly genres: ReadonlyArray<string>
}

export interface Rating {
  readonly user: number
  readonly contentId: ContentId
  readonly rating: number
  /** Epoch milliseconds. */
  readonly at: number
}

export interface MovieLens {
  readonly movies: ReadonlyArray<Movie>
  /** Ratings of each user, in time order. */
  readonly byUser: ReadonlyMap<number, ReadonlyArray<Rating>>
}

/** The dataset folder is missing or unreadable; tells where it looked and how to point at it. */
export class DatasetMissing extends Data.TaggedError("DatasetMissing")<{ readonly message: string }> {}

/** Where to look for MovieLens: --dataset, then OMEGA_DATASET, then ../shared/data/ml-100k. */
export const datasetPath = (flag: string | undefined): string =>
  flag ?? process.env["OMEGA_DATASET"] ?? join(process.cwd(), "..", "shared", "data", "ml-100k")

export const loadMovieLens = (dir: string) =>
  Effect.try({
    try: () => {
      const data = join(dir, "u.data")
      const items = join(dir, "u.item")
      if (!existsSync(data) || !existsSync(items)) {
        throw new Error(`no u.data/u.item in ${dir}; set OMEGA_DATASET or pass --dataset <ml-100k folder>`)
      }
      return parse(readFileSync(data, "utf8"), readFileSync(items, "latin1"))
    },
    catch: (cause) => new DatasetMissing({ message: cause instanceof Error ? cause.message : String(cause) })
  })

/** MovieLens genres in the order of u.item's flags. */
export const MOVIELENS_GENRES = [
  "unknown",
  "Action",
  "Adventure",
  "Animation",
  "Children's",
  "Comedy",
  "Crime",
  "Documentary",
  "Drama",
  "Fantasy",
  "Film-Noir",
  "Horror",
  "Musical",
  "Mystery",
  "Romance",
  "Sci-Fi",
  "Thriller",
  "War",
  "Western"
]

const movieId = (id: string) => `ml-${id}` as ContentId

function parse(data: string, items: string): MovieLens {
  const movies: Array<Movie> = []
  for (const line of items.split("\n")) {
    const fields = line.split("|")
    if (fields.length < 24) continue
    const flags = fields.slice(5, 24)
    movies.push({
      contentId: movieId(fields[0]!),
      title: fields[1]!,
      genres: MOVIELENS_GENRES.filter((_, i) => flags[i] === "1" && i > 0)
    })
  }
  const byUser = new Map<number, Array<Rating>>()
  for (const line of data.split("\n")) {
    const [user, item, rating, ts] = line.split("\t")
    if (ts === undefined) continue
    const u = Number(user)
    let list = byUser.get(u)
    if (list === undefined) byUser.set(u, list = [])
    list.push({ user: u, contentId: movieId(item!), rating: Number(rating), at: Number(ts) * 1000 })
  }
  for (const list of byUser.values()) list.sort((a, b) => a.at - b.at || a.contentId.localeCompare(b.contentId))
  return { movies, byUser }
}

/** The viewing context of a rating: time of day and day type from its timestamp, recent watches before it. */
export const contextAt = (at: number, recentWatches: ReadonlyArray<ContentId>): ViewContext => {
  const date = new Date(at)
  return {
    timeOfDay: timeOfDayOf(date.getUTCHours()),
    dayType: dayTypeOf(date.getUTCDay()),
    recentWatches: recentWatches.slice(-5)
  }
}
