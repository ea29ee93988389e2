/**
 * Cross-shard federation of aggregated patterns: per region, similar patterns (same context,
 * cosine above a threshold) from all shards are grouped greedily, best evidence first, and each
 * group is averaged weighted by success rate x sample count. Devices of different shards are
 * distinct, so a group's device count is the sum over its members; only groups of at least k
 * devices are redistributed.
 */
import type { GlobalPattern, PatternContext, PatternId, TrendSignal } from "@omega/protocol"
import type { Federate, ShardRegionPatterns } from "./FederationWorker.ts"

export interface CrossShardConfig {
  readonly joinThreshold: number
  readonly minDevices: number
  readonly maxPatternsPerRegion: number
  readonly maxTrendsPerRegion: number
}

export const defaultCrossShardConfig: CrossShardConfig = {
  joinThreshold: 0.85,
  minDevices: 3,
  maxPatternsPerRegion: 100,
  maxTrendsPerRegion: 20
}

interface Group {
  readonly context: PatternContext
  readonly contextKey: string
  readonly sum: Float32Array
  readonly unit: Float32Array
  weight: number
  successWeight: number
  samples: number
  devices: number
  members: Array<GlobalPattern>
}

/** The default `Federate` of the federation worker. */
export const federateAcrossShards = (config: CrossShardConfig = defaultCrossShardConfig): Federate => (inputs) => {
  const byRegion = new Map<string, Array<ShardRegionPatterns>>()
  for (const input of inputs) {
    const list = byRegion.get(input.region) ?? []
    list.push(input)
    byRegion.set(input.region, list)
  }
  const out = new Map<string, { patterns: ReadonlyArray<GlobalPattern>; trends: ReadonlyArray<TrendSignal> }>()
  for (const [region, shards] of byRegion) {
    const patterns = shards.flatMap((s) => s.patterns).sort((a, b) => b.sampleCount - a.sampleCount)
    const groups: Array<Group> = []
    for (const p of patterns) {
      const contextKey = keyOf(p.context)
      let best: Group | undefined
      let bestSimilarity = config.joinThreshold
      for (const g of groups) {
        if (g.contextKey !== contextKey) continue
        const similarity = dot(g.unit, p.embedding)
        if (similarity >= bestSimilarity) {
          best = g
          bestSimilarity = similarity
        }
      }
      if (best === undefined) {
        best = {
          context: p.context,
          contextKey,
          sum: new Float32Array(p.embedding.length),
          unit: new Float32Array(p.embedding.length),
          weight: 0,
          successWeight: 0,
          samples: 0,
          devices: 0,
          members: []
        }
        groups.push(best)
      }
      const w = p.successRate * p.sampleCount
      for (let i = 0; i < p.embedding.length; i++) best.sum[i]! += p.embedding[i]! * w
      const norm = Math.sqrt(dot(best.sum, best.sum))
      for (let i = 0; i < best.sum.length; i++) best.unit[i] = norm > 0 ? best.sum[i]! / norm : 0
      best.weight += p.sampleCount
      best.successWeight += w
      best.samples += p.sampleCount
      best.devices += p.deviceCount
      best.members.push(p)
    }
    const federated = groups
      .filter((g) => g.devices >= config.minDevices && g.weight > 0 && dot(g.sum, g.sum) > 0)
      .map((g): GlobalPattern => ({
        // The id of the member with most evidence: stable across rounds while the group holds.
        id: g.members[0]!.id as PatternId,
        embedding: Float32Array.from(g.unit),
        successRate: Math.min(1, g.successWeight / g.weight),
        sampleCount: g.samples,
        deviceCount: g.devices,
        context: g.context
      }))
      .sort((a, b) => b.successRate * Math.log1p(b.sampleCount) - a.successRate * Math.log1p(a.sampleCount))
      .slice(0, config.maxPatternsPerRegion)
    const trends = mergeTrends(shards.flatMap((s) => s.trends)).slice(0, config.maxTrendsPerRegion)
    out.set(region, { patterns: federated, trends })
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

const keyOf = (c: PatternContext) => `${c.timeOfDay ?? "*"}|${c.dayType ?? "*"}|${c.mood ?? "*"}`

const dot = (a: Float32Array, b: Float32Array) => {
  let s = 0
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!
  return s
}
