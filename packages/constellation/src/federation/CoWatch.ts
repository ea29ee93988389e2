/**
 * Co-watch learning: which catalog items the same devices watch, learned from nothing but the
 * patterns they share. Each upload's patterns are decoded against the catalog the constellation
 * distributes (the evidence trends are made of: new viewing per item); a device's evidence adds
 * up, its strongest items replace the ones it had before, and pair counts over devices give, for
 * each item, the items its viewers also watch: item-to-item collaborative filtering whose only
 * input is k-anonymous aggregates.
 *
 * Each device counts once per pair however much it watched, and a pair is published only when
 * at least k distinct devices stand behind it. The TV does the rest on its own: it scores the
 * neighbours of everything it has watched, a history that never leaves it.
 */
import {
  type ContentId,
  type CoWatchCount,
  type CoWatchRow,
  MAX_COWATCH_COUNT_NEIGHBOURS,
  MAX_COWATCH_NEIGHBOURS
} from "@omega/protocol"

export interface CoWatchConfig {
  /** k: a pair is published only when this many distinct devices watched both items. */
  readonly minDevices: number
  /** Neighbours published per item, strongest first. */
  readonly neighbours: number
  /** Items kept per device (its strongest decoded items); bounds one device's pairs. */
  readonly maxItemsPerDevice: number
  /** Devices counted; beyond it the least recently observed is forgotten, with its pairs. */
  readonly maxDevices: number
  /**
   * Distinct pairs counted at most (memory: a JavaScript Map holds at most ~16.7M entries, and
   * each costs ~60 bytes). A device whose pairs would not fit is not counted (its previous items
   * are forgotten), so every count stays exact for the devices counted.
   */
  readonly maxPairs: number
  /**
   * How much a row discounts popular neighbours (beta): in item a's row, neighbour b weighs
   * devices(a, b) / (viewers(a)^(1 - beta) x viewers(b)^beta). 0.5 is the cosine; above it a
   * neighbour watched by everyone counts for less, as in RP3beta's popularity penalty.
   */
  readonly popularityPenalty: number
}

/** What publishing rows from pair counts needs, on a shard or the federation worker. */
export type CoWatchRowConfig = Pick<CoWatchConfig, "minDevices" | "neighbours" | "popularityPenalty">

/**
 * Measured on 2 cores with a Zipf-like catalog of 10,000 items: unbounded, 20,000 devices of 20
 * items each took 0.16 ms per observe, a 255 ms recount and 524 MB, and 20,000 devices of 64
 * items overflowed a Map. With these bounds, 20,000 devices of 32 items stream through in 0.4 ms
 * each and a recount (publish) takes ~85 ms: the shard's thread stalls that long once a minute.
 *
 * popularityPenalty 0.7 was chosen on MovieLens' validation split (federated HR@10, one run each;
 * differences under ~0.015 are noise between settings, see docs/tuning-log.md): 0.3 0.139,
 * 0.5 (cosine) 0.148, 0.6 0.144, 0.7 0.156, 0.85 0.127, 1.0 0.075. On the test split it moved
 * federated HR@10 from 0.1476 to 0.1486 (NDCG@10 0.0787 to 0.0813): within one run's noise.
 */
export const defaultCoWatchConfig: CoWatchConfig = {
  minDevices: 3,
  neighbours: 20,
  maxItemsPerDevice: 32,
  maxDevices: 5_000,
  maxPairs: 1_000_000,
  popularityPenalty: 0.7
}

/**
 * Why rows cannot be published with these settings (k and neighbours per row), or undefined: k
 * below 1 would publish single-device pairs, and a row carries at most MAX_COWATCH_NEIGHBOURS.
 */
export const coWatchRowsProblem = (config: CoWatchRowConfig): string | undefined =>
  !Number.isInteger(config.minDevices) || config.minDevices < 1
    ? `co-watch k (minDevices) must be a whole number of at least 1, got ${config.minDevices}`
    : !Number.isInteger(config.neighbours) || config.neighbours < 1 || config.neighbours > MAX_COWATCH_NEIGHBOURS
    ? `co-watch neighbours must be a whole number in 1..${MAX_COWATCH_NEIGHBOURS} (what a row carries on the wire), got ${config.neighbours}`
    : !(config.popularityPenalty >= 0 && config.popularityPenalty <= 1)
    ? `co-watch popularityPenalty must be in 0..1, got ${config.popularityPenalty}`
    : undefined

