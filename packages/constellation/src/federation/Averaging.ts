/**
 * Quality-weighted federated averaging of taste patterns. Contributions (a device's shared
 * patterns on its shard, or the shards' aggregated patterns across the constellation) are
 * grouped by embedding cosine within the same context, and each group is averaged weighted by
 * success rate x sample count. The average is robust: every device's evidence in a group is
 * bounded, and the members farthest from the group's coordinate-wise weighted median are left
 * out (a trimmed mean), so a few poisoned devices cannot drag a group. A group is redistributed
 * only when at least k distinct devices stand behind what was kept of it.
 */
import type { GlobalPattern, PatternContext, PatternId } from "@omega/protocol"
import { dot, unit } from "../internal/vectors.ts"

/** One pattern entering a round. */
export interface Contribution {
  /**
   * Who stands behind it: a device id (device level) or a shard id (across shards). Contributions
   * of different sources never share devices; contributions of one source may.
   */
  readonly source: string
  /** Distinct devices behind it: 1 for a device's own pattern, the aggregate's count for a shard's. */
  readonly deviceCount: number
  readonly embedding: Float32Array
  readonly successRate: number
  readonly sampleCount: number
  readonly context: PatternContext
}

export interface AveragingConfig {
  /** Cosine to a group's running centroid at which a contribution joins it. */
  readonly joinThreshold: number
  /** k: a group is redistributed only when at least this many distinct devices stand behind it. */
  readonly minDevices: number
  /** Most evidence (samples) one device may put into one group: the bound on any device's weight. */
  readonly maxSamplesPerDevice: number
  /** Share of a group's weight, the members farthest from its robust centre, left out of the average. */
  readonly trimFraction: number
  /** Members whose cosine to the robust centre is below this are left out whatever their weight. */
  readonly minAgreement: number
}

export const defaultAveragingConfig: AveragingConfig = {
  joinThreshold: 0.85,
  minDevices: 3,
  maxSamplesPerDevice: 50,
  trimFraction: 0.1,
  minAgreement: 0.5
}

/** A group of similar contributions and its robust average. */
export interface PatternGroup {
  /** Unit vector: the quality-weighted average of the kept members. */
  readonly embedding: Float32Array
  readonly successRate: number
  /** Bounded evidence of the kept members. */
  readonly sampleCount: number
  /** Distinct devices behind the kept members (a lower bound when one source's members overlap). */
  readonly deviceCount: number
  readonly context: PatternContext
  /** Contributions folded into the average. */
  readonly members: number
  /** Contributions left out as outliers. */
  readonly trimmed: number
}

/** The product brief's quality of a pattern: success weighted by how much evidence backs it. */
export const patternQuality = (p: { readonly successRate: number; readonly sampleCount: number }): number =>
  p.successRate * Math.log1p(p.sampleCount)

/** Groups contributions by cosine and context and averages each group robustly (every group, whatever its k). */
export const groupContributions = (
  contributions: ReadonlyArray<Contribution>,
  config: AveragingConfig = defaultAveragingConfig
): Array<PatternGroup> => {
  const members = contributions.flatMap((c): Array<Member> => {
    const samples = Math.min(c.sampleCount, Math.max(1, c.deviceCount) * config.maxSamplesPerDevice)
    const successRate = Math.min(1, Math.max(0, c.successRate))
    const embedding = unit(c.embedding)
    if (!(samples > 0) || embedding === undefined || !Number.isFinite(successRate)) return []
    return [{ contribution: c, embedding, samples, successRate, weight: samples * successRate }]
  })
  // Strong patterns seed the groups; ties keep the input order, so rounds are deterministic.
  const order = members.map((_, i) => i).sort((a, b) => members[b]!.weight - members[a]!.weight || a - b)
  const byContext = new Map<string, Array<Forming>>()
  for (const i of order) {
    const member = members[i]!
    const key = contextKey(member.contribution.context)
    let groups = byContext.get(key)
    if (groups === undefined) byContext.set(key, groups = [])
    let best: Forming | undefined
    let bestSimilarity = config.joinThreshold
    for (const group of groups) {
      const similarity = group.norm === 0 ? -1 : dot(group.sum, member.embedding) / group.norm
      if (similarity >= bestSimilarity) {
        best = group
        bestSimilarity = similarity
      }
    }
    if (best === undefined) {
      groups.push(best = { sum: new Float64Array(member.embedding.length), norm: 0, members: [] })
    }
    // The running centroid only decides membership; the published average is computed robustly below.
    const w = Math.max(member.weight, 1e-9)
    let squared = 0
    for (let d = 0; d < best.sum.length; d++) {
      best.sum[d]! += member.embedding[d]! * w
      squared += best.sum[d]! * best.sum[d]!
    }
    best.norm = Math.sqrt(squared)
    best.members.push(member)
  }
  const out: Array<PatternGroup> = []
  for (const groups of byContext.values()) {
    for (const group of groups) {
      const averaged = robustAverage(group.members, config)
      if (averaged !== undefined) out.push(averaged)
    }
  }
  return out
}

