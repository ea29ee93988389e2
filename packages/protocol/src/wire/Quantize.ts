/**
 * Embedding quantization for the wire. A fixed, seeded orthogonal rotation (two rounds
 * of random signs, a random permutation and a 128-point Walsh-Hadamard transform mixed
 * across the three 128-wide blocks) spreads every vector's energy evenly over its 384
 * coordinates, so each rotated coordinate looks Gaussian whatever the embedder. The first
 * `dimensions` rotated coordinates are kept with `bits` each, on Lloyd-Max levels for a
 * Gaussian scaled by the vector's own spread. Decoding places the levels back, rotates
 * back and normalizes: the decoded vector is a unit vector pointing close to the original.
 *
 * Codes describe themselves (a header byte gives scheme and bit width, the length gives
 * the kept dimensions), so the precision is purely an encoder setting: every decoder reads
 * every preset.
 */
import { Schema, SchemaTransformation } from "effect"
import { EMBEDDING_DIMENSIONS } from "../Constants.ts"
import { Embedding } from "../Embedding.ts"
import { seededRandom } from "./internal/random.ts"

/** How many rotated coordinates a code keeps and how many bits each gets. */
export interface QuantizerConfig {
  /** Rotated coordinates kept: a multiple of 8 in 8..384. */
  readonly dimensions: number
  readonly bits: 1 | 2 | 3 | 4
}

/**
 * Measured trade-offs (bytes per code include the header byte; recall@10 on 1,000
 * clustered / hashing-embedder items / hashing-embedder pattern centroids, see bench.ts):
 * compact 17 B (0.54 / 0.70 / 0.60), balanced 49 B (0.68 / 0.84 / 0.75),
 * precise 97 B (0.80 / 0.92 / 0.85), fine 193 B (0.93 / 0.98 / 0.96).
 */
export const QuantizerPresets = {
  /** Fits 100 global patterns + 20 trends in 5 KB and 20-pattern uploads in 1 KB. */
  compact: { dimensions: 128, bits: 1 },
  balanced: { dimensions: 384, bits: 1 },
  precise: { dimensions: 384, bits: 2 },
  /** The smallest preset with recall@10 >= 0.9 on every measured data set. */
  fine: { dimensions: 384, bits: 4 }
} as const satisfies Record<string, QuantizerConfig>

/** Scheme 1: the rotation and levels below. A new rotation or level table takes a new scheme number. */
const SCHEME = 1

/** Bytes of a code produced with `config`, header included. */
export const quantizedSize = (config: QuantizerConfig): number => 1 + (config.dimensions * config.bits) / 8

/**
 * Expected cosine between a vector and its decoded code: the share of the vector the kept
 * dimensions carry times what the Lloyd-Max levels keep of them. Similarities measured against
 * decoded vectors shrink by about this factor (compact ~0.46, fine ~0.995); divide by it to
 * compare them with full-precision similarities.
 */
export const expectedFidelity = (config: QuantizerConfig): number =>
  Math.sqrt(config.dimensions / EMBEDDING_DIMENSIONS) * Math.sqrt(1 - DISTORTION[config.bits - 1]!)

/** Why `config` is not a valid quantizer setting, or undefined when it is. */
export const configProblem = (config: QuantizerConfig): string | undefined =>
  !Number.isInteger(config.dimensions) || config.dimensions < 8 || config.dimensions > EMBEDDING_DIMENSIONS ||
    config.dimensions % 8 !== 0
    ? `dimensions must be a multiple of 8 in 8..${EMBEDDING_DIMENSIONS}, got ${config.dimensions}`
    : !Number.isInteger(config.bits) || config.bits < 1 || config.bits > 4
    ? `bits must be 1, 2, 3 or 4, got ${config.bits}`
    : undefined

/** Why `code` is not a quantized embedding, or undefined when it is one. */
export const codeProblem = (code: Uint8Array): string | undefined => {
  if (code.length < 2) return `a quantized embedding has a header and at least one code byte, got ${code.length} bytes`
  const header = code[0]!
  if (header >> 4 !== SCHEME) return `unknown quantization scheme ${header >> 4}`
  const bits = (header & 0x0f) + 1
  if (bits > 4) return `unsupported width of ${bits} bits per dimension`
  const bytes = code.length - 1
  const dimensions = (bytes * 8) / bits
  return Number.isInteger(dimensions) && dimensions % 8 === 0 && dimensions <= EMBEDDING_DIMENSIONS
    ? undefined
    : `${bytes} code bytes at ${bits} bits do not hold a multiple of 8 dimensions up to ${EMBEDDING_DIMENSIONS}`
}

