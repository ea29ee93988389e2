/**
 * Wire benchmark: bytes per sync frame, recall@10 of quantized embeddings, encode/decode time.
 * Run `node packages/protocol/src/wire/bench.ts [--json]`; with --json the last line is one
 * JSON object (upload_p50_bytes, upload_p99_bytes, download_bytes, recall10, ...).
 *
 * recall10 is the default pattern preset's recall@10 (see Recall.ts: original query, decoded
 * database) on the worst of three seeded sets of 1,000 vectors; recall10_by_set has all three.
 * Uploads are 1,000 random deltas of 10-20 hashing-embedder patterns with UUID ids; the download
 * is 100 global patterns (UUID ids, the pessimistic case) and 20 trends.
 */
import { Effect } from "effect"
import { makeWireCodec } from "./Codec.ts"
import { defaultQuantization } from "./Frame.ts"
import { dequantize, quantize, quantizedSize, type QuantizerConfig, QuantizerPresets } from "./Quantize.ts"
import { recallAtK } from "./Recall.ts"
import {
  clusteredVectors,
  contentItems,
  deltaUpload,
  globalUpdate,
  hashingItems,
  hashingPatterns,
  seededRandom
} from "./SyntheticData.ts"

const json = process.argv.includes("--json")
const progress = (message: string) => process.stderr.write(`${message}\n`)

const VECTORS = 1_000
const QUERIES = 300
const sets = {
  clustered: clusteredVectors(VECTORS, 1),
  hashing_items: hashingItems(VECTORS, 2),
  hashing_patterns: hashingPatterns(VECTORS, 3)
}

const cosine = (a: Float32Array, b: Float32Array) => {
  let s = 0
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!
  return s
}

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!

/** Microseconds per call: the median of five timed runs of iterations / 5 calls, after a warm-up. */
const time = (iterations: number, run: () => void): number => {
  for (let i = 0; i < Math.min(50, iterations); i++) run()
  const per = Math.max(1, Math.floor(iterations / 5))
  const runs: Array<number> = []
  for (let r = 0; r < 5; r++) {
    const start = performance.now()
    for (let i = 0; i < per; i++) run()
    runs.push(((performance.now() - start) * 1000) / per)
  }
  return runs.sort((a, b) => a - b)[2]!
}

// 1. Quantizer trade-off: bytes per embedding against recall@10.
const configs: Array<readonly [string, QuantizerConfig]> = [
  ["compact", QuantizerPresets.compact],
  ["160x1", { dimensions: 160, bits: 1 }],
  ["192x1", { dimensions: 192, bits: 1 }],
  ["balanced", QuantizerPresets.balanced],
  ["precise", QuantizerPresets.precise],
  ["384x3", { dimensions: 384, bits: 3 }],
  ["fine", QuantizerPresets.fine]
]
const quantizers = configs.map(([name, config]) => {
  progress(`recall@10 for ${name} ...`)
  const recall: Record<string, number> = {}
  let fidelity = 0
  for (const [set, vectors] of Object.entries(sets)) {
    const decoded = vectors.map((v) => dequantize(quantize(v, config)))
    recall[set] = recallAtK(vectors, decoded, 10, QUERIES)
    for (let i = 0; i < vectors.length; i++) fidelity += cosine(vectors[i]!, decoded[i]!)
  }
  const sample = sets.hashing_patterns[0]!
  const code = quantize(sample, config)
  return {
    name,
    dimensions: config.dimensions,
    bits: config.bits,
    bytes: quantizedSize(config),
    recall,
    cosine: fidelity / (VECTORS * 3),
    quantize_us: time(2_000, () => quantize(sample, config)),
    dequantize_us: time(2_000, () => dequantize(code))
  }
})

// 2. Frame sizes with the default codec.
progress("frame sizes ...")
const codec = makeWireCodec()
const random = seededRandom(7)
const uploads: Array<number> = []
const uploadByCount = new Map<number, Array<number>>()
for (let i = 0; i < 1_000; i++) {
  const count = 10 + Math.floor(random() * 11)
  const start = Math.floor(random() * (VECTORS - count))
  const size = codec.encode(deltaUpload(random, sets.hashing_patterns.slice(start, start + count))).length
  uploads.push(size)
  uploadByCount.set(count, [...(uploadByCount.get(count) ?? []), size])
}
uploads.sort((a, b) => a - b)
const upload15 = deltaUpload(seededRandom(11), sets.hashing_patterns.slice(0, 15))
const download = globalUpdate(seededRandom(12), sets.hashing_patterns.slice(0, 100), 20)
const downloadBytes = codec.encode(download)
const content = { _tag: "ContentUpdate" as const, items: contentItems(20, 13) }
const contentBytes = codec.encode(content)
const upload15Bytes = codec.encode(upload15)
const uncompressed = makeWireCodec({ compression: "never" })

