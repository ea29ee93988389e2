/**
 * Trend detection per region: what is gaining viewers. Uploads carry no content ids, so evidence
 * for an item comes from decoding shared patterns against the catalog the constellation itself
 * distributes: new viewing folded into a pattern (its growth in sample count) is credited to the
 * catalog items the pattern is decoded into. Evidence decays exponentially, each device's
 * evidence per item and upload is bounded, and an item is only reported once at least k distinct
 * devices stand behind it.
 */
import type { ContentEmbedding, ContentId, TrendSignal } from "@omega/protocol"

/** The catalog as one row-major matrix of unit vectors, for matching patterns against every item. */
export interface CatalogMatrix {
  readonly ids: ReadonlyArray<ContentId>
  readonly dimensions: number
  /** ids.length rows of `dimensions` numbers. */
  readonly vectors: Float32Array
}

export const catalogMatrix = (items: ReadonlyArray<ContentEmbedding>): CatalogMatrix => {
  const dimensions = items[0]?.embedding.length ?? 0
  const vectors = new Float32Array(items.length * dimensions)
  items.forEach((item, row) => vectors.set(item.embedding, row * dimensions))
  return { ids: items.map((i) => i.contentId), dimensions, vectors }
}

export interface MatchOptions {
  /** Catalog items considered per pattern: the ones with the highest cosine to it. */
  readonly candidates: number
  /** Most items one pattern is decoded into (fewer when its sample count says it averages fewer). */
  readonly maxItems: number
  /** Items below this cosine are never credited, and decoding stops when no item explains this much more. */
  readonly minSimilarity: number
}

export const defaultMatchOptions: MatchOptions = { candidates: 32, maxItems: 16, minSimilarity: 0.05 }

/**
 * The catalog items a pattern embedding most likely averages, with shares summing to 1 (none for
 * no match). A pattern is a centroid of the items folded into it, so it is decoded as a sparse
 * non-negative mix of catalog items (orthogonal matching pursuit over its nearest candidates):
 * each step takes the item that explains most of what is left, so items that merely resemble
 * the ones already taken get little.
 */
export const catalogEvidence = (
  embedding: Float32Array,
  catalog: CatalogMatrix,
  options: MatchOptions = defaultMatchOptions,
  expectedItems: number = options.maxItems
): Array<{ readonly contentId: ContentId; readonly share: number }> => {
  const { dimensions, ids, vectors } = catalog
  const top: Array<{ row: number; similarity: number }> = []
  for (let row = 0; row < ids.length; row++) {
    let s = 0
    const offset = row * dimensions
    for (let d = 0; d < dimensions; d++) s += vectors[offset + d]! * embedding[d]!
    if (s < options.minSimilarity) continue
    if (top.length < options.candidates) top.push({ row, similarity: s })
    else if (s > top[top.length - 1]!.similarity) top[top.length - 1] = { row, similarity: s }
    else continue
    top.sort((a, b) => b.similarity - a.similarity)
  }
  const n = top.length
  if (n === 0) return []
  const gram = new Float64Array(n * n)
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let g = 0
      const a = top[i]!.row * dimensions
      const b = top[j]!.row * dimensions
      for (let d = 0; d < dimensions; d++) g += vectors[a + d]! * vectors[b + d]!
      gram[i * n + j] = g
      gram[j * n + i] = g
    }
  }
  const target = Float64Array.from(top, (t) => t.similarity)
  const limit = Math.max(1, Math.min(options.maxItems, Math.round(expectedItems), n))
  let support: Array<number> = []
  let coefficients: Array<number> = []
  const tried = new Set<number>()
  while (support.length < limit) {
    let best = -1
    let bestResidual = options.minSimilarity
    for (let j = 0; j < n; j++) {
      if (tried.has(j)) continue
      let r = target[j]!
      for (let k = 0; k < support.length; k++) r -= gram[j * n + support[k]!]! * coefficients[k]!
      if (r > bestResidual) {
        best = j
        bestResidual = r
      }
    }
    if (best < 0) break
    tried.add(best)
    support.push(best)
    // Non-negative least squares on the support: drop items whose weight turns negative and refit.
    for (;;) {
      coefficients = leastSquares(gram, n, target, support)
      const negative = coefficients.findIndex((c) => c <= 0)
      if (negative < 0 || support.length === 1) break
      support = support.filter((_, k) => k !== negative)
    }
    if (coefficients.every((c) => c <= 0)) return []
  }
  const total = coefficients.reduce((s, c) => s + Math.max(c, 0), 0)
  if (!(total > 0)) return []
  return support
    .map((j, k) => ({ contentId: ids[top[j]!.row]!, share: Math.max(coefficients[k]!, 0) / total }))
    .filter((e) => e.share > 0)
    .sort((a, b) => b.share - a.share)
}