/** Quantizes a 384-d vector (of any norm) to a self-describing code. */
export const quantize = (v: Float32Array, config: QuantizerConfig = QuantizerPresets.compact): Uint8Array => {
  checkInput(v, config)
  return quantizeRotated(rotate(v), config)
}

const checkInput = (v: Float32Array, config: QuantizerConfig) => {
  const problem = configProblem(config)
  if (problem !== undefined) throw new RangeError(problem)
  if (v.length !== EMBEDDING_DIMENSIONS) {
    throw new RangeError(`expected ${EMBEDDING_DIMENSIONS} dimensions, got ${v.length}`)
  }
}

/** The code of a vector already in the rotated basis. */
const quantizeRotated = (y: ArrayLike<number>, config: QuantizerConfig): Uint8Array => {
  const { bits, dimensions } = config
  let energy = 0
  for (let i = 0; i < dimensions; i++) energy += y[i]! * y[i]!
  const sigma = Math.sqrt(energy / dimensions)
  // A zero (or non-finite) vector still gets a valid code: every coordinate on the smallest positive level.
  const scale = sigma > 0 && Number.isFinite(sigma) ? 1 / sigma : 0
  const thresholds = THRESHOLDS[bits - 1]!
  const middle = thresholds.length >> 1
  const code = new Uint8Array(quantizedSize(config))
  code[0] = (SCHEME << 4) | (bits - 1)
  for (let i = 0; i < dimensions; i++) {
    const z = y[i]! * scale
    let level = 0
    if (scale === 0) level = middle + 1
    else while (level < thresholds.length && z > thresholds[level]!) level++
    const at = i * bits
    // Codes are packed least significant bit first; a 3-bit code may straddle two bytes.
    code[1 + (at >> 3)]! |= (level << (at & 7)) & 0xff
    if ((at & 7) + bits > 8) code[2 + (at >> 3)]! |= level >> (8 - (at & 7))
  }
  return code
}

/** Decodes a code from `quantize` to a unit Float32Array; throws RangeError on a malformed code. */
export const dequantize = (code: Uint8Array): Float32Array => {
  placeLevels(code, levelScratch)
  return toUnitFloat32(unrotate(levelScratch))
}

/**
 * Decodes a code into the quantizer's rotated basis: the unit vector of its levels, without the
 * inverse rotation. The rotation is orthogonal, so cosines and weighted sums there equal those of
 * the decoded vectors; a shard aggregates uploads in this basis and rotates back only what it
 * publishes (`fromRotatedBasis`). About 15x cheaper than `dequantize`.
 */
export const dequantizeRotated = (code: Uint8Array): Float32Array => {
  // A header with width 0 (bits - 1) is one bit per coordinate, the default for patterns: every
  // level has the same size, so the unit vector is +-1/sqrt(dimensions), the sign the bit.
  if (code[0] === SCHEME << 4 && codeProblem(code) === undefined) {
    const out = slabVector()
    const bytes = code.length - 1
    const c = 1 / Math.sqrt(bytes * 8)
    // A byte at a time (bit 0 first): this runs for every pattern a shard receives.
    for (let b = 0, o = 0; b < bytes; b++, o += 8) {
      const byte = code[1 + b]!
      out[o] = byte & 1 ? c : -c
      out[o + 1] = byte & 2 ? c : -c
      out[o + 2] = byte & 4 ? c : -c
      out[o + 3] = byte & 8 ? c : -c
      out[o + 4] = byte & 16 ? c : -c
      out[o + 5] = byte & 32 ? c : -c
      out[o + 6] = byte & 64 ? c : -c
      out[o + 7] = byte & 128 ? c : -c
    }
    return out
  }
  placeLevels(code, levelScratch)
  return toUnitFloat32(levelScratch, slabVector())
}

/**
 * Vectors `dequantizeRotated` decodes come from shared slabs. V8 allocates a fresh 384-float
 * typed array's memory outside its heap, which costs ~2.5 us (a shard decodes ~15 per upload, and
 * that memory also drives when the heap is collected); a view of a slab costs ~0.1 us. A vector
 * still referenced keeps its whole slab alive, so this is for vectors a shard folds in and drops,
 * not for ones kept for long.
 */
const SLAB_VECTORS = 32
let slab = new Float32Array(0)
let slabUsed = 0
const slabVector = (): Float32Array => {
  if (slabUsed === slab.length) {
    slab = new Float32Array(SLAB_VECTORS * EMBEDDING_DIMENSIONS)
    slabUsed = 0
  }
  slabUsed += EMBEDDING_DIMENSIONS
  return slab.subarray(slabUsed - EMBEDDING_DIMENSIONS, slabUsed)
}

