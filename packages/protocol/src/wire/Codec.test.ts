import { assert, describe, it } from "@effect/vitest"
import { Effect, Result, Schema } from "effect"
import { deflateRawSync } from "node:zlib"
import type { PatternId } from "../Pattern.ts"
import type { ContentId } from "../Viewing.ts"
import { makeBinaryLayout } from "./Binary.ts"
import {
  decodeFrame,
  encodeFrame,
  encodeFrameEffect,
  makeWireCodec,
  MAX_FRAME_BYTES,
  MAX_HELLO_BYTES,
  MAX_INFLATED_BYTES,
  type WireDecodeReason
} from "./Codec.ts"
import { defaultQuantization, type DeviceId, type SessionId, SyncFrame } from "./Frame.ts"
import { dequantize, quantize, type QuantizerConfig, QuantizerPresets } from "./Quantize.ts"
import { contentItems, deltaUpload, globalUpdate, hashingPatterns, seededRandom } from "./SyntheticData.ts"

const patterns = hashingPatterns(200, 3)

/** What a frame looks like after the trip: embeddings through the quantizer, fractions as float32. */
const afterTrip = (value: unknown, config: QuantizerConfig): unknown => {
  if (value instanceof Float32Array) return dequantize(quantize(value, config))
  if (value instanceof Uint8Array) return value
  if (typeof value === "number") return Number.isInteger(value) ? value : Math.fround(value)
  if (Array.isArray(value)) return value.map((v) => afterTrip(v, config))
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, afterTrip(v, config)]))
  }
  return value
}

const frames: ReadonlyArray<readonly [SyncFrame, QuantizerConfig]> = [
  [{
    _tag: "Hello",
    deviceId: "tv-0001" as DeviceId,
    token: "secret-token",
    region: "eu-west",
    protocolVersion: 1,
    resume: { lastAckedVersion: 41, globalVersion: 9_001 }
  }, defaultQuantization.patterns],
  [
    { _tag: "Hello", deviceId: "tv-0002" as DeviceId, token: "t", region: "us", protocolVersion: 1 },
    defaultQuantization.patterns
  ],
  [{
    _tag: "Welcome",
    sessionId: "0e5c1a4e-5d7e-4c8e-9a53-2f1b7d9c0a11" as SessionId,
    serverTime: 1_767_225_600_000,
    globalVersion: 9_002
  }, defaultQuantization.patterns],
  [{ ...deltaUpload(seededRandom(1), patterns.slice(0, 15)), sentAt: 1_767_225_600_123 }, defaultQuantization.patterns],
  [{ _tag: "DeltaAck", version: 57, accepted: 15, duplicate: false }, defaultQuantization.patterns],
  [globalUpdate(seededRandom(2), patterns.slice(0, 100), 20), defaultQuantization.patterns],
  [{ _tag: "ContentUpdate", items: contentItems(20, 4) }, defaultQuantization.content],
  [{
    _tag: "CoWatchUpdate",
    version: 3,
    rows: [
      { contentId: "ml-50" as ContentId, neighbours: [{ contentId: "ml-181" as ContentId, weight: 412 }] },
      { contentId: "ml-7" as ContentId, neighbours: [] }
    ]
  }, defaultQuantization.patterns],
  [{
    _tag: "ShardCoWatch",
    round: 4,
    changedDevices: 12,
    rows: [
      { contentId: "ml-50" as ContentId, devices: 9, neighbours: [{ contentId: "ml-181" as ContentId, devices: 2 }] },
      { contentId: "ml-181" as ContentId, devices: 3, neighbours: [] }
    ],
    last: false
  }, defaultQuantization.patterns],
  [{
    _tag: "FederatedCoWatch",
    round: 4,
    rows: [{ contentId: "ml-50" as ContentId, neighbours: [{ contentId: "ml-181" as ContentId, weight: 385 }] }],
    last: true
  }, defaultQuantization.patterns],
  [{ _tag: "Ping", nonce: 0xffff_ffff }, defaultQuantization.patterns],
  [{ _tag: "Pong", nonce: 0 }, defaultQuantization.patterns],
  [
    { _tag: "ErrorFrame", code: "rate-limited", message: "one sync per minute", retryAfterMs: 42_000 },
    defaultQuantization
      .patterns
  ]
]

const reasonOf = (bytes: Uint8Array) =>
  Effect.gen(function*() {
    const result = yield* Effect.result(decodeFrame(bytes))
    assert.isTrue(Result.isFailure(result), "expected the frame to be refused")
    return Result.isFailure(result) ? result.failure : undefined!
  })