/** Solves gram[S,S] x = target[S] by Cholesky (with a tiny ridge: near-duplicate items stay solvable). */
const leastSquares = (gram: Float64Array, n: number, target: Float64Array, support: ReadonlyArray<number>) => {
  const m = support.length
  const L = new Float64Array(m * m)
  for (let i = 0; i < m; i++) {
    for (let j = 0; j <= i; j++) {
      let s = gram[support[i]! * n + support[j]!]! + (i === j ? 1e-6 : 0)
      for (let k = 0; k < j; k++) s -= L[i * m + k]! * L[j * m + k]!
      L[i * m + j] = i === j ? Math.sqrt(Math.max(s, 1e-12)) : s / L[j * m + j]!
    }
  }
  const y = new Float64Array(m)
  for (let i = 0; i < m; i++) {
    let s = target[support[i]!]!
    for (let k = 0; k < i; k++) s -= L[i * m + k]! * y[k]!
    y[i] = s / L[i * m + i]!
  }
  const x = Array.from({ length: m }, () => 0)
  for (let i = m - 1; i >= 0; i--) {
    let s = y[i]!
    for (let k = i + 1; k < m; k++) s -= L[k * m + i]! * x[k]!
    x[i] = s / L[i * m + i]!
  }
  return x
}

export interface TrendConfig {
  /** Evidence halves after this long. */
  readonly halfLifeMs: number
  /** k: an item is reported only once this many distinct devices gave evidence for it. */
  readonly minDevices: number
  /** Most evidence one device adds to one item per upload. */
  readonly maxEvidencePerDevice: number
  /** Distinct device ids remembered per item (enough to certify k). */
  readonly deviceMemory: number
}

export const defaultTrendConfig: TrendConfig = {
  halfLifeMs: 7 * 86_400_000,
  minDevices: 3,
  maxEvidencePerDevice: 1,
  deviceMemory: 64
}

interface ItemTrend {
  score: number
  at: number
  readonly devices: Set<string>
  extraDevices: number
  /** Score and time of the last report, for the velocity. */
  reportedScore: number
  reportedAt: number
}

/** Decayed evidence per item and region. Not thread-safe; one per federation worker. */
export class TrendDetector {
  private readonly regions = new Map<string, Map<ContentId, ItemTrend>>()
  readonly config: TrendConfig

  constructor(config: TrendConfig = defaultTrendConfig) {
    this.config = config
  }

  /** Adds one device's evidence (weights per item) seen at `at`; returns how many items it touched. */
  observe(
    region: string,
    deviceId: string,
    evidence: ReadonlyArray<{ readonly contentId: ContentId; readonly weight: number }>,
    at: number
  ): number {
    let items = this.regions.get(region)
    if (items === undefined) this.regions.set(region, items = new Map())
    const perItem = new Map<ContentId, number>()
    for (const e of evidence) {
      if (!(e.weight > 0) || !Number.isFinite(e.weight)) continue
      perItem.set(e.contentId, (perItem.get(e.contentId) ?? 0) + e.weight)
    }
    for (const [contentId, weight] of perItem) {
      let item = items.get(contentId)
      if (item === undefined) {
        items.set(
          contentId,
          item = { score: 0, at, devices: new Set(), extraDevices: 0, reportedScore: 0, reportedAt: at }
        )
      }
      item.score = decayed(item.score, at - item.at, this.config.halfLifeMs) +
        Math.min(weight, this.config.maxEvidencePerDevice)
      item.at = Math.max(item.at, at)
      if (!item.devices.has(deviceId)) {
        if (item.devices.size < this.config.deviceMemory) item.devices.add(deviceId)
        else item.extraDevices += 1
      }
    }
    return perItem.size
  }

  /**
   * The region's hottest items at `now` backed by at least k devices, hottest first. Velocity is
   * the score's change per hour since the previous report.
   */
  signals(region: string, now: number, limit: number): Array<TrendSignal> {
    const items = this.regions.get(region)
    if (items === undefined) return []
    const out: Array<TrendSignal> = []
    for (const [contentId, item] of items) {
      if (item.devices.size + item.extraDevices < this.config.minDevices) continue
      const score = decayed(item.score, now - item.at, this.config.halfLifeMs)
      const hours = (now - item.reportedAt) / 3_600_000
      const velocity = hours > 0 ? (score - item.reportedScore) / hours : 0
      item.reportedScore = score
      item.reportedAt = now
      out.push({ contentId, region, score, velocity })
    }
    return out.sort((a, b) => b.score - a.score || (a.contentId < b.contentId ? -1 : 1)).slice(0, limit)
  }

  /** Forgets items whose evidence decayed below `minScore`; returns how many. */
  prune(now: number, minScore = 0.01): number {
    let dropped = 0
    for (const items of this.regions.values()) {
      for (const [id, item] of items) {
        if (decayed(item.score, now - item.at, this.config.halfLifeMs) < minScore) {
          items.delete(id)
          dropped += 1
        }
      }
    }
    return dropped
  }
}

/** `score` after `elapsedMs` of exponential decay with the given half-life. */
export const decayed = (score: number, elapsedMs: number, halfLifeMs: number): number =>
  elapsedMs <= 0 ? score : score * Math.pow(0.5, elapsedMs / halfLifeMs)
