import { assert, describe, it } from "@effect/vitest"
import type { ContentId, CoWatchCount } from "@omega/protocol"
import { CoWatchCounter, mergeCoWatchCounts } from "./CoWatch.ts"

const ids = (...names: Array<string>) => names as Array<ContentId>
// Cosine weights (popularityPenalty 0.5) unless a test says otherwise.
const config = {
  minDevices: 3,
  neighbours: 20,
  maxItemsPerDevice: 64,
  maxDevices: 1_000,
  maxPairs: 1_000,
  popularityPenalty: 0.5
}

/** Rows as { item: { neighbour: weight } } for readable assertions. */
const table = (counter: CoWatchCounter) =>
  Object.fromEntries(
    counter.publish().map((
      row
    ) => [row.contentId, Object.fromEntries(row.neighbours.map((n) => [n.contentId, n.weight]))])
  )

describe("CoWatchCounter", () => {
  it("publishes a pair only once k distinct devices watched both items", () => {
    const counter = new CoWatchCounter(config)
    counter.observe("tv-1", ids("a", "b", "c"))
    counter.observe("tv-2", ids("a", "b"))
    assert.deepStrictEqual(counter.publish(), [])
    counter.observe("tv-3", ids("a", "b", "d"))
    // a-b: 3 devices of 3 viewers each, cosine 1; a-c, b-c, a-d, b-d: one device each, never published.
    assert.deepStrictEqual(table(counter), { a: { b: 1000 }, b: { a: 1000 } })
    assert.strictEqual(counter.meanItemsPerDevice, 8 / 3)
    counter.forget("tv-2")
    assert.strictEqual(counter.meanItemsPerDevice, 3, "a forgotten device is not a device with items")
  })

  it("weights a pair by co-watching devices over the geometric mean of both items' viewers", () => {
    const counter = new CoWatchCounter(config)
    for (let tv = 1; tv <= 3; tv++) counter.observe(`tv-${tv}`, ids("hit", "cult"))
    for (let tv = 4; tv <= 12; tv++) counter.observe(`tv-${tv}`, ids("hit"))
    counter.observe("tv-13", ids("cult"))
    // hit: 12 viewers, cult: 4, both: 3 -> 3 / sqrt(48) = 0.433.
    assert.deepStrictEqual(table(counter), { cult: { hit: 433 }, hit: { cult: 433 } })
  })

  it("with a popularity penalty above 0.5, a row ranks a niche neighbour above a hit the cosine prefers", () => {
    const watch = (counter: CoWatchCounter) => {
      // a and hit: 9 devices, hit has 36 viewers; a and niche: 4 devices, niche has 9 viewers.
      for (let tv = 1; tv <= 9; tv++) counter.observe(`tv-${tv}`, ids("a", "hit", ...(tv <= 4 ? ["niche"] : [])))
      for (let tv = 10; tv <= 36; tv++) counter.observe(`tv-${tv}`, ids("hit"))
      for (let tv = 37; tv <= 41; tv++) counter.observe(`tv-${tv}`, ids("niche"))
      return counter.publish().find((row) => row.contentId === "a")!.neighbours
    }
    // Cosine: 9 / sqrt(9 x 36) = 0.5 against 4 / sqrt(9 x 9) = 0.444.
    assert.deepStrictEqual(watch(new CoWatchCounter(config)), [
      { contentId: "hit" as ContentId, weight: 500 },
      { contentId: "niche" as ContentId, weight: 444 }
    ])
    // Penalty 0.7: 9 / (9^0.3 x 36^0.7) = 0.379 against 4 / (9^0.3 x 9^0.7) = 0.444.
    assert.deepStrictEqual(watch(new CoWatchCounter({ ...config, popularityPenalty: 0.7 })), [
      { contentId: "niche" as ContentId, weight: 444 },
      { contentId: "hit" as ContentId, weight: 379 }
    ])
  })

  it("a device's new items replace its old ones, and a row that empties is withdrawn", () => {
    const counter = new CoWatchCounter(config)
    for (let tv = 1; tv <= 3; tv++) counter.observe(`tv-${tv}`, ids("a", "b"))
    assert.deepStrictEqual(Object.keys(table(counter)), ["a", "b"])
    // tv-3 now decodes to other items: a-b drops to 2 devices, under k, and both rows are withdrawn.
    counter.observe("tv-3", ids("c"))
    const withdrawn = [
      { contentId: "a" as ContentId, neighbours: [] },
      { contentId: "b" as ContentId, neighbours: [] }
    ]
    assert.deepStrictEqual(counter.publish(), withdrawn)
    // Withdrawn once; the next table does not repeat it.
    assert.deepStrictEqual(counter.publish(), [])
    counter.observe("tv-3", ids("a", "b"))
    assert.deepStrictEqual(Object.keys(table(counter)), ["a", "b"])
    counter.forget("tv-1")
    assert.deepStrictEqual(counter.publish(), withdrawn)
    assert.strictEqual(counter.deviceCount, 2)
  })

  it("bounds each device's items and each row's neighbours, strongest first", () => {
    const counter = new CoWatchCounter({ ...config, minDevices: 1, neighbours: 2, maxItemsPerDevice: 3 })
    counter.observe("tv-1", ids("a", "b", "c", "d", "e"))
    counter.observe("tv-2", ids("a", "b"))
    // tv-1 counts only a, b, c: a-b has 2 devices, a-c 1; d and e never appear.
    const rows = table(counter)
    assert.deepStrictEqual(Object.keys(rows), ["a", "b", "c"])
    assert.deepStrictEqual(Object.keys(rows["a"]!), ["b", "c"])
    assert.isAbove(rows["a"]!["b"]!, rows["a"]!["c"]!)
  })

  it("forgets the least recently observed device beyond maxDevices, with its pairs", () => {
    const counter = new CoWatchCounter({ ...config, maxDevices: 3 })
    for (let tv = 1; tv <= 3; tv++) counter.observe(`tv-${tv}`, ids("a", "b"))
    counter.observe("tv-1", ids("a", "b")) // observed again: now tv-2 is the least recent
    counter.observe("tv-4", ids("c"))
    assert.strictEqual(counter.deviceCount, 3)
    assert.deepStrictEqual(table(counter), {}, "a-b lost tv-2 and is under k")
    counter.observe("tv-2", ids("a", "b")) // back, and tv-3 goes
    assert.deepStrictEqual(table(counter), {})
    counter.observe("tv-1", ids("a", "b")) // tv-4 is now the least recent
    counter.observe("tv-5", ids("a", "b")) // and goes; a-b: tv-2, tv-1, tv-5
    assert.deepStrictEqual(table(counter), { a: { b: 1000 }, b: { a: 1000 } })
  })

  it("does not count a device whose pairs would not fit under maxPairs, so counts stay exact", () => {
    const counter = new CoWatchCounter({ ...config, maxPairs: 3 })
    for (let tv = 1; tv <= 3; tv++) counter.observe(`tv-${tv}`, ids("a", "b", "c"))
    // a-b, a-c and b-c fill the bound: a device bringing a new pair (a-d) is not counted at all.
    counter.observe("tv-4", ids("a", "d"))
    assert.strictEqual(counter.deviceCount, 3)
    // The three move to a and b: a-c and b-c go, which makes room.
    for (let tv = 1; tv <= 3; tv++) counter.observe(`tv-${tv}`, ids("a", "b"))
    for (let tv = 4; tv <= 6; tv++) counter.observe(`tv-${tv}`, ids("a", "d"))
    assert.strictEqual(counter.deviceCount, 6)
    // a: 6 viewers, b and d: 3 each; both pairs 3 devices: 3 / sqrt(18) = 0.707.
    assert.deepStrictEqual(table(counter), { a: { b: 707, d: 707 }, b: { a: 707 }, d: { a: 707 } })
  })

  it("adds up a device's evidence over its uploads and counts its strongest items", () => {
    const counter = new CoWatchCounter({ ...config, minDevices: 1, maxItemsPerDevice: 2 })
    const e = (contentId: string, weight: number) => ({ contentId: contentId as ContentId, weight })
    counter.observeEvidence("tv-1", [e("a", 3), e("b", 2), e("c", 1)])
    assert.deepStrictEqual(table(counter), { a: { b: 1000 }, b: { a: 1000 } })
    // c grows over two more uploads and takes b's place (b's row is withdrawn); junk weights are ignored.
    counter.observeEvidence("tv-1", [e("c", 0.5), e("b", Number.NaN), e("d", -4)])
    assert.deepStrictEqual(table(counter), { a: { b: 1000 }, b: { a: 1000 } })
    counter.observeEvidence("tv-1", [e("c", 1)])
    assert.deepStrictEqual(table(counter), { a: { c: 1000 }, b: {}, c: { a: 1000 } })
    counter.forget("tv-1")
    counter.observeEvidence("tv-1", [e("b", 1), e("d", 1)])
    // Forgotten evidence does not come back: a and c are withdrawn, only b-d is counted.
    assert.deepStrictEqual(table(counter), { a: {}, b: { d: 1000 }, c: {}, d: { b: 1000 } })
  })

  it("counts the devices whose items changed since the last publish", () => {
    const counter = new CoWatchCounter(config)
    counter.observe("tv-1", ids("a", "b"))
    counter.observe("tv-1", ids("a", "c"))
    counter.observe("tv-2", ids("a"))
    assert.strictEqual(counter.changedDevices, 2)
    counter.publish()
    assert.strictEqual(counter.changedDevices, 0)
    counter.forget("tv-2")
    assert.strictEqual(counter.changedDevices, 1)
  })

  it("refuses a configuration that would publish single-device pairs, or rows the wire cannot carry", () => {
    assert.throws(() => new CoWatchCounter({ ...config, minDevices: 0 }), RangeError)
    assert.throws(() => new CoWatchCounter({ ...config, neighbours: 65 }), RangeError)
    assert.throws(() => new CoWatchCounter({ ...config, popularityPenalty: 1.5 }), RangeError)
    assert.throws(() => new CoWatchCounter({ ...config, popularityPenalty: Number.NaN }), RangeError)
  })
})