/** Pair keys: the smaller item index times this plus the larger (so at most 2^24 items). */
const PAIR = 2 ** 24

/** Pair counts over devices' decoded items. Not thread-safe; one per shard or federation worker. */
export class CoWatchCounter {
  readonly config: CoWatchConfig
  private readonly index = new Map<ContentId, number>()
  private readonly ids: Array<ContentId> = []
  /** Devices per item. */
  private readonly viewers: Array<number> = []
  /** Devices per pair of items, keyed by pairKey. */
  private readonly pairs = new Map<number, number>()
  /** Each device's current items, as sorted item indexes, least recently observed first. */
  private readonly devices = new Map<string, ReadonlyArray<number>>()
  /** Each device's decoded viewing per item, added up over its uploads (see observeEvidence). */
  private readonly evidence = new Map<string, Map<ContentId, number>>()
  /** Devices observed (or forgotten) since the last publish. */
  private readonly changed = new Set<string>()
  /**
   * Devices observed (or forgotten) since the last table federated across shards was taken
   * (see `tableTaken`): what a federation worker is told, round after round, until it sends one.
   */
  private readonly changedSinceTable = new Set<string>()
  /** Items whose row was last published non-empty, so a row that empties can be withdrawn. */
  private published = new Set<ContentId>()

  constructor(config: CoWatchConfig = defaultCoWatchConfig) {
    const { maxDevices, maxItemsPerDevice, maxPairs } = config
    const problem = coWatchRowsProblem(config)
    if (problem !== undefined) throw new RangeError(problem)
    if (![maxItemsPerDevice, maxDevices, maxPairs].every((n) => n >= 1)) {
      throw new RangeError("maxItemsPerDevice, maxDevices and maxPairs must be at least 1")
    }
    this.config = config
  }

  /** Devices with items. */
  get deviceCount(): number {
    return this.devices.size
  }

  /** Items counted per device with items, on average: how much of what devices watch the rows see. */
  get meanItemsPerDevice(): number {
    let items = 0
    for (const list of this.devices.values()) items += list.length
    return this.devices.size === 0 ? 0 : items / this.devices.size
  }

  /**
   * Distinct devices whose items changed since the last publish. Publishing only once at least k
   * did keeps the difference between two consecutive tables from being one device's viewing.
   */
  get changedDevices(): number {
    return this.changed.size
  }

  /** Replaces what `deviceId` watched with `items` (its strongest first; beyond maxItemsPerDevice is ignored). */
  observe(deviceId: string, items: Iterable<ContentId>): void {
    const next = new Set<number>()
    for (const id of items) {
      if (next.size >= this.config.maxItemsPerDevice) break
      next.add(this.indexOf(id))
    }
    this.changed.add(deviceId)
    this.changedSinceTable.add(deviceId)
    this.count(this.devices.get(deviceId) ?? [], -1)
    // Re-inserted, so the Map's order is least recently observed first.
    this.devices.delete(deviceId)
    const sorted = [...next].sort((a, b) => a - b)
    if (sorted.length === 0 || this.pairs.size + this.missingPairs(sorted) > this.config.maxPairs) return
    this.count(sorted, 1)
    this.devices.set(deviceId, sorted)
    if (this.devices.size > this.config.maxDevices) this.forget(this.devices.keys().next().value!)
  }

  /**
   * Adds one upload's decoded evidence (new viewing per item) to what the device watched, and
   * recounts its pairs with its strongest items. Weaker items are kept up to twice the limit, so
   * an item can rise into the strongest as viewing adds up.
   */
  observeEvidence(
    deviceId: string,
    evidence: Iterable<{ readonly contentId: ContentId; readonly weight: number }>
  ): void {
    const items = this.evidence.get(deviceId) ?? new Map<ContentId, number>()
    for (const { contentId, weight } of evidence) {
      if (weight > 0 && Number.isFinite(weight)) items.set(contentId, (items.get(contentId) ?? 0) + weight)
    }
    const limit = this.config.maxItemsPerDevice
    const strongest = [...items].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    for (const [id] of strongest.slice(2 * limit)) items.delete(id)
    this.evidence.set(deviceId, items)
    this.observe(deviceId, strongest.slice(0, limit).map(([id]) => id))
    // A device the counter does not keep (see maxPairs) keeps no evidence either.
    if (!this.devices.has(deviceId)) this.evidence.delete(deviceId)
  }

