/**
 * Optional differential privacy for pattern uploads: the Gaussian mechanism on what one pattern
 * releases (its direction, success rate and bounded sample count), calibrated exactly (the
 * analytic Gaussian mechanism of Balle and Wang, 2018) from a target (epsilon, delta), and the
 * privacy spent over many releases accounted with zero-concentrated DP. Everything after the
 * noise (renormalizing, clamping) is post-processing and spends nothing.
 */
import type { SharedPattern } from "@omega/protocol"
import { gaussian, norm } from "../internal/vectors.ts"

/**
 * L2 sensitivity of one released pattern: the embedding is clipped to norm 1 (two embeddings
 * differ by at most 2), the success rate and the sample count scaled by its bound each lie in
 * [0, 1]: sqrt(2^2 + 1 + 1).
 */
export const PATTERN_SENSITIVITY = Math.sqrt(6)

/** Noise added to every released pattern, with the guarantee it buys. */
export interface PatternNoise {
  /** Standard deviation of the Gaussian noise on every released coordinate. */
  readonly sigma: number
  /** Sample counts are clipped to this before noise (it scales their sensitivity). */
  readonly maxSamples: number
  /** The guarantee of one release. */
  readonly epsilon: number
  readonly delta: number
}

/** The noise that makes one pattern release (epsilon, delta)-DP. */
export const patternNoise = (options: {
  readonly epsilon: number
  readonly delta: number
  readonly maxSamples: number
}): PatternNoise => ({
  sigma: gaussianSigma(options.epsilon, options.delta, PATTERN_SENSITIVITY),
  maxSamples: options.maxSamples,
  epsilon: options.epsilon,
  delta: options.delta
})

/** The pattern with Gaussian noise on its direction, success rate and clipped sample count. */
export const privatizePattern = <P extends SharedPattern>(pattern: P, noise: PatternNoise, random: () => number): P => {
  const e = pattern.embedding
  const clip = Math.max(1, norm(e))
  const noisy = new Float32Array(e.length)
  let squared = 0
  for (let i = 0; i < e.length; i++) {
    noisy[i] = e[i]! / clip + noise.sigma * gaussian(random)
    squared += noisy[i]! * noisy[i]!
  }
  // Renormalizing is post-processing; an all-zero draw (probability 0) would keep the clipped input.
  if (squared > 0) { for (let i = 0; i < noisy.length; i++) noisy[i]! /= Math.sqrt(squared) }
  const successRate = clamp01(clamp01(pattern.successRate) + noise.sigma * gaussian(random))
  const samples = clamp01(Math.min(pattern.sampleCount, noise.maxSamples) / noise.maxSamples) +
    noise.sigma * gaussian(random)
  return {
    ...pattern,
    embedding: squared > 0 ? noisy : Float32Array.from(e, (x) => x / clip),
    successRate,
    sampleCount: clamp01(samples) * noise.maxSamples
  }
}

/**
 * Cosine between a privatized (renormalized) pattern and an unrelated unit vector that the noise
 * alone exceeds only about once in 30,000 draws (4 standard deviations). Decoding a privatized
 * pattern against the catalog must ignore similarities below it: they are what the noise makes.
 */
export const noiseFloor = (noise: PatternNoise, dimensions: number): number =>
  (4 * noise.sigma) / Math.sqrt(1 + noise.sigma * noise.sigma * dimensions)

/**
 * Smallest sigma for which the Gaussian mechanism with L2 sensitivity `sensitivity` is
 * (epsilon, delta)-DP, from the exact condition
 * delta >= Phi(s/2sigma - epsilon sigma/s) - e^epsilon Phi(-s/2sigma - epsilon sigma/s).
 */
export const gaussianSigma = (epsilon: number, delta: number, sensitivity: number): number => {
  if (!(epsilon > 0) || !(delta > 0 && delta < 1) || !(sensitivity > 0)) {
    throw new RangeError(`need epsilon > 0, 0 < delta < 1, sensitivity > 0; got ${epsilon}, ${delta}, ${sensitivity}`)
  }
  let lo = 1e-6 * sensitivity
  let hi = sensitivity
  while (gaussianDelta(epsilon, hi, sensitivity) > delta) hi *= 2
  for (let i = 0; i < 200 && hi - lo > 1e-9 * hi; i++) {
    const mid = (lo + hi) / 2
    if (gaussianDelta(epsilon, mid, sensitivity) > delta) lo = mid
    else hi = mid
  }
  return hi
}

/** The delta of the Gaussian mechanism with this sigma at this epsilon (the exact curve). */
export const gaussianDelta = (epsilon: number, sigma: number, sensitivity: number): number => {
  const a = sensitivity / (2 * sigma)
  const b = (epsilon * sigma) / sensitivity
  return Math.max(0, normalCdf(a - b) - Math.exp(epsilon) * normalCdf(-a - b))
}

/**
 * Epsilon (at `delta`) spent by `releases` Gaussian releases with this noise, by zero-concentrated
 * DP: each is rho = s^2 / (2 sigma^2)-zCDP, rho adds up, and rho-zCDP implies
 * (rho + 2 sqrt(rho ln(1/delta)), delta)-DP.
 */
export const composedEpsilon = (sigma: number, sensitivity: number, releases: number, delta: number): number => {
  if (releases <= 0) return 0
  const rho = (releases * sensitivity * sensitivity) / (2 * sigma * sigma)
  return rho + 2 * Math.sqrt(rho * Math.log(1 / delta))
}

const clamp01 = (x: number) => Math.min(1, Math.max(0, x))

/** Standard normal CDF with small relative error far into the tails (erfc of Numerical Recipes, < 1.2e-7). */
export const normalCdf = (x: number): number => 0.5 * erfc(-x / Math.SQRT2)

const erfc = (x: number): number => {
  const z = Math.abs(x)
  const t = 1 / (1 + 0.5 * z)
  const r = t * Math.exp(
    -z * z - 1.26551223 +
      t * (1.00002368 +
          t * (0.37409196 +
              t * (0.09678418 +
                  t *
                    (-0.18628806 +
                      t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
  )
  return x >= 0 ? r : 2 - r
}
