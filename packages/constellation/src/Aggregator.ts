/**
 * In-memory aggregation of device patterns on a shard. Incoming patterns are folded into
 * per-region clusters (quality-weighted running centroids) instead of being indexed one by
 * one: a locality-sensitive hash of the embedding picks the bucket, and only the few clusters
 * in that bucket are compared. Embeddings are expected in the quantizer's rotated basis (as
 * the shard's ingest codec decodes uploads; `toRotatedBasis` for others), where cosines and
 * sums are those of the embeddings and the coordinates themselves serve as the hash. Each device's
 * evidence in a cluster is bounded (however many patterns or uploads it sends there), evidence
 * decays, and a cluster is only published once it aggregates at least k distinct devices.
 */
import {
  EMBEDDING_DIMENSIONS,
  fnv1a,
  type GlobalPattern,
  type PatternContext,
  type PatternId,
  type SharedPattern
} from "@omega/protocol"
import { dot, unit } from "./internal/vectors.ts"

export interface AggregatorConfig {
  /** Cosine similarity at which a pattern joins a cluster. */
  readonly joinThreshold: number
  /** Bits of the bucket hash (coordinates whose signs are taken); more bits, smaller buckets. */
  readonly hashBits: number
  /** A cluster is published only when this many distinct devices fed it (k-anonymity). */
  readonly minDevices: number
  /** Most evidence one pattern may add. */
  readonly maxSamplesPerPattern: number
  /**
   * Most evidence one device holds in a cluster at a time (it decays with the cluster's), so no
   * device dominates one: not with many near-identical patterns in an upload, nor by sending a
   * pattern's growing sample count again with every update. Enforced for the devices a cluster
   * remembers (`deviceMemory`); beyond them a cluster already has more devices than any k.
   */
  readonly maxSamplesPerDevice: number
  /** Evidence halves after this long without reinforcement. */
  readonly halfLifeMs: number
  /** Upper bound on clusters per region; the weakest are dropped beyond it. */
  readonly maxClustersPerRegion: number
  /** Distinct device ids remembered per cluster (enough to certify k and bound influence). */
  readonly deviceMemory: number
}

export const defaultAggregatorConfig: AggregatorConfig = {
  joinThreshold: 0.85,
  // ~1 cluster per bucket at maxClustersPerRegion spread over a few contexts.
  hashBits: 12,
  minDevices: 3,
  maxSamplesPerPattern: 50,
  maxSamplesPerDevice: 50,
  halfLifeMs: 7 * 86_400_000,
  maxClustersPerRegion: 20_000,
  deviceMemory: 64
}

interface Cluster {
  readonly id: PatternId
  readonly region: string
  readonly contextKey: string
  readonly context: PatternContext
  readonly bucket: number
  /**
   * The quality-weighted sum of member embeddings is `scale * sum`: decay multiplies `scale` only
   * (a direction does not change when every member fades alike), so folding a pattern in costs
   * one pass over the vector, not three.
   */
  readonly sum: Float32Array
  scale: number
  /** Squared length of `sum` (unscaled), kept as patterns are folded in. */
  normSq: number
  weight: number
  successWeight: number
  samples: number
  /** Patterns folded in since creation; the running norm is recomputed exactly every RENORMALIZE_EVERY. */
  folds: number
  devices: DeviceHashes
  /** Distinct devices seen beyond the remembered set (an undercount-free lower bound is `devices.size`). */
  extraDevices: number
  updatedAt: number
}

export interface AggregatorStats {
  readonly regions: number
  readonly clusters: number
  readonly publishable: number
  readonly patternsIn: number
}

/** Online clustering of shared patterns per region. Not thread-safe; one per shard process. */
export class Aggregator {
  private readonly regions = new Map<string, Map<number, Array<Cluster>>>()
  private patternsIn = 0
  private nextId = 1

  readonly config: AggregatorConfig
  private readonly idPrefix: string

  constructor(config: AggregatorConfig = defaultAggregatorConfig, idPrefix = "agg") {
    this.config = config
    this.idPrefix = idPrefix
  }