  /**
   * A table federated across shards was taken: it reflects every change made so far (or, for
   * changes after the export it was made from, leaves them uncounted: never counted twice).
   * The local publish gate is reset too, since a shard with federated tables does not publish.
   */
  tableTaken(): void {
    this.changedSinceTable.clear()
    this.changed.clear()
  }

  /** Forgets a device and everything it contributed. */
  forget(deviceId: string): void {
    this.evidence.delete(deviceId)
    this.observe(deviceId, [])
  }

  /**
   * Every item's strongest co-watched items backed by at least k devices, strongest first, with
   * an empty row for each item published last time that has none now (the TV drops it).
   */
  publish(): Array<CoWatchRow> {
    this.changed.clear()
    const rows = rowsFromPairs<number>(
      (visit) => {
        for (const [key, devices] of this.pairs) {
          const a = Math.floor(key / PAIR)
          visit(a, key - a * PAIR, devices)
        }
      },
      (item) => this.viewers[item]!,
      (item) => this.ids[item]!,
      (x, y) => x - y,
      this.config
    )
    const now = new Set(rows.map((row) => row.contentId))
    for (const contentId of this.published) if (!now.has(contentId)) rows.push({ contentId, neighbours: [] })
    this.published = now
    return rows.sort((a, b) => compareIds(a.contentId, b.contentId))
  }

  /**
   * The raw counts for the federation worker: every item some device watched, with its viewers
   * and its `neighbours` most shared neighbours (any number of devices: across shards a pair may
   * reach k), and how many devices changed since the last federated table was taken. Reported
   * again in every round until a table comes: one device changing round after round counts once.
   */
  exportCounts(neighbours = EXPORTED_NEIGHBOURS): { rows: Array<CoWatchCount>; changedDevices: number } {
    const changedDevices = this.changedSinceTable.size
    const limit = Math.min(neighbours, MAX_COWATCH_COUNT_NEIGHBOURS)
    // Every pair listed under both its items, in flat arrays (a million pairs made two million
    // objects and took ~850 ms): item i's entries are other[start[i]..start[i + 1]).
    const items = this.ids.length
    const start = new Int32Array(items + 1)
    for (const key of this.pairs.keys()) {
      const a = Math.floor(key / PAIR)
      start[a + 1]! += 1
      start[key - a * PAIR + 1]! += 1
    }
    for (let i = 0; i < items; i++) start[i + 1]! += start[i]!
    const next = start.slice(0, items)
    const other = new Int32Array(start[items]!)
    const shared = new Int32Array(start[items]!)
    for (const [key, devices] of this.pairs) {
      const a = Math.floor(key / PAIR)
      const b = key - a * PAIR
      other[next[a]!] = b
      shared[next[a]!++] = devices
      other[next[b]!] = a
      shared[next[b]!++] = devices
    }
    const rows: Array<CoWatchCount> = []
    const best = new TopPairs(limit)
    for (let from = 0; from < items; from++) {
      if (this.viewers[from]! <= 0) continue
      best.clear()
      for (let e = start[from]!; e < start[from + 1]!; e++) best.offer(other[e]!, shared[e]!)
      rows.push({
        contentId: this.ids[from]!,
        devices: this.viewers[from]!,
        neighbours: best.sorted().map(({ devices, item }) => ({ contentId: this.ids[item]!, devices }))
      })
    }
    return { rows, changedDevices }
  }

  private indexOf(id: ContentId): number {
    let i = this.index.get(id)
    if (i === undefined) {
      i = this.ids.length
      if (i >= PAIR) throw new RangeError(`co-watch counts support at most ${PAIR} catalog items`)
      this.index.set(id, i)
      this.ids.push(id)
      this.viewers.push(0)
    }
    return i
  }

