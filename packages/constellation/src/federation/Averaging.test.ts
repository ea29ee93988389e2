import { assert, describe, it } from "@effect/vitest"
import { EMBEDDING_DIMENSIONS, type GlobalPattern, type PatternContext } from "@omega/protocol"
import { cosine, gaussian, seededRandom } from "../internal/vectors.ts"
import {
  type AveragingConfig,
  type Contribution,
  defaultAveragingConfig,
  federate,
  groupContributions,
  patternQuality,
  publishable,
  weightedMedian
} from "./Averaging.ts"

const random = seededRandom(42)

const unitVector = (values: ArrayLike<number>) => {
  const n = Math.hypot(...Array.from(values))
  return Float32Array.from(values, (x) => x / n)
}

const direction = () => unitVector(Array.from({ length: EMBEDDING_DIMENSIONS }, () => gaussian(random)))

/** `base` with noise of about `spread` in cosine terms: the same taste seen on another TV. */
const near = (base: Float32Array, spread = 0.1) => {
  const noise = direction()
  return unitVector(base.map((x, i) => x + spread * noise[i]!))
}

/** `from` turned towards `to` until their cosine is `similarity`. */
const tilt = (from: Float32Array, to: Float32Array, similarity: number) => {
  const along = cosine(to, from)
  const orthogonal = unitVector(to.map((x, i) => x - along * from[i]!))
  const s = Math.sqrt(1 - similarity * similarity)
  return unitVector(from.map((x, i) => similarity * x + s * orthogonal[i]!))
}

const evening: PatternContext = { timeOfDay: "evening", dayType: "weekday" }

const contribution = (
  source: string,
  embedding: Float32Array,
  overrides: Partial<Contribution> = {}
): Contribution => ({
  source,
  deviceCount: 1,
  embedding,
  successRate: 0.9,
  sampleCount: 10,
  context: evening,
  ...overrides
})

describe("groupContributions", () => {
  it("groups by cosine within a context and averages weighted by success rate x sample count", () => {
    const taste = direction()
    const heavy = near(taste, 0.3)
    const light = near(taste, 0.3)
    const groups = groupContributions([
      contribution("a", heavy, { successRate: 1, sampleCount: 40 }),
      contribution("b", light, { successRate: 0.5, sampleCount: 4 }),
      contribution("c", near(taste, 0.3)),
      // The same taste in another context is another pattern.
      contribution("d", near(taste, 0.05), { context: { timeOfDay: "morning", dayType: "weekend" } }),
      contribution("e", direction())
    ], { ...defaultAveragingConfig, joinThreshold: 0.8, trimFraction: 0 })
    assert.strictEqual(groups.length, 3)
    const group = groups.find((g) => g.members === 3)!
    assert.isAbove(cosine(group.embedding, taste), 0.95)
    assert.isAbove(cosine(group.embedding, heavy), cosine(group.embedding, light), "the heavier member pulls harder")
    assert.strictEqual(group.deviceCount, 3)
    assert.closeTo(group.successRate, (40 * 1 + 4 * 0.5 + 10 * 0.9) / 54, 1e-9)
  })

  it("counts a device once however many of its patterns join, and bounds its evidence", () => {
    const taste = direction()
    const groups = groupContributions(
      Array.from({ length: 5 }, () => contribution("loud", near(taste, 0.05), { sampleCount: 1e9 })),
      defaultAveragingConfig
    )
    assert.strictEqual(groups.length, 1)
    assert.strictEqual(groups[0]!.deviceCount, 1)
    assert.isAtMost(groups[0]!.sampleCount, defaultAveragingConfig.maxSamplesPerDevice)
    assert.strictEqual(publishable(groups, 3).length, 0, "one device never reaches k")
  })

  it("redistributes only groups with at least k distinct devices", () => {
    const popular = direction()
    const niche = direction()
    const groups = groupContributions([
      ...["a", "b", "c"].map((d) => contribution(d, near(popular, 0.05))),
      ...["d", "e"].map((d) => contribution(d, near(niche, 0.05)))
    ])
    assert.deepStrictEqual(groups.map((g) => g.deviceCount).sort(), [2, 3])
    assert.deepStrictEqual(publishable(groups, 3).map((g) => g.deviceCount), [3])
  })
})

describe("federate", () => {
  const shardPattern = (embedding: Float32Array, deviceCount: number) => ({
    embedding,
    successRate: 0.8,
    sampleCount: 20 * deviceCount,
    deviceCount,
    context: evening
  })

  it("merges similar shard aggregates: devices add up across shards, never within one", () => {
    const taste = direction()
    const published = federate([
      // Two aggregates of one shard may share devices, so together they vouch for at least 2, not 3.
      { shard: "s1", patterns: [shardPattern(near(taste, 0.05), 2), shardPattern(near(taste, 0.05), 1)] },
      { shard: "s2", patterns: [shardPattern(near(taste, 0.05), 1)] },
      { shard: "s3", patterns: [shardPattern(direction(), 2)] }
    ], { idPrefix: "r1-", limit: 10 })
    assert.strictEqual(published.length, 1, "the lone 2-device aggregate stays inside the constellation")
    assert.strictEqual(published[0]!.deviceCount, 3)
    assert.strictEqual(published[0]!.id, "r1-0")
    assert.isAbove(cosine(published[0]!.embedding, taste), 0.99)
  })

  it("publishes best supported first, up to the limit", () => {
    const [a, b, c] = [direction(), direction(), direction()]
    const published = federate([
      { shard: "s1", patterns: [shardPattern(a, 3), shardPattern(b, 9), shardPattern(c, 5)] }
    ], { idPrefix: "x", limit: 2 })
    assert.deepStrictEqual(published.map((p) => p.deviceCount), [9, 5])
  })
})