describe("co-watch across shards", () => {
  /** Rows as { item: { neighbour: weight } }. */
  const asTable = (rows: ReturnType<typeof mergeCoWatchCounts>) =>
    Object.fromEntries(
      rows.map((row) => [row.contentId, Object.fromEntries(row.neighbours.map((n) => [n.contentId, n.weight]))])
    )

  it("exports every watched item's viewers and neighbours, sub-k pairs included, and the devices changed since", () => {
    const counter = new CoWatchCounter(config)
    counter.observe("tv-1", ids("a", "b", "c"))
    counter.observe("tv-2", ids("a", "b"))
    counter.observe("tv-3", ids("d"))
    const exported = counter.exportCounts(1)
    assert.strictEqual(exported.changedDevices, 3)
    assert.deepStrictEqual(
      exported.rows.map((r) => [r.contentId, r.devices, r.neighbours.map((n) => [n.contentId, n.devices])]),
      [
        ["a", 2, [["b", 2]]],
        ["b", 2, [["a", 2]]],
        // c's neighbours tie at one device each: the item seen first wins.
        ["c", 1, [["a", 1]]],
        ["d", 1, []]
      ]
    )
    // Until a federated table is taken, every export reports every device changed since the last
    // one: a device changing round after round counts once, never k times.
    counter.observe("tv-1", ids("a", "b"))
    counter.observe("tv-1", ids("a"))
    assert.strictEqual(counter.exportCounts().changedDevices, 3)
    // Publishing to this shard's own TVs does not reset it; taking a table does.
    counter.publish()
    assert.strictEqual(counter.exportCounts().changedDevices, 3)
    counter.tableTaken()
    assert.strictEqual(counter.exportCounts().changedDevices, 0)
    counter.observe("tv-4", ids("a"))
    assert.strictEqual(counter.exportCounts().changedDevices, 1)
  })

  it("exports each item's strongest neighbours exactly as sorting all its pairs would", () => {
    const counter = new CoWatchCounter({ ...config, maxPairs: 100_000 })
    let seed = 7
    const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647
    const watched = new Map<string, Set<string>>()
    for (let tv = 0; tv < 300; tv++) {
      const items = new Set(
        Array.from({ length: 1 + Math.floor(random() * 12) }, () => `m${Math.floor(60 * random() ** 2)}`)
      )
      watched.set(`tv-${tv}`, items)
      counter.observe(`tv-${tv}`, ids(...items))
    }
    // The same counts by brute force: devices per pair, then each item's pairs sorted (most devices,
    // then the item first seen), cut at 5.
    const firstSeen = new Map<string, number>()
    for (const items of watched.values()) {
      for (const id of items) if (!firstSeen.has(id)) firstSeen.set(id, firstSeen.size)
    }
    const expected = new Map<string, Array<[string, number]>>()
    for (const a of firstSeen.keys()) {
      const pairs: Array<[string, number]> = []
      for (const b of firstSeen.keys()) {
        if (a === b) continue
        const devices = [...watched.values()].filter((items) => items.has(a) && items.has(b)).length
        if (devices > 0) pairs.push([b, devices])
      }
      pairs.sort((x, y) => y[1] - x[1] || firstSeen.get(x[0])! - firstSeen.get(y[0])!)
      expected.set(a, pairs.slice(0, 5))
    }
    const exported = counter.exportCounts(5).rows
    assert.strictEqual(exported.length, firstSeen.size)
    for (const row of exported) {
      assert.deepStrictEqual(
        row.neighbours.map((n): [string, number] => [n.contentId, n.devices]),
        expected.get(row.contentId),
        row.contentId
      )
    }
  })

  it("sums the shards' counts, so a pair reaches k across shards that no shard has alone", () => {
    const shardA = new CoWatchCounter(config)
    const shardB = new CoWatchCounter(config)
    shardA.observe("tv-1", ids("a", "b"))
    shardA.observe("tv-2", ids("a", "b", "c"))
    shardB.observe("tv-3", ids("a", "b"))
    shardB.observe("tv-4", ids("c"))
    assert.deepStrictEqual(shardA.publish(), [], "2 devices: below k on shard A")
    const counts = [shardA.exportCounts().rows, shardB.exportCounts().rows]
    // a-b: 3 devices of 3 viewers each; a-c and b-c: one device, never published.
    assert.deepStrictEqual(asTable(mergeCoWatchCounts(counts, config)), { a: { b: 1000 }, b: { a: 1000 } })
    // c's viewers on shard B count in the cosine even though c has no pair there.
    shardA.observe("tv-5", ids("a", "c"))
    shardB.observe("tv-6", ids("a", "c"))
    const merged = asTable(mergeCoWatchCounts([shardA.exportCounts().rows, shardB.exportCounts().rows], config))
    // a-c: 3 devices; a: 5 viewers, c: 4 -> 3 / sqrt(20) = 0.671.
    assert.strictEqual(merged["c"]!["a"], 671)
  })

  it("knows a shard's count of a pair from either item's list, and counts it once", () => {
    const count = (contentId: string, devices: number, neighbours: ReadonlyArray<string>): CoWatchCount => ({
      contentId: contentId as ContentId,
      devices,
      neighbours: neighbours.map((n) => ({ contentId: n as ContentId, devices }))
    })
    const rows = [
      // The shard listed a-b only under a (b's list was truncated before it)...
      count("a", 3, ["b"]),
      count("b", 3, []),
      // ...and c-d under both: counted once, not twice.
      count("c", 3, ["d"]),
      count("d", 3, ["c"])
    ]
    const merged = asTable(mergeCoWatchCounts([rows], config))
    assert.deepStrictEqual(merged, { a: { b: 1000 }, b: { a: 1000 }, c: { d: 1000 }, d: { c: 1000 } })
    assert.deepStrictEqual(mergeCoWatchCounts([rows], { ...config, minDevices: 4 }), [])
  })
})