  /** Pairs among `sorted` that nobody counts yet. */
  private missingPairs(sorted: ReadonlyArray<number>): number {
    let missing = 0
    for (let x = 0; x < sorted.length; x++) {
      for (let y = x + 1; y < sorted.length; y++) if (!this.pairs.has(sorted[x]! * PAIR + sorted[y]!)) missing++
    }
    return missing
  }

  /** Adds `delta` to the viewers of every item in `sorted` and the devices of every pair among them. */
  private count(sorted: ReadonlyArray<number>, delta: 1 | -1): void {
    for (let x = 0; x < sorted.length; x++) {
      const a = sorted[x]!
      this.viewers[a]! += delta
      for (let y = x + 1; y < sorted.length; y++) {
        const key = a * PAIR + sorted[y]!
        const devices = (this.pairs.get(key) ?? 0) + delta
        if (devices === 0) this.pairs.delete(key)
        else this.pairs.set(key, devices)
      }
    }
  }
}

/**
 * Neighbours per item a shard exports: its strongest pairs, enough for the 20 a row publishes
 * once counts from other shards are added, and a quarter of what 64 cost (measured: 5,000
 * devices of 32 items export ~10,000 rows).
 */
const EXPORTED_NEIGHBOURS = 32

/** The `size` strongest (item, devices) offered, most devices first and lower item on ties: a bounded min-heap. */
class TopPairs {
  private readonly size: number
  private readonly items: Int32Array
  private readonly devices: Int32Array
  private count = 0

  constructor(size: number) {
    this.size = size
    this.items = new Int32Array(size)
    this.devices = new Int32Array(size)
  }

  clear(): void {
    this.count = 0
  }

  offer(item: number, devices: number): void {
    if (this.size === 0) return
    if (this.count < this.size) {
      // Sift up: the root is the weakest kept.
      let i = this.count++
      while (i > 0) {
        const parent = (i - 1) >> 1
        if (!this.weaker(item, devices, this.items[parent]!, this.devices[parent]!)) break
        this.items[i] = this.items[parent]!
        this.devices[i] = this.devices[parent]!
        i = parent
      }
      this.items[i] = item
      this.devices[i] = devices
      return
    }
    if (!this.weaker(this.items[0]!, this.devices[0]!, item, devices)) return
    // Replace the weakest and sift down.
    let i = 0
    for (;;) {
      const left = 2 * i + 1
      if (left >= this.count) break
      const right = left + 1
      const child = right < this.count &&
          this.weaker(this.items[right]!, this.devices[right]!, this.items[left]!, this.devices[left]!)
        ? right
        : left
      if (!this.weaker(this.items[child]!, this.devices[child]!, item, devices)) break
      this.items[i] = this.items[child]!
      this.devices[i] = this.devices[child]!
      i = child
    }
    this.items[i] = item
    this.devices[i] = devices
  }

  sorted(): Array<{ readonly item: number; readonly devices: number }> {
    const out: Array<{ item: number; devices: number }> = []
    for (let i = 0; i < this.count; i++) out.push({ item: this.items[i]!, devices: this.devices[i]! })
    return out.sort((x, y) => y.devices - x.devices || x.item - y.item)
  }

  /** Whether (a, da) ranks below (b, db): fewer devices, or as many and a higher item. */
  private weaker(a: number, da: number, b: number, db: number): boolean {
    return da < db || (da === db && a > b)
  }
}

const compareIds = (a: ContentId, b: ContentId) => (a < b ? -1 : a > b ? 1 : 0)

/**
 * How strongly neighbour b belongs in item a's row: the devices that watched both over a mean of
 * both items' viewers, weighted by the popularity penalty (beta; 0.5 is the cosine).
 */
export const coWatchStrength = (devices: number, viewersOfItem: number, viewersOfNeighbour: number, beta: number) =>
  devices / (Math.pow(viewersOfItem, 1 - beta) * Math.pow(viewersOfNeighbour, beta))

/**
 * The co-watch rows of a set of pair counts, whatever names the items: for every item, its
 * neighbours backed by at least k devices, strongest first by devices of the pair over a mean of
 * both items' viewers weighted by popularityPenalty (0.5: the geometric mean, a cosine), at most
 * `neighbours` of them, with weights in thousandths. Rows with no such neighbour are left out.
 */
