/**
 * Personalised downloads: of a region's global patterns a TV gets the ones nearest the patterns it
 * uploaded itself (a shard already holds those), so a few kilobytes carry what is relevant to
 * that TV instead of the region's overall best. Part of every download stays the region's best,
 * so a TV's taste can still widen.
 */
import type { GlobalPattern } from "@omega/protocol"
import { dot } from "../internal/vectors.ts"
import { patternQuality } from "./Averaging.ts"

export interface PersonalizationOptions {
  /** Global patterns in one download. */
  readonly limit: number
  /** Share of the download chosen by nearness to the device's patterns (the rest: best quality). */
  readonly nearestShare: number
}

export const defaultPersonalizationOptions: PersonalizationOptions = { limit: 64, nearestShare: 0.75 }

/**
 * The global patterns to send a device that uploaded `uploaded` (unit vectors): the nearest by
 * cosine to any of them, then the best of the rest; every pattern at most once, nearest first.
 */
export const personalizedPatterns = (
  global: ReadonlyArray<GlobalPattern>,
  uploaded: ReadonlyArray<Float32Array>,
  options: PersonalizationOptions = defaultPersonalizationOptions
): Array<GlobalPattern> => {
  const limit = Math.max(0, Math.min(options.limit, global.length))
  const nearestCount = uploaded.length === 0 ? 0 : Math.round(limit * Math.min(1, Math.max(0, options.nearestShare)))
  const nearness = global.map((g, i) => {
    let best = -Infinity
    for (const u of uploaded) best = Math.max(best, dot(g.embedding, u))
    return { i, nearness: best, quality: patternQuality(g) }
  })
  const chosen = new Set<number>()
  for (const n of [...nearness].sort((a, b) => b.nearness - a.nearness || b.quality - a.quality)) {
    if (chosen.size >= nearestCount) break
    chosen.add(n.i)
  }
  for (const n of [...nearness].sort((a, b) => b.quality - a.quality || a.i - b.i)) {
    if (chosen.size >= limit) break
    chosen.add(n.i)
  }
  return [...chosen].map((i) => global[i]!)
}