/** Groups that may leave the constellation: at least `minDevices` distinct devices behind them. */
export const publishable = (groups: ReadonlyArray<PatternGroup>, minDevices: number): Array<PatternGroup> =>
  groups.filter((g) => g.deviceCount >= minDevices)

export interface FederateOptions {
  readonly config?: AveragingConfig
  /** Prefix of the global pattern ids of this round (ids must be unique per version). */
  readonly idPrefix: string
  /** Most global patterns to publish, best quality first. */
  readonly limit: number
}

/**
 * A federation round across shards: every shard's aggregated patterns (k not yet applied: the
 * shards' aggregates never leave the constellation) are grouped and averaged again, and the
 * groups with at least k distinct devices are published as global patterns, best supported first.
 */
export const federate = (
  shards: ReadonlyArray<{ readonly shard: string; readonly patterns: ReadonlyArray<ShardPattern> }>,
  options: FederateOptions
): Array<GlobalPattern> => {
  const config = options.config ?? defaultAveragingConfig
  const contributions = shards.flatMap(({ patterns, shard }) =>
    patterns.map((p): Contribution => ({ ...p, source: shard }))
  )
  return toGlobalPatterns(publishable(groupContributions(contributions, config), config.minDevices), options)
}

/** A shard's aggregated pattern as federation sees it. */
export interface ShardPattern {
  readonly embedding: Float32Array
  readonly successRate: number
  readonly sampleCount: number
  readonly deviceCount: number
  readonly context: PatternContext
}

/**
 * How strongly the fleet vouches for a group: distinct devices times success rate. Publication
 * ranks by it rather than by sample counts, which an attacker inflates far more cheaply than
 * devices (and which are bounded per device anyway).
 */
export const groupSupport = (g: { readonly deviceCount: number; readonly successRate: number }): number =>
  g.deviceCount * g.successRate

/** Publishable groups as global patterns, best supported first (then best quality), with ids `${idPrefix}${rank}`. */
export const toGlobalPatterns = (
  groups: ReadonlyArray<PatternGroup>,
  options: { readonly idPrefix: string; readonly limit: number }
): Array<GlobalPattern> =>
  [...groups]
    .sort((a, b) => groupSupport(b) - groupSupport(a) || patternQuality(b) - patternQuality(a))
    .slice(0, options.limit)
    .map((g, rank): GlobalPattern => ({
      id: `${options.idPrefix}${rank.toString(36)}` as PatternId,
      embedding: g.embedding,
      successRate: g.successRate,
      sampleCount: g.sampleCount,
      deviceCount: Math.max(1, Math.floor(g.deviceCount)),
      context: g.context
    }))

interface Member {
  readonly contribution: Contribution
  readonly embedding: Float32Array
  readonly samples: number
  readonly successRate: number
  readonly weight: number
}

interface Forming {
  readonly sum: Float64Array
  norm: number
  readonly members: Array<Member>
}

/**
 * The trimmed, device-bounded, quality-weighted average of one group, or undefined when nothing
 * with a direction is left.
 */
