/**
 * The federation worker's default `Federate`: per region, every shard's aggregated patterns go
 * through the robust quality-weighted averaging of `federation/Averaging.ts` (grouped by cosine
 * within a context, each device's evidence bounded, outliers trimmed), and only groups of at
 * least k distinct devices are redistributed. Trends from the shards are summed per item.
 */
import type { GlobalPattern, TrendSignal } from "@omega/protocol"
import { type AveragingConfig, defaultAveragingConfig, federate } from "./federation/Averaging.ts"
import type { Federate, ShardRegionPatterns } from "./FederationWorker.ts"

export interface CrossShardConfig {
  readonly averaging: AveragingConfig
  readonly maxPatternsPerRegion: number
  readonly maxTrendsPerRegion: number
}

export const defaultCrossShardConfig: CrossShardConfig = {
  averaging: defaultAveragingConfig,
  maxPatternsPerRegion: 100,
  maxTrendsPerRegion: 20
}

export const federateAcrossShards = (config: CrossShardConfig = defaultCrossShardConfig): Federate => (inputs) => {
  const byRegion = new Map<string, Array<ShardRegionPatterns>>()
  for (const input of inputs) {
    const list = byRegion.get(input.region) ?? []
    list.push(input)
    byRegion.set(input.region, list)
  }
  const out = new Map<string, { patterns: ReadonlyArray<GlobalPattern>; trends: ReadonlyArray<TrendSignal> }>()
  for (const [region, shards] of byRegion) {
    const patterns = federate(
      shards.map((s) => ({ shard: s.shardId, patterns: s.patterns })),
      { config: config.averaging, idPrefix: `${region}-`, limit: config.maxPatternsPerRegion }
    )
    const trends = mergeTrends(shards.flatMap((s) => s.trends)).slice(0, config.maxTrendsPerRegion)
    out.set(region, { patterns, trends })
  }
  return out
}

/** Sums each item's momentum over shards, hottest first. */
const mergeTrends = (trends: ReadonlyArray<TrendSignal>): Array<TrendSignal> => {
  const byItem = new Map<string, TrendSignal>()
  for (const t of trends) {
    const seen = byItem.get(t.contentId)
    byItem.set(
      t.contentId,
      seen === undefined ? t : { ...seen, score: seen.score + t.score, velocity: seen.velocity + t.velocity }
    )
  }
  return [...byItem.values()].sort((a, b) => b.score - a.score)
}