  /** Folds one device's shared patterns in; returns how many were taken. */
  add(region: string, deviceId: string, patterns: ReadonlyArray<SharedPattern>, now: number): number {
    const device = fnv1a(deviceId)
    let taken = 0
    for (const pattern of patterns) {
      let samples = Math.min(pattern.sampleCount, this.config.maxSamplesPerPattern)
      if (samples <= 0) continue
      const contextKey = keyOf(pattern.context)
      const contextHash = hashString(contextKey)
      const code = this.hash(pattern.embedding)
      const bucket = code ^ contextHash
      const buckets = this.regionBuckets(region)
      let best: Cluster | undefined
      let bestDot = 0
      let bestSimilarity = this.config.joinThreshold
      // Vectors from short codes end in zeros (the rotated basis keeps a code's dimensions first):
      // comparisons and sums stop where the pattern's nonzero part ends.
      const length = nonzeroLength(pattern.embedding)
      // The pattern's own bucket first; only when nothing there is close enough, the buckets one
      // hash bit away (multi-probe), so a taste lying near one hyperplane still meets its cluster.
      for (let probe = -1; probe < this.config.hashBits && (probe < 0 || best === undefined); probe++) {
        const list = buckets.get(probe < 0 ? bucket : (code ^ (1 << probe)) ^ contextHash)
        if (list === undefined) continue
        for (const cluster of list) {
          if (cluster.contextKey !== contextKey || cluster.normSq <= 0) continue
          const d = dot(cluster.sum, pattern.embedding, length)
          const similarity = d / Math.sqrt(cluster.normSq)
          if (similarity >= bestSimilarity) {
            best = cluster
            bestDot = d
            bestSimilarity = similarity
          }
        }
      }
      if (best === undefined) {
        best = {
          id: `${this.idPrefix}-${region}-${this.nextId++}` as PatternId,
          region,
          contextKey,
          context: pattern.context,
          bucket,
          sum: new Float32Array(EMBEDDING_DIMENSIONS),
          scale: 1,
          normSq: 0,
          folds: 0,
          weight: 0,
          successWeight: 0,
          samples: 0,
          devices: new DeviceHashes(this.config.deviceMemory),
          extraDevices: 0,
          updatedAt: now
        }
        const list = buckets.get(bucket)
        if (list === undefined) buckets.set(bucket, [best])
        else list.push(best)
      }
      this.decay(best, now)
      let slot = best.devices.indexOf(device)
      if (slot < 0) {
        if (best.devices.size < this.config.deviceMemory) slot = best.devices.add(device)
        else best.extraDevices += 1
      }
      // A device's evidence here is kept in the cluster's unscaled units, so it decays with it.
      if (slot >= 0) {
        samples = Math.min(samples, this.config.maxSamplesPerDevice - best.devices.weight(slot) * best.scale)
      }
      if (samples <= 0) continue
      if (slot >= 0) best.devices.addWeight(slot, samples / best.scale)
      // Quality-weighted: evidence times success rate pulls the centroid.
      const w = (samples * pattern.successRate) / best.scale
      const embedding = pattern.embedding
      const sum = best.sum
      for (let i = 0; i < length; i++) sum[i]! += embedding[i]! * w
      // |s + w e|^2 = |s|^2 + 2 w (s . e) + w^2 |e|^2, with |e| = 1 (every embedding is unit length).
      best.normSq += 2 * w * bestDot + w * w
      if (++best.folds % RENORMALIZE_EVERY === 0) best.normSq = dot(sum, sum)
      best.weight += samples
      best.successWeight += samples * pattern.successRate
      best.samples += samples
      taken += 1
    }
    this.patternsIn += taken
    return taken
  }