describe("robustness to poisoned devices", () => {
  // 10 tastes, 19 honest devices each (190), and 10 malicious devices: 5% of the fleet.
  const tastes = Array.from({ length: 10 }, () => direction())
  const honest: Array<Contribution> = tastes.flatMap((taste, t) =>
    Array.from({ length: 19 }, (_, d) =>
      contribution(`honest-${t}-${d}`, near(taste, 0.2), {
        successRate: 0.75 + 0.2 * random(),
        sampleCount: 5 + Math.floor(30 * random())
      }))
  )
  const target = direction()
  /** Every malicious device tilts one taste (just inside the join threshold) towards the attacker's target. */
  const hijackers = tastes.map((taste, t) =>
    contribution(`evil-${t}`, tilt(taste, target, 0.9), { successRate: 1, sampleCount: 1e9 })
  )
  /** All malicious devices push the opposite of the first taste, as one group. */
  const opposers = tastes.map((_, t) =>
    contribution(`evil-${t}`, tastes[0]!.map((x) => -x), { successRate: 1, sampleCount: 1e9 })
  )

  /** Devices spread over 3 shards, each grouping its own, then one federation round publishing 10 patterns. */
  const round = (devices: ReadonlyArray<Contribution>, config: AveragingConfig, limit = tastes.length) =>
    federate(
      [0, 1, 2].map((s) => ({
        shard: `s${s}`,
        patterns: groupContributions(
          devices.filter((_, i) => i % 3 === s),
          { ...config, minDevices: 1 }
        )
      })),
      { config, idPrefix: "g", limit }
    )

  /**
   * Quality of a round: for every taste, the cosine between the honest-only round's pattern for it
   * and the nearest pattern the round under attack published, averaged over tastes. 1 means the
   * attack changed nothing that reaches the TVs; a taste whose pattern was pushed out scores ~0.
   */
  const quality = (reference: ReadonlyArray<GlobalPattern>, attacked: ReadonlyArray<GlobalPattern>): number =>
    tastes.reduce((sum, taste) => {
      const mine = reference.reduce((best, p) => cosine(p.embedding, taste) > cosine(best.embedding, taste) ? p : best)
      return sum + Math.max(...attacked.map((p) => cosine(p.embedding, mine.embedding)))
    }, 0) / tastes.length

  const undefended: AveragingConfig = {
    ...defaultAveragingConfig,
    maxSamplesPerDevice: Infinity,
    trimFraction: 0,
    minAgreement: -1
  }

  it("5% of devices tilting every taste with huge sample counts move quality by less than 5%", () => {
    const reference = round(honest, defaultAveragingConfig)
    assert.strictEqual(reference.length, tastes.length)
    const defended = quality(reference, round([...honest, ...hijackers], defaultAveragingConfig))
    assert.isAbove(defended, 0.95)
    // The same attack on a plain weighted average drags every taste to the attacker's side.
    const plain = quality(round(honest, undefended), round([...honest, ...hijackers], undefended))
    assert.isBelow(plain, 0.95)
  })

  it("5% of devices pushing one opposite taste with huge sample counts move quality by less than 5%", () => {
    const reference = round(honest, defaultAveragingConfig)
    const attacked = round([...honest, ...opposers], defaultAveragingConfig)
    assert.isAbove(quality(reference, attacked), 0.95)
    assert.isFalse(attacked.some((p) => cosine(p.embedding, tastes[0]!) < -0.5), "the opposite group is outranked")
    // It does reach k (10 devices), and by sample counts alone it would have taken the first slot.
    const everything = round([...honest, ...opposers], undefended, 2 * tastes.length)
    const opposite = everything.find((p) => cosine(p.embedding, tastes[0]!) < -0.5)
    assert.isDefined(opposite)
    assert.strictEqual(Math.max(...everything.map(patternQuality)), patternQuality(opposite!))
  })
})

describe("weightedMedian", () => {
  it("stays near the majority whatever a minority sends", () => {
    const taste = direction()
    const members = [
      ...Array.from({ length: 8 }, () => ({ embedding: near(taste, 0.1), weight: 1 })),
      ...Array.from({ length: 2 }, () => ({ embedding: taste.map((x) => -100 * x), weight: 1 }))
    ]
    assert.isAbove(cosine(weightedMedian(members)!, taste), 0.9)
  })
})