const expectReason = (bytes: Uint8Array, reason: WireDecodeReason) =>
  Effect.gen(function*() {
    const error = yield* reasonOf(bytes)
    assert.strictEqual(error._tag, "WireDecodeError")
    assert.strictEqual(error.reason, reason, error.message)
    return error
  })

/** A frame around a body written straight from an encoded value, skipping the encoder's checks. */
const rawFrame = (encoded: unknown) => {
  const body = makeBinaryLayout(SyncFrame).write(encoded)
  return Uint8Array.from([0x02, ...body])
}

describe("round trips", () => {
  it.effect("every frame type decodes to what was sent, up to quantization and float32", () =>
    Effect.gen(function*() {
      for (const [frame, config] of frames) {
        const decoded = yield* decodeFrame(encodeFrame(frame))
        assert.deepStrictEqual(decoded, afterTrip(frame, config) as SyncFrame, frame._tag)
      }
    }))

  it.effect("a codec with another precision is read by the default decoder", () =>
    Effect.gen(function*() {
      const fine = makeWireCodec({ quantization: { patterns: QuantizerPresets.fine, content: QuantizerPresets.fine } })
      const [frame] = frames.find(([f]) => f._tag === "DeltaUpload")!
      const decoded = yield* decodeFrame(fine.encode(frame))
      assert.deepStrictEqual(decoded, afterTrip(frame, QuantizerPresets.fine) as SyncFrame)
    }))

  it.effect("compresses only when that makes the frame smaller", () =>
    Effect.gen(function*() {
      const ping = encodeFrame({ _tag: "Ping", nonce: 7 })
      assert.strictEqual(ping[0], 0x02)
      const content = encodeFrame({ _tag: "ContentUpdate", items: contentItems(20, 4) })
      assert.strictEqual(content[0], 0x03)
      const plain = makeWireCodec({ compression: "never" }).encode({
        _tag: "ContentUpdate",
        items: contentItems(20, 4)
      })
      assert.isBelow(content.length, plain.length)
      assert.strictEqual((yield* decodeFrame(plain))._tag, "ContentUpdate")
    }))
})

describe("sizes with the default quantization", () => {
  it("a 15-pattern upload fits in 1 KB, and so does a 20-pattern one", () => {
    for (let seed = 0; seed < 20; seed++) {
      const random = seededRandom(seed)
      assert.isAtMost(encodeFrame(deltaUpload(random, patterns.slice(seed, seed + 15))).length, 1024)
      assert.isAtMost(encodeFrame(deltaUpload(random, patterns.slice(seed, seed + 20))).length, 1024)
    }
  })

  it("100 global patterns and 20 trends fit in 5 KB", () => {
    for (let seed = 0; seed < 5; seed++) {
      const bytes = encodeFrame(globalUpdate(seededRandom(seed), patterns.slice(seed, seed + 100), 20))
      assert.isAtMost(bytes.length, 5 * 1024)
    }
  })
})