/** A 384-d vector in the quantizer's rotated basis (same length, same cosines). */
export const toRotatedBasis = (v: Float32Array): Float32Array => {
  if (v.length !== EMBEDDING_DIMENSIONS) {
    throw new RangeError(`expected ${EMBEDDING_DIMENSIONS} dimensions, got ${v.length}`)
  }
  return Float32Array.from(rotate(v))
}

/** Back from the rotated basis to the embedding space, as a unit vector (zero stays zero). */
export const fromRotatedBasis = (y: Float32Array): Float32Array => {
  if (y.length !== EMBEDDING_DIMENSIONS) {
    throw new RangeError(`expected ${EMBEDDING_DIMENSIONS} dimensions, got ${y.length}`)
  }
  levelScratch.set(y)
  return toUnitFloat32(unrotate(levelScratch))
}

/** Writes a code's levels into `y` (zeros beyond its dimensions). */
const placeLevels = (code: Uint8Array, y: Float64Array): void => {
  const problem = codeProblem(code)
  if (problem !== undefined) throw new RangeError(problem)
  const bits = (code[0]! & 0x0f) + 1
  const dimensions = ((code.length - 1) * 8) / bits
  const levels = LEVELS[bits - 1]!
  const mask = (1 << bits) - 1
  y.fill(0)
  for (let i = 0; i < dimensions; i++) {
    const at = i * bits
    let level = code[1 + (at >> 3)]! >> (at & 7)
    if ((at & 7) + bits > 8) level |= code[2 + (at >> 3)]! << (8 - (at & 7))
    y[i] = levels[level & mask]!
  }
}

/** `x` scaled to unit length, written to `out` (a fresh, zeroed vector; zero stays zero). */
const toUnitFloat32 = (x: Float64Array, out: Float32Array = new Float32Array(EMBEDDING_DIMENSIONS)): Float32Array => {
  let norm = 0
  for (let i = 0; i < x.length; i++) norm += x[i]! * x[i]!
  if (norm === 0) return out
  const inv = 1 / Math.sqrt(norm)
  for (let i = 0; i < x.length; i++) out[i] = x[i]! * inv
  return out
}

/** Which basis decoded embeddings are in: the embedding space, or the quantizer's rotated basis. */
export type EmbeddingBasis = "original" | "rotated"

/**
 * An embedding that travels as a quantized code: encodes a Float32Array to its code with
 * `config`, decodes any valid code (whatever its preset) back to a unit Embedding.
 */
export const QuantizedEmbedding = (
  config: QuantizerConfig = QuantizerPresets.compact,
  basis: EmbeddingBasis = "original"
) => {
  const problem = configProblem(config)
  if (problem !== undefined) throw new RangeError(problem)
  // Embeddings are never mutated once built (the brain makes a new array for every change), so a
  // vector sent again (an outbox replay, an unchanged global pattern) reuses its code.
  const codes = new WeakMap<Float32Array, Uint8Array>()
  const quantizeIn = basis === "original" ? quantize : (v: Float32Array, c: QuantizerConfig) => {
    checkInput(v, c)
    return quantizeRotated(v, c)
  }
  const encode = (v: Float32Array): Uint8Array => {
    let code = codes.get(v)
    if (code === undefined) codes.set(v, code = quantizeIn(v, config))
    return code
  }
  return Schema.Uint8Array.check(Schema.makeFilter((code: Uint8Array) => codeProblem(code) ?? true)).pipe(
    Schema.decodeTo(
      Embedding,
      SchemaTransformation.transform<Float32Array, Uint8Array>({
        decode: basis === "original" ? dequantize : dequantizeRotated,
        encode
      })
    )
  )
}

// Lloyd-Max reconstruction levels for a unit Gaussian (Max, 1960), 1 to 4 bits, ascending.
const positive: ReadonlyArray<ReadonlyArray<number>> = [
  [0.7979],
  [0.4528, 1.5104],
  [0.2451, 0.756, 1.344, 2.152],
  [0.1284, 0.3881, 0.6568, 0.9424, 1.2562, 1.6181, 2.069, 2.7326]
]
// Mean squared error of those levels on a unit Gaussian.
const DISTORTION = [0.3634, 0.1175, 0.03454, 0.009497]
const LEVELS: ReadonlyArray<Float64Array> = positive.map((p) =>
  Float64Array.from([...p.map((l) => -l).reverse(), ...p])
)
// Decision thresholds sit halfway between neighbouring levels.
const THRESHOLDS: ReadonlyArray<Float64Array> = LEVELS.map((levels) =>
  Float64Array.from({ length: levels.length - 1 }, (_, i) => (levels[i]! + levels[i + 1]!) / 2)
)

const BLOCK = 128
const ROUNDS = 2
const ROTATION_SEED = 0x0e9a_2024

