import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { EMBEDDING_DIMENSIONS } from "../Constants.ts"
import {
  codeProblem,
  configProblem,
  dequantize,
  dequantizeRotated,
  expectedFidelity,
  fromRotatedBasis,
  quantize,
  QuantizedEmbedding,
  quantizedSize,
  type QuantizerConfig,
  QuantizerPresets,
  toRotatedBasis
} from "./Quantize.ts"
import { recallAtK } from "./Recall.ts"
import { clusteredVectors, hashingItems, hashingPatterns } from "./SyntheticData.ts"

const cosine = (a: Float32Array, b: Float32Array) => {
  let dot = 0
  let na = 0
  let nb = 0
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!
    na += a[i]! * a[i]!
    nb += b[i]! * b[i]!
  }
  return dot / Math.sqrt(na * nb)
}

const hex = (code: Uint8Array) => Array.from(code.subarray(0, 12), (b) => b.toString(16).padStart(2, "0")).join("")

const recall = (vectors: Array<Float32Array>, config: QuantizerConfig) =>
  recallAtK(vectors, vectors.map((v) => dequantize(quantize(v, config))), 10, 200)

const norm = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0))

const allConfigs: Array<QuantizerConfig> = [8, 128, 200, 384].flatMap((dimensions) =>
  ([1, 2, 3, 4] as const).map((bits) => ({ dimensions, bits }))
)

describe("quantize", () => {
  const vectors = clusteredVectors(50, 5)

  it("produces self-describing codes of the advertised size that decode to unit vectors", () => {
    for (const config of allConfigs) {
      const code = quantize(vectors[0]!, config)
      assert.strictEqual(code.length, quantizedSize(config))
      assert.isUndefined(codeProblem(code))
      const decoded = dequantize(code)
      assert.strictEqual(decoded.length, EMBEDDING_DIMENSIONS)
      assert.closeTo(norm(decoded), 1, 1e-5)
    }
  })

  it("is deterministic and keeps more of the vector with more dimensions and bits", () => {
    const fidelity = (config: QuantizerConfig) =>
      vectors.reduce((s, v) => s + cosine(v, dequantize(quantize(v, config))), 0) / vectors.length
    assert.deepStrictEqual(quantize(vectors[3]!), quantize(vectors[3]!))
    const compact = fidelity(QuantizerPresets.compact)
    const balanced = fidelity(QuantizerPresets.balanced)
    const precise = fidelity(QuantizerPresets.precise)
    const fine = fidelity(QuantizerPresets.fine)
    assert.isAbove(compact, 0.4)
    assert.isAbove(balanced, compact)
    assert.isAbove(precise, balanced)
    assert.isAbove(fine, 0.99)
    for (const [config, measured] of [[QuantizerPresets.compact, compact], [QuantizerPresets.fine, fine]] as const) {
      assert.closeTo(expectedFidelity(config), measured, 0.03)
    }
  })

  it("keeps the format stable: a fixed vector has a fixed code", () => {
    const v = Float32Array.from({ length: EMBEDDING_DIMENSIONS }, (_, i) => Math.sin(i * 0.37) + (i % 7) / 10)
    // A change here breaks every TV in the field: it needs a new scheme number instead.
    assert.strictEqual(hex(quantize(v, QuantizerPresets.compact)), GOLDEN_COMPACT)
    assert.strictEqual(hex(quantize(v, { dimensions: 64, bits: 3 })), GOLDEN_3BIT)
  })

  it("is scale-invariant and gives a zero vector a valid code", () => {
    const v = vectors[1]!
    assert.deepStrictEqual(quantize(v), quantize(v.map((x) => x * 7.5)))
    const zero = dequantize(quantize(new Float32Array(EMBEDDING_DIMENSIONS)))
    assert.closeTo(norm(zero), 1, 1e-5)
  })

  it("rejects bad settings and bad codes", () => {
    for (const bad of [{ dimensions: 0, bits: 1 }, { dimensions: 100, bits: 1 }, { dimensions: 392, bits: 2 }]) {
      assert.isString(configProblem(bad as QuantizerConfig))
      assert.throws(() => quantize(vectors[0]!, bad as QuantizerConfig), RangeError)
    }
    assert.isString(configProblem({ dimensions: 128, bits: 5 as 1 }))
    assert.throws(() => quantize(new Float32Array(12)), RangeError)
    const code = quantize(vectors[0]!)
    const cases: Array<readonly [Uint8Array, string]> = [
      [new Uint8Array(0), "header"],
      [Uint8Array.of(code[0]!), "header"],
      [Uint8Array.from([0x20, ...code.subarray(1)]), "scheme"],
      [Uint8Array.from([0x14, ...code.subarray(1)]), "bits"],
      [Uint8Array.of(0x12, 1, 2, 3, 4), "multiple of 8"],
      [new Uint8Array(1 + 16), "scheme"],
      [Uint8Array.from([0x10, ...new Uint8Array(49)]), "multiple of 8"]
    ]
    for (const [bad, expected] of cases) {
      assert.include(codeProblem(bad) ?? "", expected)
      assert.throws(() => dequantize(bad), RangeError)
    }
  })

  it.effect("QuantizedEmbedding decodes any preset and fails on a malformed code", () =>
    Effect.gen(function*() {
      const schema = QuantizedEmbedding(QuantizerPresets.compact)
      const fineCode = quantize(vectors[2]!, QuantizerPresets.fine)
      const decoded = yield* Schema.decodeUnknownEffect(schema)(fineCode)
      assert.isAbove(cosine(decoded, vectors[2]!), 0.99)
      const encoded = yield* Schema.encodeEffect(schema)(vectors[2]!)
      assert.strictEqual(encoded.length, quantizedSize(QuantizerPresets.compact))
      const error = yield* Effect.flip(Schema.decodeUnknownEffect(schema)(Uint8Array.of(0x12, 1, 2)))
      assert.include(error.message, "multiple of 8")
    }))
})