// 3. Time per frame (schema checks, quantization, layout, deflate).
progress("encode/decode time ...")
const decodeSync = (bytes: Uint8Array) => Effect.runSync(codec.decode(bytes))
// A shard decodes uploads into the quantizer's rotated basis (no inverse rotation), as Ingestion does.
const shardCodec = makeWireCodec({ basis: "rotated" })
const timing = {
  upload_encode_us: time(3_000, () => codec.encode(upload15)),
  upload_decode_us: time(3_000, () => decodeSync(upload15Bytes)),
  upload_decode_shard_us: time(3_000, () => Effect.runSync(shardCodec.decode(upload15Bytes))),
  download_encode_us: time(60, () => codec.encode(download)),
  download_decode_us: time(60, () => decodeSync(downloadBytes))
}

const defaultRecall = quantizers.find((q) => q.name === "compact")!.recall
const result = {
  upload_p50_bytes: percentile(uploads, 50),
  upload_p99_bytes: percentile(uploads, 99),
  upload_max_bytes: uploads[uploads.length - 1]!,
  upload_15_bytes: upload15Bytes.length,
  download_bytes: downloadBytes.length,
  download_uncompressed_bytes: uncompressed.encode(download).length,
  content_update_20_bytes: contentBytes.length,
  recall10: Math.min(...Object.values(defaultRecall)),
  recall10_by_set: defaultRecall,
  pattern_quantizer: defaultQuantization.patterns,
  content_quantizer: defaultQuantization.content,
  ...timing,
  quantizers
}

const fixed = (x: number, digits = 3) => x.toFixed(digits)
const pad = (cells: ReadonlyArray<string | number>, widths: ReadonlyArray<number>) =>
  cells.map((c, i) => String(c).padStart(widths[i]!)).join("  ")

console.log(
  `Quantized embeddings (${VECTORS} vectors, ${QUERIES} queries; recall@10: original query, decoded database)`
)
const qWidths = [9, 5, 5, 6, 10, 8, 9, 8, 11, 13]
console.log(
  pad(
    ["preset", "dims", "bits", "bytes", "clustered", "hashing", "patterns", "cosine", "quantize", "dequantize"],
    qWidths
  )
)
for (const q of quantizers) {
  console.log(pad([
    q.name,
    q.dimensions,
    q.bits,
    q.bytes,
    fixed(q.recall["clustered"]!),
    fixed(q.recall["hashing_items"]!),
    fixed(q.recall["hashing_patterns"]!),
    fixed(q.cosine),
    `${fixed(q.quantize_us, 1)} us`,
    `${fixed(q.dequantize_us, 1)} us`
  ], qWidths))
}
console.log()
console.log("Frames (default codec: patterns compact, content precise; deflate when smaller)")
const fWidths = [34, 8]
for (
  const [label, value] of [
    ["upload p50, 10-20 patterns", `${result.upload_p50_bytes} B`],
    ["upload p99, 10-20 patterns", `${result.upload_p99_bytes} B`],
    ["upload max, 10-20 patterns", `${result.upload_max_bytes} B`],
    ...[10, 15, 20].map((n) => {
      const sizes = (uploadByCount.get(n) ?? [0]).sort((a, b) => a - b)
      return [`upload median, ${n} patterns`, `${percentile(sizes, 50)} B`] as const
    }),
    ["download, 100 global + 20 trends", `${result.download_bytes} B`],
    ["download without deflate", `${result.download_uncompressed_bytes} B`],
    ["content update, 20 items", `${result.content_update_20_bytes} B`],
    ["encode upload (15 patterns)", `${fixed(timing.upload_encode_us, 0)} us`],
    ["decode upload (15 patterns)", `${fixed(timing.upload_decode_us, 0)} us`],
    ["decode upload on a shard (rotated basis)", `${fixed(timing.upload_decode_shard_us, 0)} us`],
    ["encode download", `${fixed(timing.download_encode_us, 0)} us`],
    ["decode download", `${fixed(timing.download_decode_us, 0)} us`]
  ] as const
) console.log(pad([label, value], fWidths))
if (json) console.log(JSON.stringify(result))