  /** Starts a region from global patterns aggregated before (a restarted shard), as clusters of their size. */
  seed(region: string, patterns: ReadonlyArray<GlobalPattern>, now: number): void {
    const buckets = this.regionBuckets(region)
    const known = new Set<string>()
    for (const list of buckets.values()) for (const cluster of list) known.add(cluster.id)
    const own = `${this.idPrefix}-${region}-`
    for (const p of patterns) {
      if (known.has(p.id)) continue
      known.add(p.id)
      // New clusters are numbered after the seeded ones: two patterns of one id in a snapshot
      // would be refused by a TV, and would overwrite each other where they are stored.
      if (p.id.startsWith(own)) {
        const n = Number(p.id.slice(own.length))
        if (Number.isSafeInteger(n) && n >= this.nextId) this.nextId = n + 1
      }
      const contextKey = keyOf(p.context)
      const bucket = this.hash(p.embedding) ^ hashString(contextKey)
      const w = p.sampleCount * p.successRate
      const cluster: Cluster = {
        id: p.id,
        region,
        contextKey,
        context: p.context,
        bucket,
        sum: Float32Array.from(p.embedding),
        scale: w,
        normSq: dot(p.embedding, p.embedding),
        folds: 0,
        weight: p.sampleCount,
        successWeight: w,
        samples: p.sampleCount,
        devices: new DeviceHashes(this.config.deviceMemory),
        extraDevices: p.deviceCount,
        updatedAt: now
      }
      let list = buckets.get(bucket)
      if (list === undefined) buckets.set(bucket, list = [])
      list.push(cluster)
    }
  }

  /**
   * The region's clusters of at least `minDevices` devices (k, the publishable ones, by default),
   * best first, as global patterns. A federation worker asks for smaller groups too: across
   * shards they may reach k, and it applies the same rule before anything is redistributed.
   */
  snapshot(region: string, limit: number, now: number, minDevices = this.config.minDevices): Array<GlobalPattern> {
    // Ranked on their numbers first: only the `limit` best get a centroid computed (a pass over 384
    // floats each), which kept a shard with thousands of clusters busy for ~100 ms per refresh.
    const ranked: Array<
      { readonly cluster: Cluster; readonly devices: number; readonly successRate: number; readonly quality: number }
    > = []
    for (const list of this.regionBuckets(region).values()) {
      for (const cluster of list) {
        this.decay(cluster, now)
        const devices = liveDevices(cluster)
        if (devices < minDevices || cluster.weight <= 0) continue
        const successRate = Math.min(1, Math.max(0, cluster.successWeight / cluster.weight))
        ranked.push({ cluster, devices, successRate, quality: successRate * Math.log1p(cluster.samples) })
      }
    }
    ranked.sort((a, b) => b.quality - a.quality)
    const out: Array<GlobalPattern> = []
    for (const { cluster, devices, successRate } of ranked) {
      if (out.length >= limit) break
      const embedding = unit(cluster.sum)
      if (embedding === undefined) continue
      out.push({
        id: cluster.id,
        embedding,
        successRate,
        sampleCount: cluster.samples,
        deviceCount: devices,
        context: cluster.context
      })
    }
    return out
  }

  /** Drops clusters whose evidence has faded, and the weakest beyond the per-region bound. */
  prune(now: number, minSamples = 0.5): number {
    let dropped = 0
    for (const buckets of this.regions.values()) {
      const all: Array<Cluster> = []
      for (const [bucket, list] of buckets) {
        const kept = list.filter((c) => {
          this.decay(c, now)
          return c.samples >= minSamples
        })
        dropped += list.length - kept.length
        if (kept.length === 0) buckets.delete(bucket)
        else buckets.set(bucket, kept)
        all.push(...kept)
      }
      const excess = all.length - this.config.maxClustersPerRegion
      if (excess > 0) {
        const weakest = new Set(all.sort((a, b) => a.samples - b.samples).slice(0, excess))
        for (const [bucket, list] of buckets) buckets.set(bucket, list.filter((c) => !weakest.has(c)))
        dropped += excess
      }
    }
    return dropped
  }

  stats(): AggregatorStats {
    let clusters = 0
    let publishable = 0
    for (const buckets of this.regions.values()) {
      for (const list of buckets.values()) {
        clusters += list.length
        for (const c of list) if (liveDevices(c) >= this.config.minDevices) publishable += 1
      }
    }
    return { regions: this.regions.size, clusters, publishable, patternsIn: this.patternsIn }
  }

  regionNames(): Array<string> {
    return [...this.regions.keys()]
  }

  private regionBuckets(region: string): Map<number, Array<Cluster>> {
    let buckets = this.regions.get(region)
    if (buckets === undefined) this.regions.set(region, buckets = new Map())
    return buckets
  }

