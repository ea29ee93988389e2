import { assert, describe, it } from "@effect/vitest"
import { encodeFrame, FrameDecoder } from "./Framing.ts"

// Deterministic pseudo-random split points (xorshift), so a failure is reproducible.
const splits = (total: number, seed: number): Array<number> => {
  let x = seed
  const points: Array<number> = []
  for (let at = 0; at < total;) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    at += 1 + (Math.abs(x) % 900)
    points.push(Math.min(at, total))
  }
  return points
}

const concat = (parts: ReadonlyArray<Uint8Array>) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.byteLength
  }
  return out
}

const payload = (size: number, seed: number) => Uint8Array.from({ length: size }, (_, i) => (i + seed) & 0xff)

describe("FrameDecoder", () => {
  it("says how many bytes the frame being read still lacks, so reads can be sized by it", () => {
    const decoder = new FrameDecoder(100_000)
    assert.strictEqual(decoder.missingBytes, 4, "a header first")
    const frame = encodeFrame(payload(5_000, 3))
    decoder.push(frame.subarray(0, 2))
    assert.strictEqual(decoder.missingBytes, 2, "the rest of the header")
    decoder.push(frame.subarray(2, 1_004))
    assert.strictEqual(decoder.missingBytes, 4_000, "the rest of the payload")
    const result = decoder.push(frame.subarray(1_004))
    assert.deepStrictEqual(result._tag === "Frames" ? result.frames.map((f) => f.byteLength) : [], [5_000])
    assert.strictEqual(decoder.missingBytes, 4, "the next header")
  })

  it("reassembles frames from chunks cut anywhere, including inside headers and empty frames", () => {
    const sizes = [0, 1, 3, 4, 5, 1_000, 70_000, 0, 17]
    const frames = sizes.map((size, i) => payload(size, i))
    const stream = concat(frames.map(encodeFrame))
    for (const seed of [1, 7, 42, 1234]) {
      const decoder = new FrameDecoder(100_000)
      const out: Array<Uint8Array> = []
      let from = 0
      for (const to of splits(stream.byteLength, seed)) {
        const result = decoder.push(stream.subarray(from, to))
        assert.strictEqual(result._tag, "Frames")
        if (result._tag === "Frames") out.push(...result.frames)
        from = to
      }
      assert.strictEqual(out.length, frames.length, `seed ${seed}`)
      out.forEach((frame, i) => assert.deepStrictEqual(frame, frames[i]))
      assert.strictEqual(decoder.bufferedBytes, 0)
    }
    // A stream cut right after a header still counts as cut.
    const cut = new FrameDecoder(100)
    cut.push(encodeFrame(payload(10, 0)).subarray(0, 4))
    assert.strictEqual(cut.bufferedBytes, 4)
  })

  it("returns many frames from one chunk, and keeps a partial one for later", () => {
    const decoder = new FrameDecoder(1_000)
    const stream = concat([encodeFrame(payload(10, 1)), encodeFrame(payload(20, 2)), encodeFrame(payload(30, 3))])
    const first = decoder.push(stream.subarray(0, stream.byteLength - 5))
    assert.deepStrictEqual(first, { _tag: "Frames", frames: [payload(10, 1), payload(20, 2)] })
    assert.strictEqual(decoder.bufferedBytes, 4 + 30 - 5)
    assert.deepStrictEqual(decoder.push(stream.subarray(stream.byteLength - 5)), {
      _tag: "Frames",
      frames: [payload(30, 3)]
    })
  })

  it("rejects a length over the limit as soon as the header is in, without buffering the body", () => {
    const decoder = new FrameDecoder(1_024)
    assert.deepStrictEqual(decoder.push(encodeFrame(payload(1_024, 0))), {
      _tag: "Frames",
      frames: [payload(1_024, 0)]
    })
    assert.deepStrictEqual(decoder.push(Uint8Array.of(0x00, 0x00)), { _tag: "Frames", frames: [] })
    assert.deepStrictEqual(decoder.push(Uint8Array.of(0x04, 0x01)), { _tag: "TooLarge", length: 1_025 })
    // Garbage: the decoder stays failed whatever comes next.
    assert.strictEqual(decoder.push(payload(10, 0))._tag, "TooLarge")
    const garbage = new FrameDecoder(256 * 1024)
    assert.deepStrictEqual(garbage.push(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 1, 2, 3)), {
      _tag: "TooLarge",
      length: 0xffff_ffff
    })
  })
})
