/**
 * Trends decoded on one shard from its own devices' uploads. Uploads carry no content ids, so
 * each accepted pattern's growth since the device's previous upload (new samples x success rate)
 * is credited to the catalog items it decodes into (`catalogEvidence` against the shard's
 * content), and a TrendDetector keeps decayed evidence per region and item, reporting an item
 * only once k distinct devices stand behind it. `observe` runs on the acknowledgement path and
 * only buffers; `decode` does the matching off it, a little at a time.
 */
import {
  type ContentEmbedding,
  type ContentId,
  type EmbeddingBasis,
  type PatternId,
  type SharedPattern,
  toRotatedBasis,
  type TrendSignal
} from "@omega/protocol"
import {
  catalogEvidence,
  type CatalogMatrix,
  catalogMatrix,
  defaultMatchOptions,
  defaultTrendConfig,
  type MatchOptions,
  type TrendConfig,
  TrendDetector
} from "./federation/Trends.ts"

export interface ShardTrendsConfig {
  /** Decay, k (distinct devices per reported item) and the bound on one device's evidence per upload. */
  readonly trend: TrendConfig
  readonly match: MatchOptions
  /** Most catalog items loaded from the content table at start. */
  readonly maxCatalog: number
  /**
   * Patterns waiting to be decoded at most. Beyond it a new upload takes the place of a random
   * waiting one, so under load the shard decodes a sample, leaning to the newest uploads.
   */
  readonly maxPendingPatterns: number
  /**
   * Longest one decoding pass runs. The shard's thread is shared with ingestion, so a pass
   * decodes one upload at a time and lets acknowledgements through in between.
   */
  readonly decodeBudgetMs: number
  /**
   * Devices whose last sample count per pattern is remembered, least recently synced forgotten
   * first, and patterns remembered per device. A pattern not remembered (new, or its device
   * forgotten) counts its whole sample count as growth; the detector's bound on one device's
   * evidence per upload keeps such an overcount no larger than one device's real viewing.
   */
  readonly deviceMemory: number
  readonly patternsPerDevice: number
}

export const defaultShardTrendsConfig: ShardTrendsConfig = {
  trend: defaultTrendConfig,
  match: defaultMatchOptions,
  maxCatalog: 100_000,
  maxPendingPatterns: 10_000,
  decodeBudgetMs: 200,
  deviceMemory: 20_000,
  patternsPerDevice: 64
}

export interface ShardTrendsStats {
  readonly catalog: number
  readonly pendingUploads: number
  readonly pendingPatterns: number
  /** Patterns decoded and patterns pushed out of the buffer unread, since start. */
  readonly decoded: number
  readonly dropped: number
}

interface Growth {
  readonly embedding: Float32Array
  /** New samples since the device's previous upload of this pattern, times its success rate. */
  readonly growth: number
  readonly sampleCount: number
}

interface PendingUpload {
  readonly region: string
  readonly deviceId: string
  readonly at: number
  readonly patterns: ReadonlyArray<Growth>
}

/** Buffered trend evidence and its detector. Not thread-safe; one per shard process. */
export class ShardTrends {
  readonly config: ShardTrendsConfig
  /**
   * The basis of observed embeddings. A shard observes patterns as its ingest codec decodes them,
   * in the quantizer's rotated basis; the catalog is then rotated into it once, since cosines and
   * the matching pursuit's mixes are the same there.
   */
  readonly basis: EmbeddingBasis
  private readonly detector: TrendDetector
  private readonly catalog = new Map<ContentId, ContentEmbedding>()
  private matrix: CatalogMatrix | undefined
  private pending: Array<PendingUpload> = []
  private pendingPatterns = 0
  private readonly lastCounts = new Map<string, Map<PatternId, number>>()
  private decoded = 0
  private dropped = 0

  constructor(config: ShardTrendsConfig = defaultShardTrendsConfig, basis: EmbeddingBasis = "original") {
    this.config = config
    this.basis = basis
    this.detector = new TrendDetector(config.trend)
  }