describe("refusing bad frames", () => {
  const upload = makeWireCodec({ compression: "never" }).encode(frames[3]![0])

  it.effect("empty, tiny and unknown-version input", () =>
    Effect.gen(function*() {
      yield* expectReason(new Uint8Array(0), "malformed")
      yield* expectReason(Uint8Array.of(0x02), "malformed")
      yield* expectReason(Uint8Array.of(0x7e, 0x06, 0x00), "unsupported-version")
      yield* expectReason(Uint8Array.of(0x00, 0x06, 0x00), "unsupported-version")
    }))

  it.effect("every truncation of a frame, plain or deflated", () =>
    Effect.gen(function*() {
      for (let n = 2; n < upload.length; n++) yield* expectReason(upload.subarray(0, n), "malformed")
      const deflated = encodeFrame({ _tag: "ContentUpdate", items: contentItems(20, 4) })
      for (let n = 2; n < deflated.length; n += 7) yield* expectReason(deflated.subarray(0, n), "malformed")
      yield* expectReason(Uint8Array.from([...upload, 0]), "malformed")
    }))

  it.effect("unknown frame types, and known tags on the wrong body", () =>
    Effect.gen(function*() {
      // 16 frame types today (tags 0-15): anything beyond is unknown.
      for (const tag of [16, 17, 127, 200]) {
        const bytes = upload.slice()
        bytes[1] = tag
        const error = yield* expectReason(bytes, "unknown-frame")
        assert.include(error.message, "variant")
      }
      for (let tag = 0; tag < 16; tag++) {
        if (tag === 2) continue
        const bytes = upload.slice()
        bytes[1] = tag
        const error = yield* reasonOf(bytes)
        assert.include(["malformed", "schema"], error.reason, `tag ${tag}: ${error.message}`)
      }
    }))

  it.effect("input above the size cap, including 100 MB of zeros deflated", () =>
    Effect.gen(function*() {
      const error = yield* expectReason(new Uint8Array(MAX_FRAME_BYTES + 1), "too-large")
      assert.include(error.message, String(MAX_FRAME_BYTES))
      const zeros = deflateRawSync(new Uint8Array(100 * 1024 * 1024), { level: 9 })
      yield* expectReason(Uint8Array.from([0x03, ...zeros]), "too-large")
    }))

  it.effect("decompression bombs under the size cap stop at the inflate cap", () =>
    Effect.gen(function*() {
      const small = deflateRawSync(new Uint8Array(1024 * 1024), { level: 9 })
      yield* expectReason(Uint8Array.from([0x03, ...small]), "bomb")
      const big = deflateRawSync(new Uint8Array(50 * 1024 * 1024), { level: 9 })
      assert.isBelow(big.length, MAX_FRAME_BYTES)
      const error = yield* expectReason(Uint8Array.from([0x03, ...big]), "bomb")
      assert.include(error.message, "inflates beyond")
      yield* expectReason(Uint8Array.of(0x03, 0xff, 0xff, 0xff, 0xff), "malformed")
    }))

  it.effect("a first frame is read with a Hello's cap: a hello passes, a large upload does not, deflated or not", () =>
    Effect.gen(function*() {
      const hello = encodeFrame({
        _tag: "Hello",
        deviceId: "tv-1" as DeviceId,
        token: "t".repeat(4096),
        region: "eu-west",
        protocolVersion: 1,
        resume: { lastAckedVersion: 7, globalVersion: 3, coWatchVersion: 2 }
      })
      assert.strictEqual((yield* decodeFrame(hello, MAX_HELLO_BYTES))._tag, "Hello", "the largest token fits")
      // One taste 64 times, finely quantized: a large body that deflates well, as a crafted one would.
      const sameTaste = Array.from({ length: 64 }, () => hashingPatterns(1, 3)[0]!)
      const large = makeWireCodec({
        compression: "never",
        quantization: { patterns: QuantizerPresets.fine, content: QuantizerPresets.fine }
      }).encode(deltaUpload(seededRandom(3), sameTaste))
      assert.isAbove(large.length, MAX_HELLO_BYTES)
      const tooLarge = yield* Effect.flip(decodeFrame(large, MAX_HELLO_BYTES))
      assert.strictEqual(tooLarge.reason, "too-large")
      const deflated = Uint8Array.from([0x03, ...deflateRawSync(large.subarray(1))])
      assert.isBelow(deflated.length, MAX_HELLO_BYTES)
      assert.strictEqual((yield* Effect.flip(decodeFrame(deflated, MAX_HELLO_BYTES))).reason, "bomb")
      assert.strictEqual((yield* decodeFrame(deflated))._tag, "DeltaUpload", "within the usual caps it decodes")
    }))

  it.effect("well-formed bytes that break the schemas", () =>
    Effect.gen(function*() {
      const pattern = {
        id: "p1",
        embedding: quantize(patterns[0]!),
        successRate: 0.8,
        sampleCount: 3,
        context: {}
      }
      const delta = (patch: object) => ({
        _tag: "DeltaUpload",
        delta: { baseVersion: 1, version: 2, added: [{ ...pattern, ...patch }], updated: [], removed: [] }
      })
      assert.strictEqual((yield* decodeFrame(rawFrame(delta({}))))._tag, "DeltaUpload")
      const rate = yield* expectReason(rawFrame(delta({ successRate: 1.5 })), "schema")
      assert.include(rate.message, "successRate")
      yield* expectReason(rawFrame(delta({ sampleCount: Number.NaN })), "schema")
      yield* expectReason(rawFrame(delta({ id: "" })), "schema")
      const code = yield* expectReason(rawFrame(delta({ embedding: Uint8Array.of(0x12, 1, 2) })), "schema")
      assert.include(code.message, "multiple of 8")
      yield* expectReason(rawFrame(delta({ embedding: Uint8Array.of(0x70, 1) })), "schema")
      const older = yield* expectReason(
        rawFrame({ _tag: "DeltaUpload", delta: { baseVersion: 5, version: 2, added: [], updated: [], removed: [] } }),
        "schema"
      )
      assert.include(older.message, "older than baseVersion")
      yield* expectReason(rawFrame({ _tag: "Ping", nonce: -1 }), "schema")
      const added = Array.from({ length: 65 }, (_, i) => ({ ...pattern, id: `p${i}` }))
      const many = yield* expectReason(
        rawFrame({ _tag: "DeltaUpload", delta: { baseVersion: 0, version: 1, added, updated: [], removed: [] } }),
        "schema"
      )
      assert.include(many.message, "at most 64")
      const tooMany = Array.from({ length: 65 }, (_, i) => `p${i}` as PatternId)
      yield* expectReason(
        rawFrame({
          _tag: "DeltaUpload",
          delta: { baseVersion: 0, version: 1, added: [], updated: [], removed: tooMany }
        }),
        "schema"
      )
    }))

  it.effect("an upload claiming 18,000 patterns is refused by its count, before any pattern is decoded", () =>
    Effect.gen(function*() {
      // Under a kilobyte that inflates to under the cap: decoding every pattern before the schema
      // refused the array cost a shard 0.5-1 s per frame, before the session was authenticated.
      const pattern = { id: "p", embedding: Uint8Array.of(0x10, 0xa5), successRate: 0.8, sampleCount: 3, context: {} }
      const body = makeBinaryLayout(SyncFrame).write({
        _tag: "DeltaUpload",
        delta: {
          baseVersion: 0,
          version: 1,
          added: Array.from({ length: 18_000 }, () => pattern),
          updated: [],
          removed: []
        }
      })
      assert.isAtMost(body.length, MAX_INFLATED_BYTES)
      const frame = Uint8Array.from([0x03, ...deflateRawSync(body, { level: 9 })])
      assert.isBelow(frame.length, 1024)
      const error = yield* expectReason(frame, "schema")
      assert.include(error.message, "at delta.added: array of 18000 elements, expected at most 64")
    }))

  it.effect("random bytes never crash the decoder: every failure is a WireDecodeError", () =>
    Effect.gen(function*() {
      const random = seededRandom(2024)
      const reasons = new Set<string>()
      for (let i = 0; i < 1_000; i++) {
        const length = Math.floor(random() * 300)
        const bytes = Uint8Array.from({ length }, () => Math.floor(random() * 256))
        if (length > 0 && i % 2 === 0) bytes[0] = i % 4 === 0 ? 0x02 : 0x03
        if (length > 1 && i % 4 === 0) bytes[1] = Math.floor(random() * 9)
        const result = yield* Effect.result(decodeFrame(bytes))
        if (Result.isFailure(result)) {
          assert.strictEqual(result.failure._tag, "WireDecodeError")
          reasons.add(result.failure.reason)
        }
      }
      assert.isAtLeast(reasons.size, 3)
    }))

  it.effect("flipping bytes of valid frames never crashes the decoder", () =>
    Effect.gen(function*() {
      const random = seededRandom(77)
      const valid = frames.map(([frame]) => encodeFrame(frame))
      for (let i = 0; i < 1_000; i++) {
        const bytes = valid[i % valid.length]!.slice()
        for (let flips = 1 + Math.floor(random() * 3); flips > 0; flips--) {
          bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256)
        }
        const result = yield* Effect.result(decodeFrame(bytes))
        if (Result.isFailure(result)) assert.strictEqual(result.failure._tag, "WireDecodeError")
      }
    }))
})