describe("recall@10 of decoded vectors (original query, decoded database)", () => {
  // 1,000 vectors, 200 queries: floors sit ~0.03 under the values bench.ts prints with 300 queries.
  const sets = {
    clustered: clusteredVectors(1_000, 1),
    hashingItems: hashingItems(1_000, 2),
    hashingPatterns: hashingPatterns(1_000, 3)
  }

  it("compact (17 B, the default for patterns) keeps about 0.55-0.70 of the true top 10", () => {
    assert.isAbove(recall(sets.clustered, QuantizerPresets.compact), 0.5)
    assert.isAbove(recall(sets.hashingItems, QuantizerPresets.compact), 0.65)
    assert.isAbove(recall(sets.hashingPatterns, QuantizerPresets.compact), 0.55)
  })

  it("fine (193 B) keeps at least 0.9 on every set", () => {
    for (const vectors of Object.values(sets)) assert.isAtLeast(recall(vectors, QuantizerPresets.fine), 0.9)
  })

  it("is 1 for exact vectors and near 0.01 for unrelated ones", () => {
    const vectors = sets.clustered.slice(0, 200)
    assert.strictEqual(recallAtK(vectors, vectors, 10), 1)
    assert.isBelow(recallAtK(vectors, clusteredVectors(200, 99), 10), 0.2)
  })

  it("the rotated basis: same cosines and sums as decoded vectors, and back again", () => {
    const vectors = clusteredVectors(40, 11, 4)
    for (const config of [QuantizerPresets.compact, QuantizerPresets.precise, { dimensions: 200, bits: 3 } as const]) {
      const codes = vectors.map((v) => quantize(v, config))
      const decoded = codes.map(dequantize)
      const rotated = codes.map(dequantizeRotated)
      for (let i = 1; i < codes.length; i++) {
        assert.closeTo(cosine(rotated[0]!, rotated[i]!), cosine(decoded[0]!, decoded[i]!), 1e-5)
        assert.closeTo(norm(rotated[i]!), 1, 1e-5)
      }
      // A weighted sum taken in the rotated basis and rotated back is the sum of the decoded vectors.
      const sum = new Float32Array(EMBEDDING_DIMENSIONS)
      const expected = new Float32Array(EMBEDDING_DIMENSIONS)
      rotated.forEach((r, i) => r.forEach((x, d) => (sum[d]! += (i + 1) * x)))
      decoded.forEach((v, i) => v.forEach((x, d) => (expected[d]! += (i + 1) * x)))
      assert.closeTo(cosine(fromRotatedBasis(sum), expected), 1, 1e-5)
    }
    const v = vectors[3]!
    assert.closeTo(cosine(fromRotatedBasis(toRotatedBasis(v)), v), 1, 1e-6)
    assert.closeTo(cosine(toRotatedBasis(v), dequantizeRotated(quantize(v, QuantizerPresets.fine))), 0.995, 0.01)
  })

  it("rotated-basis vectors share memory in slabs, yet each is its own: later decodes and writes leave it alone", () => {
    const vectors = clusteredVectors(100, 21, 8)
    const codes = vectors.map((v, i) => quantize(v, i % 2 === 0 ? QuantizerPresets.compact : QuantizerPresets.precise))
    const first = codes.map(dequantizeRotated)
    const copies = first.map((v) => Float32Array.from(v))
    assert.isTrue(first.every((v) => v.length === EMBEDDING_DIMENSIONS))
    // Decoding more (across several slabs) and scribbling on the new vectors changes none of the first.
    for (const v of codes.map(dequantizeRotated)) v.fill(7)
    first.forEach((v, i) => assert.deepStrictEqual(v, copies[i]))
    // Nor does writing to one of them touch its neighbours in the slab.
    first[10]!.fill(0)
    assert.deepStrictEqual(first[9], copies[9])
    assert.deepStrictEqual(first[11], copies[11])
  })

  it("a rotated-basis schema reads every preset and writes codes a default decoder reads", () => {
    const v = clusteredVectors(1, 5, 1)[0]!
    const rotatedSchema = QuantizedEmbedding(QuantizerPresets.precise, "rotated")
    const code = quantize(v, QuantizerPresets.compact)
    const inRotated = Schema.decodeUnknownSync(rotatedSchema)(code)
    assert.closeTo(cosine(inRotated, dequantizeRotated(code)), 1, 1e-6)
    const written = Schema.encodeSync(rotatedSchema)(toRotatedBasis(v))
    assert.strictEqual(written.length, quantizedSize(QuantizerPresets.precise))
    assert.closeTo(cosine(dequantize(written), dequantize(quantize(v, QuantizerPresets.precise))), 1, 1e-5)
  })
})

const GOLDEN_COMPACT = "101abd7b2228ce9de463e5f2"
const GOLDEN_3BIT = "12f2dc2555698be5cc52e124"