  /** Adds or replaces catalog items; the next pass decodes against them. */
  addContent(items: ReadonlyArray<ContentEmbedding>): void {
    for (const item of items) this.catalog.set(item.contentId, item)
    if (items.length > 0) this.matrix = undefined
  }

  /** Buffers one device's accepted patterns (cheap: a map lookup per pattern, no decoding). */
  observe(region: string, deviceId: string, patterns: ReadonlyArray<SharedPattern>, at: number): void {
    let counts = this.lastCounts.get(deviceId)
    if (counts === undefined) counts = new Map()
    else this.lastCounts.delete(deviceId)
    this.lastCounts.set(deviceId, counts)
    if (this.lastCounts.size > this.config.deviceMemory) this.lastCounts.delete(this.lastCounts.keys().next().value!)
    const grown: Array<Growth> = []
    for (const p of patterns) {
      const before = counts.get(p.id) ?? 0
      counts.delete(p.id)
      counts.set(p.id, p.sampleCount)
      if (counts.size > this.config.patternsPerDevice) counts.delete(counts.keys().next().value!)
      const growth = Math.max(0, p.sampleCount - before) * p.successRate
      if (growth > 0) grown.push({ embedding: p.embedding, growth, sampleCount: p.sampleCount })
    }
    if (grown.length === 0) return
    const upload = { region, deviceId, at, patterns: grown }
    if (this.pendingPatterns + grown.length <= this.config.maxPendingPatterns || this.pending.length === 0) {
      this.pending.push(upload)
      this.pendingPatterns += grown.length
      return
    }
    const slot = Math.floor(Math.random() * this.pending.length)
    const replaced = this.pending[slot]!
    this.pending[slot] = upload
    this.pendingPatterns += grown.length - replaced.patterns.length
    this.dropped += replaced.patterns.length
  }

  /** Whether uploads wait that a catalog could decode. */
  get decodable(): boolean {
    return this.pending.length > 0 && this.catalog.size > 0
  }

  /**
   * Decodes waiting uploads, oldest first, until none is left or `budgetMs` is spent (at least one
   * upload per call, so 0 decodes exactly one); returns the regions touched.
   */
  decode(budgetMs: number = this.config.decodeBudgetMs): ReadonlySet<string> {
    const regions = new Set<string>()
    if (!this.decodable) return regions
    this.matrix ??= catalogMatrix(
      this.basis === "original" ?
        [...this.catalog.values()] :
        [...this.catalog.values()].map((item) => ({ ...item, embedding: toRotatedBasis(item.embedding) }))
    )
    const matrix = this.matrix
    const started = performance.now()
    let taken = 0
    while (taken < this.pending.length && (taken === 0 || performance.now() - started < budgetMs)) {
      const upload = this.pending[taken++]!
      const evidence: Array<{ contentId: ContentId; weight: number }> = []
      for (const p of upload.patterns) {
        for (const { contentId, share } of catalogEvidence(p.embedding, matrix, this.config.match, p.sampleCount)) {
          evidence.push({ contentId, weight: p.growth * share })
        }
      }
      this.detector.observe(upload.region, upload.deviceId, evidence, upload.at)
      regions.add(upload.region)
      this.pendingPatterns -= upload.patterns.length
      this.decoded += upload.patterns.length
    }
    this.pending = this.pending.slice(taken)
    return regions
  }

  /** Forgets items whose evidence faded away by `now`. */
  prune(now: number): void {
    this.detector.prune(now)
  }

  /** The region's hottest items at `now`, each backed by at least k distinct devices of this shard. */
  signals(region: string, now: number, limit: number): Array<TrendSignal> {
    return this.detector.signals(region, now, limit)
  }

  stats(): ShardTrendsStats {
    return {
      catalog: this.catalog.size,
      pendingUploads: this.pending.length,
      pendingPatterns: this.pendingPatterns,
      decoded: this.decoded,
      dropped: this.dropped
    }
  }
}