describe("refusing bad frames on the way out", () => {
  it.effect("a frame that fails its schema is a WireEncodeError, not bytes", () =>
    Effect.gen(function*() {
      const embedding = patterns[0]!.slice()
      embedding[3] = Number.NaN
      const bad = deltaUpload(seededRandom(5), [embedding])
      assert.throws(() => encodeFrame(bad), /component 3/)
      const error = yield* Effect.flip(encodeFrameEffect(bad))
      assert.strictEqual(error._tag, "WireEncodeError")
      assert.strictEqual(error.reason, "schema")
      const failure = yield* Effect.flip(encodeFrameEffect({ _tag: "Ping", nonce: 2 ** 40 }))
      assert.strictEqual(failure.reason, "schema")
    }))

  it.effect("a frame above the caps is refused before it is sent", () =>
    Effect.gen(function*() {
      const random = seededRandom(9)
      const noise = (length: number) =>
        String.fromCharCode(...Array.from({ length }, () => 0x4e00 + Math.floor(random() * 20_000)))
      const items = contentItems(64, 8).map((item) => ({
        ...item,
        title: noise(512),
        genres: Array.from({ length: 32 }, () => noise(64))
      }))
      const error = yield* Effect.flip(encodeFrameEffect({ _tag: "ContentUpdate", items }))
      assert.strictEqual(error.reason, "too-large")
    }))

  it("schema decoding of the encoded form is what the layout carries", () => {
    const encoded = Schema.encodeUnknownSync(SyncFrame)(frames[3]![0])
    const layout = makeBinaryLayout(SyncFrame)
    assert.deepStrictEqual(layout.read(layout.write(encoded)), afterTrip(encoded, defaultQuantization.patterns))
  })
})