  private decay(cluster: Cluster, now: number): void {
    const elapsed = now - cluster.updatedAt
    if (elapsed <= 0) return
    const factor = Math.pow(0.5, elapsed / this.config.halfLifeMs)
    cluster.scale *= factor
    // Far below float range the scale is folded into the vector itself (a cluster idle for years).
    if (cluster.scale < 1e-30) {
      for (let i = 0; i < cluster.sum.length; i++) cluster.sum[i]! *= cluster.scale
      cluster.devices.scaleWeights(cluster.scale)
      cluster.normSq *= cluster.scale * cluster.scale
      cluster.scale = 1
    }
    cluster.weight *= factor
    cluster.successWeight *= factor
    cluster.samples *= factor
    cluster.updatedAt = now
  }

  /**
   * SimHash: one bit per coordinate, its sign. In the quantizer's rotated basis every coordinate is
   * already the projection of the embedding on a random direction (a row of the rotation), so the
   * first `hashBits` coordinates are the random hyperplanes, at no cost.
   */
  private hash(v: Float32Array): number {
    let h = 0
    for (let b = 0; b < this.config.hashBits; b++) if (v[b]! >= 0) h |= 1 << b
    return h
  }
}

/**
 * The distinct devices behind a cluster, up to `capacity`, remembered by a 32-bit hash of their id
 * in one typed array, each with the evidence it holds there (in the cluster's unscaled units).
 * 20,000 clusters of 64 devices (the default bounds) took 82 MB of heap as Sets of id strings,
 * which also kept the strings of long-gone devices alive; the whole aggregator then took 17 MB of
 * heap and 6 MB more outside it (each device's evidence, 8 bytes, adds 10 MB to that at the bounds).
 * Two devices sharing a hash count as one, so a group's device count can fall short but never
 * overstate how many devices stand behind it: k-anonymity holds.
 */
export class DeviceHashes {
  private readonly hashes: Uint32Array
  private readonly weights: Float64Array
  size = 0

  constructor(capacity: number) {
    this.hashes = new Uint32Array(Math.max(1, capacity))
    this.weights = new Float64Array(this.hashes.length)
  }

  /** The slot of `hash`, or -1. */
  indexOf(hash: number): number {
    for (let i = 0; i < this.size; i++) if (this.hashes[i] === hash) return i
    return -1
  }

  /** Adds `hash` when there is room and returns its slot (-1 when full); the caller checks `indexOf` first. */
  add(hash: number): number {
    if (this.size >= this.hashes.length) return -1
    this.hashes[this.size] = hash
    return this.size++
  }

  weight(slot: number): number {
    return this.weights[slot]!
  }

  addWeight(slot: number, amount: number): void {
    this.weights[slot]! += amount
  }

  /** Devices holding at least `weight`. */
  countAtLeast(weight: number): number {
    let n = 0
    for (let i = 0; i < this.size; i++) if (this.weights[i]! >= weight) n++
    return n
  }

  /** Multiplies every device's evidence (when the cluster folds its scale into its sums). */
  scaleWeights(factor: number): void {
    for (let i = 0; i < this.size; i++) this.weights[i]! *= factor
  }
}

/**
 * Evidence (in samples) below which a remembered device no longer counts toward a group's devices:
 * a group whose other devices' evidence has faded is no longer k devices' taste, but one device's.
 */
const LIVE_DEVICE_SAMPLES = 0.5

/** The devices standing behind a group now: the remembered ones with live evidence, and those beyond memory. */
const liveDevices = (cluster: Cluster): number =>
  cluster.devices.countAtLeast(LIVE_DEVICE_SAMPLES / cluster.scale) + cluster.extraDevices

const keyOf = (c: PatternContext): string => `${c.timeOfDay ?? "*"}|${c.dayType ?? "*"}|${c.mood ?? "*"}`

// Context keys are spread over the high bits so they do not collide with the embedding hash.
const hashString = (s: string): number => fnv1a(s) & 0x7fff0000

const RENORMALIZE_EVERY = 64

/** One past the last nonzero component. */
const nonzeroLength = (v: Float32Array): number => {
  let n = v.length
  while (n > 0 && v[n - 1] === 0) n--
  return n
}