const robustAverage = (members: ReadonlyArray<Member>, config: AveragingConfig): PatternGroup | undefined => {
  const bounded = boundPerSource(members, config.maxSamplesPerDevice)
  const centre = weightedMedian(bounded)
  const scored = bounded.map((m) => ({ ...m, agreement: centre === undefined ? 1 : dot(m.embedding, centre) }))
  let kept = scored.filter((m) => m.agreement >= config.minAgreement)
  // A weighted trimmed mean: the trimFraction of weight farthest from the centre is cut, member by member.
  if (kept.length > 2 && config.trimFraction > 0) {
    let budget = config.trimFraction * kept.reduce((s, m) => s + m.weight, 0)
    kept = [...kept].sort((a, b) => a.agreement - b.agreement).flatMap((m) => {
      const cut = Math.min(m.weight, budget)
      budget -= cut
      if (cut === 0) return [m]
      if (cut === m.weight) return []
      const scale = (m.weight - cut) / m.weight
      return [{ ...m, weight: m.weight - cut, samples: m.samples * scale }]
    })
  }
  const sum = new Float64Array(members[0]!.embedding.length)
  let samples = 0
  let successes = 0
  for (const m of kept) {
    // Quality-weighted; a kept member with no success still has a direction worth a tiny weight.
    const w = Math.max(m.weight, 1e-9 * m.samples)
    for (let d = 0; d < sum.length; d++) sum[d]! += m.embedding[d]! * w
    samples += m.samples
    successes += m.samples * m.successRate
  }
  const embedding = unit(sum)
  if (embedding === undefined || samples <= 0) return undefined
  return {
    embedding,
    successRate: Math.min(1, Math.max(0, successes / samples)),
    sampleCount: samples,
    deviceCount: distinctDevices(kept),
    context: members[0]!.contribution.context,
    members: kept.length,
    trimmed: members.length - kept.length
  }
}

/** Scales each source's members down so its evidence in the group stays within its devices' bound. */
const boundPerSource = (members: ReadonlyArray<Member>, maxSamplesPerDevice: number): Array<Member> => {
  const bySource = new Map<string, { samples: number; devices: number }>()
  for (const m of members) {
    const s = bySource.get(m.contribution.source) ?? { samples: 0, devices: 0 }
    s.samples += m.samples
    s.devices = Math.max(s.devices, m.contribution.deviceCount)
    bySource.set(m.contribution.source, s)
  }
  return members.map((m) => {
    const s = bySource.get(m.contribution.source)!
    const cap = Math.max(1, s.devices) * maxSamplesPerDevice
    if (s.samples <= cap) return m
    const scale = cap / s.samples
    return { ...m, samples: m.samples * scale, weight: m.weight * scale }
  })
}

/** Devices behind members: sources are disjoint, members of one source may overlap (so take its largest). */
const distinctDevices = (members: ReadonlyArray<Member>): number => {
  const bySource = new Map<string, number>()
  for (const m of members) {
    const source = m.contribution.source
    bySource.set(source, Math.max(bySource.get(source) ?? 0, m.contribution.deviceCount))
  }
  let devices = 0
  for (const d of bySource.values()) devices += d
  return devices
}

/**
 * The coordinate-wise weighted median of the members' vectors, normalized: a centre that members
 * holding less than half of the weight cannot move far, whatever they send.
 */
export const weightedMedian = (
  members: ReadonlyArray<{ readonly embedding: Float32Array; readonly weight: number }>
): Float32Array | undefined => {
  if (members.length === 0) return undefined
  if (members.length === 1) return unit(members[0]!.embedding)
  const dimensions = members[0]!.embedding.length
  const total = members.reduce((s, m) => s + Math.max(m.weight, 0), 0)
  const weights = total > 0 ? members.map((m) => Math.max(m.weight, 0)) : members.map(() => 1)
  const half = (total > 0 ? total : members.length) / 2
  const centre = new Float32Array(dimensions)
  const order = members.map((_, i) => i)
  for (let d = 0; d < dimensions; d++) {
    order.sort((a, b) => members[a]!.embedding[d]! - members[b]!.embedding[d]!)
    let acc = 0
    for (const i of order) {
      acc += weights[i]!
      if (acc >= half) {
        centre[d] = members[i]!.embedding[d]!
        break
      }
    }
  }
  return unit(centre)
}

const contextKey = (c: PatternContext): string => `${c.timeOfDay ?? "*"}|${c.dayType ?? "*"}|${c.mood ?? "*"}`
