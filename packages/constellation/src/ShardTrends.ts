/**
 * Trends decoded on one shard from its own devices' uploads. Uploads carry no content ids, so
 * each uploaded pattern's growth since the device's previous upload (new samples x success rate;
 * every pattern with enough samples, not only the quality ones a shard aggregates)
 * is credited to the catalog items it decodes into (`catalogEvidence` against the shard's
 * content), and a TrendDetector keeps decayed evidence per region and item, reporting an item
 * only once k distinct devices stand behind it. `observe` runs on the acknowledgement path and
 * only buffers; `decode` does the matching off it, a little at a time.
 *
 * The same decoded evidence teaches co-watch rows: each device's decoded items (its strongest,
 * accumulated over its uploads) feed a CoWatchCounter, and `publishCoWatch` stamps the rows
 * that changed with a version, so a TV that reconnects is sent only what changed after the
 * version it holds.
 */
import {
  type ContentEmbedding,
  type ContentId,
  type CoWatchCount,
  type CoWatchRow,
  type EmbeddingBasis,
  fnv1a,
  type PatternId,
  type SharedPattern,
  toRotatedBasis,
  type TrendSignal
} from "@omega/protocol"
import { type CoWatchConfig, CoWatchCounter, defaultCoWatchConfig } from "./federation/CoWatch.ts"
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
  /** k, neighbours per row, and the bounds (devices, items per device, pairs) of the co-watch rows. */
  readonly coWatch: CoWatchConfig
  /**
   * A shard publishing a federation worker's co-watch tables goes back to its own once no worker
   * has asked for its counts for this long (the worker is gone; its last table would freeze).
   * Several worker rounds at least, or the shard would switch back and forth between rounds.
   */
  readonly federatedCoWatchTtlMs: number
}

export const defaultShardTrendsConfig: ShardTrendsConfig = {
  trend: defaultTrendConfig,
  match: defaultMatchOptions,
  maxCatalog: 100_000,
  maxPendingPatterns: 10_000,
  decodeBudgetMs: 200,
  deviceMemory: 20_000,
  patternsPerDevice: 64,
  coWatch: defaultCoWatchConfig,
  federatedCoWatchTtlMs: 6 * 3_600_000
}

export interface ShardTrendsStats {
  readonly catalog: number
  readonly pendingUploads: number
  readonly pendingPatterns: number
  /** Patterns decoded and patterns pushed out of the buffer unread, since start. */
  readonly decoded: number
  readonly dropped: number
  /** Devices whose decoded items count toward co-watch rows, and rows published (non-empty). */
  readonly coWatchDevices: number
  readonly coWatchRows: number
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
  private readonly lastCounts = new Map<string, PatternCounts>()
  private decoded = 0
  private dropped = 0
  private readonly coWatch: CoWatchCounter
  /** Every row as last published, with the version it last changed at (empty rows: withdrawn). */
  private readonly rows = new Map<ContentId, { readonly row: CoWatchRow; readonly version: number }>()
  /**
   * Once a federation worker sends a co-watch table (this shard's counts summed with the other
   * shards'), the shard publishes those instead of its own; `federatedTable` is the newest one
   * not yet published.
   */
  private federated = false
  private federatedTable: ReadonlyArray<CoWatchRow> | undefined
  /** When a worker last asked for this shard's counts. */
  private lastExportAt = Number.NEGATIVE_INFINITY

  constructor(config: ShardTrendsConfig = defaultShardTrendsConfig, basis: EmbeddingBasis = "original") {
    this.config = config
    this.basis = basis
    this.detector = new TrendDetector(config.trend)
    this.coWatch = new CoWatchCounter(config.coWatch)
  }

  /** Adds or replaces catalog items; the next pass decodes against them. */
  addContent(items: ReadonlyArray<ContentEmbedding>): void {
    for (const item of items) this.catalog.set(item.contentId, item)
    if (items.length > 0) this.matrix = undefined
  }

  /** Buffers one device's viewing: its shared patterns, of any quality (cheap: a map lookup per pattern, no decoding). */
  observe(region: string, deviceId: string, patterns: ReadonlyArray<SharedPattern>, at: number): void {
    let counts = this.lastCounts.get(deviceId)
    if (counts === undefined) counts = new PatternCounts(this.config.patternsPerDevice)
    else this.lastCounts.delete(deviceId)
    this.lastCounts.set(deviceId, counts)
    if (this.lastCounts.size > this.config.deviceMemory) this.lastCounts.delete(this.lastCounts.keys().next().value!)
    const grown: Array<Growth> = []
    for (const p of patterns) {
      const before = counts.swap(p.id, p.sampleCount)
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
      this.coWatch.observeEvidence(upload.deviceId, evidence)
      regions.add(upload.region)
      this.pendingPatterns -= upload.patterns.length
      this.decoded += upload.patterns.length
    }
    this.pending = this.pending.slice(taken)
    return regions
  }

