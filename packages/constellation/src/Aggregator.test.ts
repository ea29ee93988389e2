import { assert, describe, it } from "@effect/vitest"
import { EMBEDDING_DIMENSIONS, type PatternId, type SharedPattern } from "@omega/protocol"
import { Aggregator, defaultAggregatorConfig, DeviceHashes } from "./Aggregator.ts"

const direction = (seed: number) => {
  const v = new Float32Array(EMBEDDING_DIMENSIONS)
  let s = seed
  for (let i = 0; i < v.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    v[i] = s / 4294967296 - 0.5
  }
  return normalize(v)
}

const normalize = (v: Float32Array) => {
  const n = Math.hypot(...v)
  return v.map((x) => x / n)
}

/** `base` nudged by a little noise: the same taste seen on another TV. */
const near = (base: Float32Array, seed: number, noise = 0.05) => {
  const d = direction(seed)
  return normalize(base.map((x, i) => x + noise * d[i]!))
}

const pattern = (embedding: Float32Array, overrides: Partial<SharedPattern> = {}): SharedPattern => ({
  id: `p-${Math.random()}` as PatternId,
  embedding,
  successRate: 0.9,
  sampleCount: 10,
  context: { timeOfDay: "evening", dayType: "weekday" },
  ...overrides
})

const now = 1_700_000_000_000
const cosine = (a: Float32Array, b: Float32Array) => a.reduce((s, x, i) => s + x * b[i]!, 0)

describe("DeviceHashes", () => {
  it("remembers distinct hashes up to its capacity", () => {
    const devices = new DeviceHashes(2)
    assert.strictEqual(devices.indexOf(7), -1)
    devices.add(7)
    assert.strictEqual(devices.indexOf(7), 0)
    devices.add(9)
    devices.add(11)
    assert.strictEqual(devices.size, 2, "full: the third is not remembered")
    assert.strictEqual(devices.indexOf(11), -1)
  })
})

