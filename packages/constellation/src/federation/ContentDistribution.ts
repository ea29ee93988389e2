/**
 * New-content distribution: which newly announced catalog items go to which TVs. Every TV of a
 * region gets the region's new items; when there are more than a download may carry, the ones
 * nearest the region's (or the TV's own) global patterns go first, so each TV hears first of what
 * its viewers are likeliest to want. Items travel in ContentUpdate-sized batches.
 */
import { type ContentEmbedding, type GlobalPattern, MAX_CONTENT_ITEMS } from "@omega/protocol"
import { dot } from "../internal/vectors.ts"
import { patternQuality } from "./Averaging.ts"

/**
 * Up to `cap` of `items` for TVs whose tastes are `patterns`: all of them when they fit, else
 * ranked by their best quality-weighted cosine to a pattern (input order breaks ties, and with no
 * patterns the input order, newest first by convention, decides).
 */
export const newContentFor = (
  items: ReadonlyArray<ContentEmbedding>,
  patterns: ReadonlyArray<GlobalPattern>,
  cap: number
): Array<ContentEmbedding> => {
  if (items.length <= cap) return [...items]
  if (patterns.length === 0) return items.slice(0, Math.max(0, cap))
  const relevance = items.map((item, i) => {
    let best = 0
    for (const p of patterns) best = Math.max(best, dot(item.embedding, p.embedding) * (1 + patternQuality(p)))
    return { i, best }
  })
  return relevance
    .sort((a, b) => b.best - a.best || a.i - b.i)
    .slice(0, Math.max(0, cap))
    .map(({ i }) => items[i]!)
}

/** Splits items into ContentUpdate batches (at most MAX_CONTENT_ITEMS each). */
export const contentBatches = <A>(items: ReadonlyArray<A>, size: number = MAX_CONTENT_ITEMS): Array<Array<A>> => {
  const batches: Array<Array<A>> = []
  for (let at = 0; at < items.length; at += size) batches.push(items.slice(at, at + size))
  return batches
}