const random = seededRandom(ROTATION_SEED)
const SIGNS = Array.from(
  { length: ROUNDS },
  () => Float64Array.from({ length: EMBEDDING_DIMENSIONS }, () => (random() < 0.5 ? -1 : 1))
)
const PERMUTATIONS = Array.from({ length: ROUNDS }, () => {
  const p = Int32Array.from({ length: EMBEDDING_DIMENSIONS }, (_, i) => i)
  for (let i = p.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    const t = p[i]!
    p[i] = p[j]!
    p[j] = t
  }
  return p
})
// Orthonormal 3-point DCT-II mixes the three Hadamard blocks; scaled by the Hadamard normalization.
const H = 1 / Math.sqrt(BLOCK)
const MIX = [
  [1 / Math.sqrt(3), 1 / Math.sqrt(3), 1 / Math.sqrt(3)],
  [1 / Math.sqrt(2), 0, -1 / Math.sqrt(2)],
  [1 / Math.sqrt(6), -2 / Math.sqrt(6), 1 / Math.sqrt(6)]
].map((row) => row.map((m) => m * H))
const [m00, m01, m02] = MIX[0]!
const [m10, m11, m12] = MIX[1]!
const [m20, m21, m22] = MIX[2]!

/** Unnormalized 128-point Walsh-Hadamard transform in place; the first two stages fused for speed. */
const hadamard = (x: Float64Array, offset: number) => {
  for (let i = offset; i < offset + BLOCK; i += 4) {
    const a = x[i]! + x[i + 1]!
    const b = x[i]! - x[i + 1]!
    const c = x[i + 2]! + x[i + 3]!
    const d = x[i + 2]! - x[i + 3]!
    x[i] = a + c
    x[i + 1] = b + d
    x[i + 2] = a - c
    x[i + 3] = b - d
  }
  for (let h = 4; h < BLOCK; h <<= 1) {
    for (let i = offset; i < offset + BLOCK; i += h << 1) {
      for (let j = i; j < i + h; j++) {
        const a = x[j]!
        const b = x[j + h]!
        x[j] = a + b
        x[j + h] = a - b
      }
    }
  }
}

// Scratch space for the transforms: JavaScript is single-threaded and neither transform re-enters.
const scratch = [new Float64Array(EMBEDDING_DIMENSIONS), new Float64Array(EMBEDDING_DIMENSIONS)] as const

const mixBlocks = (y: Float64Array, transpose: boolean) => {
  const [a0, a1, a2, b0, b1, b2, c0, c1, c2] = transpose ?
    [m00!, m10!, m20!, m01!, m11!, m21!, m02!, m12!, m22!] :
    [m00!, m01!, m02!, m10!, m11!, m12!, m20!, m21!, m22!]
  for (let j = 0; j < BLOCK; j++) {
    const a = y[j]!
    const b = y[BLOCK + j]!
    const c = y[2 * BLOCK + j]!
    y[j] = a0 * a + a1 * b + a2 * c
    y[BLOCK + j] = b0 * a + b1 * b + b2 * c
    y[2 * BLOCK + j] = c0 * a + c1 * b + c2 * c
  }
}

/** The orthogonal rotation; the result lives in scratch space until the next call. */
const rotate = (v: Float32Array): Float64Array => {
  let x: ArrayLike<number> = v
  for (let round = 0; round < ROUNDS; round++) {
    const y = scratch[round & 1]!
    const p = PERMUTATIONS[round]!
    const s = SIGNS[round]!
    for (let i = 0; i < EMBEDDING_DIMENSIONS; i++) y[p[i]!] = x[i]! * s[i]!
    hadamard(y, 0)
    hadamard(y, BLOCK)
    hadamard(y, 2 * BLOCK)
    mixBlocks(y, false)
    x = y
  }
  return x as Float64Array
}

// Dequantizing decodes thousands of codes a second on a shard: it reuses these instead of allocating.
const levelScratch = new Float64Array(EMBEDDING_DIMENSIONS)
const unrotated = new Float64Array(EMBEDDING_DIMENSIONS)

/** The inverse rotation, in place on `y` and scratch space; the result lives in scratch space until the next call. */
const unrotate = (y0: Float64Array): Float64Array => {
  let y = y0
  for (let round = ROUNDS - 1; round >= 0; round--) {
    mixBlocks(y, true)
    hadamard(y, 0)
    hadamard(y, BLOCK)
    hadamard(y, 2 * BLOCK)
    const x = round === 0 ? unrotated : scratch[round & 1]!
    const p = PERMUTATIONS[round]!
    const s = SIGNS[round]!
    for (let i = 0; i < EMBEDDING_DIMENSIONS; i++) x[i] = y[p[i]!]! * s[i]!
    y = x
  }
  return y
}