describe("Aggregator", () => {
  it("groups similar patterns from different devices and publishes only groups of at least k devices", () => {
    const aggregator = new Aggregator()
    const comedy = direction(1)
    const horror = direction(2)
    for (let device = 0; device < 5; device++) {
      aggregator.add("eu", `tv-${device}`, [pattern(near(comedy, device))], now)
    }
    for (let device = 0; device < 2; device++) {
      aggregator.add("eu", `tv-h${device}`, [pattern(near(horror, 50 + device))], now)
    }
    const published = aggregator.snapshot("eu", 100, now)
    assert.strictEqual(published.length, 1, "the horror group has only 2 devices and must stay private")
    assert.strictEqual(published[0]!.deviceCount, 5)
    assert.isAbove(cosine(published[0]!.embedding, comedy), 0.95)
    assert.strictEqual(aggregator.snapshot("us", 100, now).length, 0)
  })

  it("counts a device once per group however often it uploads, and bounds the evidence it holds there", () => {
    const aggregator = new Aggregator()
    const taste = direction(3)
    for (let i = 0; i < 20; i++) aggregator.add("eu", "tv-loud", [pattern(near(taste, i), { sampleCount: 1e6 })], now)
    assert.strictEqual(aggregator.snapshot("eu", 10, now).length, 0, "one device alone never reaches k")
    aggregator.add("eu", "tv-a", [pattern(near(taste, 100))], now)
    aggregator.add("eu", "tv-b", [pattern(near(taste, 101))], now)
    const [group] = aggregator.snapshot("eu", 10, now)
    assert.strictEqual(group!.deviceCount, 3)
    // Twenty uploads of a huge sample count hold no more than one device's share, beside 10 + 10.
    assert.closeTo(group!.sampleCount, defaultAggregatorConfig.maxSamplesPerDevice + 20, 1e-6)
  })

  it("lets no device steer a group with many near-identical patterns, nor by updating one again and again", () => {
    // One bucket and a loose threshold: the loud device's tilted taste joins the honest group.
    const aggregator = new Aggregator({ ...defaultAggregatorConfig, joinThreshold: 0.5, hashBits: 0 })
    const honest = direction(20)
    const tilted = near(honest, 21, 0.8)
    for (let d = 0; d < 3; d++) {
      aggregator.add("eu", `tv-${d}`, [pattern(near(honest, d, 0.01), { sampleCount: 30 })], now)
    }
    // 64 copies in one upload, then the same pattern "updated" with a growing count every minute.
    aggregator.add("eu", "tv-loud", Array.from({ length: 64 }, (_, i) => pattern(near(tilted, 100 + i, 0.01))), now)
    for (let minute = 1; minute <= 60; minute++) {
      aggregator.add("eu", "tv-loud", [pattern(tilted, { sampleCount: 50 * minute })], now + minute * 60_000)
    }
    const [group] = aggregator.snapshot("eu", 10, now + 3_600_000)
    assert.strictEqual(group!.deviceCount, 4)
    // Three honest devices of 30 samples against one capped at 50: the centroid stays nearer the honest taste.
    assert.isAbove(cosine(group!.embedding, honest), cosine(group!.embedding, tilted))
    assert.isBelow(group!.sampleCount, 3 * 30 + defaultAggregatorConfig.maxSamplesPerDevice + 1e-6)
  })

  it("stops counting a device whose evidence has faded, so a group kept alive by one device is not published", () => {
    const aggregator = new Aggregator()
    const taste = direction(40)
    for (let d = 0; d < 3; d++) aggregator.add("eu", `tv-${d}`, [pattern(near(taste, d), { sampleCount: 2 })], now)
    assert.strictEqual(aggregator.snapshot("eu", 10, now)[0]!.deviceCount, 3)
    // Three weeks on, the three devices' 2 samples each have faded under half a sample; one device
    // keeps feeding the group.
    const later = now + 3 * defaultAggregatorConfig.halfLifeMs
    aggregator.add("eu", "tv-loyal", [pattern(near(taste, 9), { sampleCount: 20 })], later)
    assert.deepStrictEqual(aggregator.snapshot("eu", 10, later), [], "one live device is not k")
    assert.strictEqual(aggregator.snapshot("eu", 10, later, 1)[0]!.deviceCount, 1)
  })

  it("numbers new groups after those it was seeded with, so ids stay unique across a restart", () => {
    const before = new Aggregator()
    for (let d = 0; d < 3; d++) before.add("eu", `tv-${d}`, [pattern(near(direction(30), d))], now)
    const saved = before.snapshot("eu", 10, now)
    assert.deepStrictEqual(saved.map((p) => p.id), ["agg-eu-1"])
    const after = new Aggregator()
    after.seed("eu", [...saved, ...saved], now)
    assert.strictEqual(after.stats().clusters, 1, "a pattern seeded twice is one group")
    for (let d = 0; d < 3; d++) after.add("eu", `tv-${d}`, [pattern(near(direction(31), d))], now)
    const ids = after.snapshot("eu", 10, now).map((p) => p.id)
    assert.sameMembers(ids, ["agg-eu-1", "agg-eu-2"])
  })

  it("weights the centroid by quality: successful patterns pull harder than failing ones", () => {
    // One bucket (no hash bits), so the two tastes are compared whatever side of a hyperplane they lie on.
    const aggregator = new Aggregator({ ...defaultAggregatorConfig, joinThreshold: 0.5, hashBits: 0 })
    const a = direction(4)
    const b = near(a, 9, 0.9)
    for (let d = 0; d < 3; d++) {
      aggregator.add("eu", `good-${d}`, [pattern(near(a, d, 0.01), { successRate: 1 })], now)
      aggregator.add("eu", `bad-${d}`, [pattern(near(b, d, 0.01), { successRate: 0.1 })], now)
    }
    const [group] = aggregator.snapshot("eu", 10, now)
    assert.isAbove(cosine(group!.embedding, a), cosine(group!.embedding, b))
    assert.closeTo(group!.successRate, (1 + 0.1) / 2, 0.01)
  })

  it("keeps different contexts apart and lets old evidence decay away", () => {
    const aggregator = new Aggregator()
    const taste = direction(5)
    for (let d = 0; d < 3; d++) {
      aggregator.add("eu", `tv-${d}`, [pattern(near(taste, d))], now)
      aggregator.add("eu", `tv-${d}`, [pattern(near(taste, d), { context: { timeOfDay: "morning" } })], now)
    }
    assert.strictEqual(aggregator.snapshot("eu", 10, now).length, 2)
    const later = now + 20 * defaultAggregatorConfig.halfLifeMs
    assert.isBelow(aggregator.snapshot("eu", 10, later)[0]?.sampleCount ?? 0, 0.01)
    assert.strictEqual(aggregator.prune(later), 2)
    assert.strictEqual(aggregator.stats().clusters, 0)
  })

  it("finds a taste's cluster across a hash boundary (one bit away)", () => {
    const aggregator = new Aggregator()
    const taste = direction(6)
    // Two views of one taste that differ only in the sign of the first coordinate's tiny value:
    // their buckets differ in bit 0, and multi-probe still folds them together.
    const onEitherSide = (sign: number) => normalize(taste.map((x, i) => (i === 0 ? sign * 1e-4 : x)))
    for (let d = 0; d < 3; d++) aggregator.add("eu", `tv-${d}`, [pattern(onEitherSide(d === 1 ? -1 : 1))], now)
    assert.strictEqual(aggregator.stats().clusters, 1)
    assert.strictEqual(aggregator.snapshot("eu", 10, now)[0]!.deviceCount, 3)
  })
})