  /**
   * Stamps the co-watch rows that changed since the last call with `version` and returns them
   * (an empty row withdraws one), once at least k devices changed since the last table (fewer
   * could single one out). `version` must grow from call to call. A row counts as changed
   * when its neighbours differ or a weight moved by more than a tenth (at least 0.02): every upload
   * nudges the weights of its items, and resending rows for that would resend the table each time.
   */
  publishCoWatch(version: number, now: number): Array<CoWatchRow> {
    if (this.federated && now - this.lastExportAt > this.config.federatedCoWatchTtlMs) {
      this.federated = false
      this.federatedTable = undefined
    }
    if (this.federated) {
      // The worker holds a table back until k devices changed across shards.
      const table = this.federatedTable
      this.federatedTable = undefined
      return table === undefined ? [] : this.publishTable(table, version)
    }
    // Until k devices changed, the change could be one device's viewing: it waits for more.
    if (this.coWatch.changedDevices < this.config.coWatch.minDevices) return []
    // Whole: any published row the counter no longer has is withdrawn, whether this shard's own
    // or one a worker's table put there before the shard went back to its own rows.
    return this.publishTable(this.coWatch.publish().filter((row) => row.neighbours.length > 0), version)
  }

  /**
   * Stamps the rows of `table` (the whole table, non-empty rows) that changed with `version`, and
   * withdraws every published row it does not name.
   */
  private publishTable(table: ReadonlyArray<CoWatchRow>, version: number): Array<CoWatchRow> {
    const named = new Set(table.map((row) => row.contentId))
    const withdrawn = [...this.rows.values()]
      .filter((entry) => entry.row.neighbours.length > 0 && !named.has(entry.row.contentId))
      .map((entry): CoWatchRow => ({ contentId: entry.row.contentId, neighbours: [] }))
    const changed: Array<CoWatchRow> = []
    for (const row of [...table, ...withdrawn]) {
      const before = this.rows.get(row.contentId)?.row
      if (before !== undefined && !materiallyChanged(before, row)) continue
      this.rows.set(row.contentId, { row, version })
      changed.push(row)
    }
    return changed
  }

  /** This shard's co-watch counts for the federation worker (see CoWatchCounter.exportCounts). */
  exportCoWatch(now: number): { rows: Array<CoWatchCount>; changedDevices: number } {
    this.lastExportAt = now
    return this.coWatch.exportCounts()
  }

  /**
   * Takes a co-watch table federated across shards: from now on the shard publishes the worker's
   * tables (at its next publishCoWatch) and no longer its own, which the worker's already include.
   */
  applyFederatedCoWatch(rows: ReadonlyArray<CoWatchRow>, now: number): void {
    this.lastExportAt = Math.max(this.lastExportAt, now)
    this.federated = true
    this.coWatch.tableTaken()
    this.federatedTable = rows.filter((row) => row.neighbours.length > 0)
  }

  /** The rows a TV holding co-watch `version` lacks (all non-empty rows for 0). */
  coWatchSince(version: number): Array<CoWatchRow> {
    const rows: Array<CoWatchRow> = []
    for (const entry of this.rows.values()) {
      if (entry.version > version && (version > 0 || entry.row.neighbours.length > 0)) rows.push(entry.row)
    }
    return rows
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
      dropped: this.dropped,
      coWatchDevices: this.coWatch.deviceCount,
      coWatchRows: [...this.rows.values()].filter((r) => r.row.neighbours.length > 0).length
    }
  }
}

/**
 * The last sample count of up to `capacity` of one device's patterns, found by a 32-bit hash of the
 * pattern id, the least recently uploaded forgotten first. One typed array per device, outside the
 * JS heap: a shard remembers tens of thousands of devices, and their ids as strings in Maps cost
 * about 6 KB of heap a device (120 MB at the default bounds) for the collector to trace. Two of a
 * device's patterns sharing a hash (about one device in a million, at 64 patterns) read each
 * other's count, which misplaces one upload's growth.
 */
export class PatternCounts {
  /** Per slot: the id's hash, its last count, and when it was last uploaded (a counter). */
  private readonly slots: Float64Array
  private used = 0
  private clock = 0
  readonly capacity: number

  constructor(capacity: number) {
    this.capacity = Math.max(1, capacity)
    this.slots = new Float64Array(this.capacity * 3)
  }

  /** Remembers `count` for pattern `id` as its newest; returns the count remembered before (0 if none). */
  swap(id: PatternId, count: number): number {
    const hash = fnv1a(id)
    const s = this.slots
    this.clock += 1
    let oldest = 0
    for (let i = 0; i < this.used; i++) {
      if (s[3 * i] === hash) {
        const before = s[3 * i + 1]!
        s[3 * i + 1] = count
        s[3 * i + 2] = this.clock
        return before
      }
      if (s[3 * i + 2]! < s[3 * oldest + 2]!) oldest = i
    }
    const slot = this.used < this.capacity ? this.used++ : oldest
    s[3 * slot] = hash
    s[3 * slot + 1] = count
    s[3 * slot + 2] = this.clock
    return 0
  }

  get size(): number {
    return this.used
  }
}

/** Whether `after` has other neighbours than `before`, or a weight more than a tenth (and 20/1000) away. */
const materiallyChanged = (before: CoWatchRow, after: CoWatchRow): boolean => {
  if (before.neighbours.length !== after.neighbours.length) return true
  const weights = new Map(before.neighbours.map((n) => [n.contentId, n.weight]))
  return after.neighbours.some((n) => {
    const old = weights.get(n.contentId)
    return old === undefined || Math.abs(n.weight - old) > Math.max(20, old / 10)
  })
}