const rowsFromPairs = <Item>(
  forEachPair: (visit: (a: Item, b: Item, devices: number) => void) => void,
  viewers: (item: Item) => number,
  contentIdOf: (item: Item) => ContentId,
  order: (x: Item, y: Item) => number,
  config: CoWatchRowConfig
): Array<CoWatchRow> => {
  const beta = config.popularityPenalty
  const lists = new Map<Item, Array<{ item: Item; strength: number }>>()
  const add = (from: Item, item: Item, strength: number) => {
    let list = lists.get(from)
    if (list === undefined) lists.set(from, list = [])
    list.push({ item, strength })
  }
  forEachPair((a, b, devices) => {
    if (devices < config.minDevices) return
    // Never above 1: devices is at most either item's viewers.
    const [va, vb] = [viewers(a), viewers(b)]
    add(a, b, coWatchStrength(devices, va, vb, beta))
    add(b, a, coWatchStrength(devices, vb, va, beta))
  })
  const rows: Array<CoWatchRow> = []
  for (const [from, list] of lists) {
    list.sort((x, y) => y.strength - x.strength || order(x.item, y.item))
    rows.push({
      contentId: contentIdOf(from),
      neighbours: list.slice(0, config.neighbours).map(({ item, strength }) => ({
        contentId: contentIdOf(item),
        weight: Math.min(1000, Math.max(1, Math.round(strength * 1000)))
      }))
    })
  }
  return rows
}

/**
 * The federation worker's co-watch table: every shard's counts (see `exportCounts`) summed, then
 * published as one shard would publish its own. A pair's devices on a shard are known when it is
 * among the exported neighbours of either item; a pair listed by neither item on a shard (beyond
 * both items' strongest neighbours there) is missing from that shard's sum. A device that moved
 * between shards counts on each until the old shard forgets it.
 */
export const mergeCoWatchCounts = (
  shards: ReadonlyArray<ReadonlyArray<CoWatchCount>>,
  config: CoWatchRowConfig = defaultCoWatchConfig
): Array<CoWatchRow> => {
  // Items as indexes and pairs as numbers (string keys for the ~600,000 pairs two shards of 5,000
  // devices export took ~1.3 s; this, ~0.6 s).
  const index = new Map<ContentId, number>()
  const ids: Array<ContentId> = []
  const indexOf = (id: ContentId): void => {
    if (!index.has(id)) {
      index.set(id, ids.length)
      ids.push(id)
    }
  }
  // Every id first, so a pair's key can be a * items + b: below 2^30 for catalogs up to ~32,000
  // items, a small integer V8 hashes fast (keys from a * 2^24 are doubles: ~25% slower here).
  for (const rows of shards) {
    for (const row of rows) {
      indexOf(row.contentId)
      for (const n of row.neighbours) indexOf(n.contentId)
    }
  }
  const items = ids.length
  const viewers: Array<number | undefined> = []
  const pairs = new Map<number, number>()
  for (const rows of shards) {
    // One shard's count of a pair, seen from either item's list.
    const counted = new Map<number, number>()
    for (const row of rows) {
      const a = index.get(row.contentId)!
      viewers[a] = (viewers[a] ?? 0) + row.devices
      for (const n of row.neighbours) {
        const b = index.get(n.contentId)!
        if (a === b) continue
        const key = a < b ? a * items + b : b * items + a
        if ((counted.get(key) ?? 0) < n.devices) counted.set(key, n.devices)
      }
    }
    for (const [key, devices] of counted) pairs.set(key, (pairs.get(key) ?? 0) + devices)
  }
  return rowsFromPairs<number>(
    (visit) => {
      for (const [key, devices] of pairs) {
        const a = Math.floor(key / items)
        const b = key - a * items
        // A pair needs both items' viewers: counts of an item no shard listed are incomplete.
        if (viewers[a] !== undefined && viewers[b] !== undefined) visit(a, b, devices)
      }
    },
    (item) => viewers[item]!,
    (item) => ids[item]!,
    (x, y) => compareIds(ids[x]!, ids[y]!),
    config
  ).sort((x, y) => compareIds(x.contentId, y.contentId))
}
