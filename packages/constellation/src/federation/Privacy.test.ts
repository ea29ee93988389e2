import { assert, describe, it } from "@effect/vitest"
import { EMBEDDING_DIMENSIONS, type PatternId, type SharedPattern } from "@omega/protocol"
import { cosine, gaussian, seededRandom, unit } from "../internal/vectors.ts"
import {
  composedEpsilon,
  gaussianDelta,
  gaussianSigma,
  noiseFloor,
  normalCdf,
  PATTERN_SENSITIVITY,
  patternNoise,
  privatizePattern
} from "./Privacy.ts"

describe("gaussianSigma (analytic Gaussian mechanism)", () => {
  it("meets the target delta exactly at the returned sigma", () => {
    for (const [epsilon, delta] of [[0.5, 1e-5], [1, 1e-5], [4, 1e-6], [10, 1e-5]] as const) {
      const sigma = gaussianSigma(epsilon, delta, 1)
      assert.closeTo(gaussianDelta(epsilon, sigma, 1) / delta, 1, 1e-3)
      assert.isAbove(gaussianDelta(epsilon, sigma * 0.99, 1), delta, "a smaller sigma breaks the guarantee")
    }
  })

  it("needs less noise than the classical bound, and less for a larger epsilon or smaller sensitivity", () => {
    const classical = (epsilon: number, delta: number) => Math.sqrt(2 * Math.log(1.25 / delta)) / epsilon
    const sigma = gaussianSigma(1, 1e-5, 1)
    // Balle and Wang (2018) report about 3.73 where the classical bound asks for 4.84.
    assert.closeTo(sigma, 3.73, 0.05)
    assert.isBelow(sigma, classical(1, 1e-5))
    assert.isBelow(gaussianSigma(2, 1e-5, 1), sigma)
    assert.closeTo(gaussianSigma(1, 1e-5, 2), 2 * sigma, 1e-6 * sigma)
  })

  it("rejects settings with no guarantee", () => {
    assert.throws(() => gaussianSigma(0, 1e-5, 1), RangeError)
    assert.throws(() => gaussianSigma(1, 0, 1), RangeError)
  })

  it("uses a normal CDF accurate in the tails", () => {
    assert.closeTo(normalCdf(0), 0.5, 1e-7)
    assert.closeTo(normalCdf(-4.753424) / 1e-6, 1, 1e-3)
  })
})

describe("privatizePattern", () => {
  const random = seededRandom(11)
  const embedding = unit(Array.from({ length: EMBEDDING_DIMENSIONS }, () => gaussian(random)))!
  const pattern: SharedPattern = {
    id: "p" as PatternId,
    embedding,
    successRate: 0.9,
    sampleCount: 1e6,
    context: { timeOfDay: "evening" }
  }

  it("adds noise of the calibrated scale and releases values in their ranges", () => {
    const noise = { ...patternNoise({ epsilon: 1, delta: 1e-5, maxSamples: 50 }), sigma: 0.05 }
    let sum = 0
    const draws = 200
    for (let i = 0; i < draws; i++) {
      const released = privatizePattern(pattern, noise, random)
      sum += cosine(released.embedding, embedding)
      assert.isAtLeast(released.successRate, 0)
      assert.isAtMost(released.successRate, 1)
      assert.isAtMost(released.sampleCount, 50)
      assert.strictEqual(released.id, pattern.id)
    }
    // A unit vector plus N(0, sigma^2) noise per coordinate keeps a cosine of about 1/sqrt(1 + d sigma^2).
    assert.closeTo(sum / draws, 1 / Math.sqrt(1 + EMBEDDING_DIMENSIONS * 0.05 * 0.05), 0.02)
  })

  it("reports the guarantee of one release and what many releases spend together", () => {
    const noise = patternNoise({ epsilon: 2, delta: 1e-5, maxSamples: 50 })
    assert.strictEqual(noise.epsilon, 2)
    assert.closeTo(noise.sigma, gaussianSigma(2, 1e-5, PATTERN_SENSITIVITY), 1e-12)
    const one = composedEpsilon(noise.sigma, PATTERN_SENSITIVITY, 1, 1e-5)
    const hundred = composedEpsilon(noise.sigma, PATTERN_SENSITIVITY, 100, 1e-5)
    assert.strictEqual(composedEpsilon(noise.sigma, PATTERN_SENSITIVITY, 0, 1e-5), 0)
    // Composition grows about with the square root of the releases while rho is small, never past linear.
    assert.isAbove(hundred, 5 * one)
    assert.isBelow(hundred, 100 * one)
  })
})

describe("noiseFloor", () => {
  it("is a cosine that privatized patterns rarely reach with unrelated vectors, and 0 without noise", () => {
    const random = seededRandom(11)
    const direction = () => unit(Array.from({ length: EMBEDDING_DIMENSIONS }, () => gaussian(random)))!
    const noise = patternNoise({ epsilon: 8, delta: 1e-5, maxSamples: 50 })
    const floor = noiseFloor(noise, EMBEDDING_DIMENSIONS)
    let above = 0
    let draws = 0
    for (let p = 0; p < 40; p++) {
      const pattern: SharedPattern = {
        id: `p${p}` as PatternId,
        embedding: direction(),
        successRate: 0.9,
        sampleCount: 10,
        context: {}
      }
      const released = privatizePattern(pattern, noise, random)
      for (let i = 0; i < 250; i++, draws++) if (cosine(released.embedding, direction()) > floor) above++
    }
    assert.isAtMost(above / draws, 1e-3)
    // At epsilon 8 on 384 dimensions one release keeps less of its own direction than the floor.
    assert.isAbove(floor, 1 / Math.sqrt(1 + noise.sigma * noise.sigma * EMBEDDING_DIMENSIONS))
    assert.strictEqual(noiseFloor({ ...noise, sigma: 0 }, EMBEDDING_DIMENSIONS), 0)
  })
})
