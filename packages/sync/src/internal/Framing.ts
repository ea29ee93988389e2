/**
 * Whole frames over a byte stream: each frame is a 4-byte big-endian length followed by that many
 * bytes. The decoder checks the length against the limit before it buffers anything for the
 * frame, so a hostile or corrupt length never makes it allocate more than one frame's worth.
 */

export const FRAME_HEADER_BYTES = 4

/** Default limit on one frame: a sync download is ~5 KB, the protocol's own limit is lower still. */
export const MAX_FRAME_BYTES = 256 * 1024

/** The length prefix followed by `payload`, in one buffer so that one write carries one frame. */
export const encodeFrame = (payload: Uint8Array): Uint8Array => {
  const out = new Uint8Array(FRAME_HEADER_BYTES + payload.byteLength)
  new DataView(out.buffer).setUint32(0, payload.byteLength)
  out.set(payload, FRAME_HEADER_BYTES)
  return out
}

/** What `FrameDecoder.push` found: the frames completed by the chunk, or a length over the limit. */
export type DecodeResult =
  | { readonly _tag: "Frames"; readonly frames: ReadonlyArray<Uint8Array> }
  | { readonly _tag: "TooLarge"; readonly length: number }

/** Reassembles frames from chunks of any size: partial headers, partial frames, many per chunk. */
export class FrameDecoder {
  // Unconsumed chunks; `offset` is how much of the first one is already consumed.
  private chunks: Array<Uint8Array> = []
  private offset = 0
  private buffered = 0
  // Length of the frame being assembled, once its header has been read.
  private pending: number | undefined = undefined
  private failed = false

  readonly maxFrameBytes: number

  constructor(maxFrameBytes: number) {
    this.maxFrameBytes = maxFrameBytes
  }

  /** Bytes received but not yet returned as frames; non-zero at end of stream means a cut frame. */
  get bufferedBytes(): number {
    return this.buffered + (this.pending === undefined ? 0 : FRAME_HEADER_BYTES)
  }

  /** Bytes still missing from the frame (or header) being assembled: a good size for the next read. */
  get missingBytes(): number {
    return this.pending === undefined ? FRAME_HEADER_BYTES - this.buffered : this.pending - this.buffered
  }

  push(chunk: Uint8Array): DecodeResult {
    if (this.failed) return { _tag: "TooLarge", length: this.pending ?? 0 }
    if (chunk.byteLength > 0) {
      this.chunks.push(chunk)
      this.buffered += chunk.byteLength
    }
    const frames: Array<Uint8Array> = []
    for (;;) {
      if (this.pending === undefined) {
        if (this.buffered < FRAME_HEADER_BYTES) break
        const header = this.take(FRAME_HEADER_BYTES)
        const length = new DataView(header.buffer, header.byteOffset, FRAME_HEADER_BYTES).getUint32(0)
        this.pending = length
        if (length > this.maxFrameBytes) {
          this.failed = true
          return { _tag: "TooLarge", length }
        }
      }
      if (this.buffered < this.pending) break
      frames.push(this.take(this.pending))
      this.pending = undefined
    }
    return { _tag: "Frames", frames }
  }

  // Copies `n` buffered bytes out; callers check `buffered >= n` first.
  private take(n: number): Uint8Array {
    const out = new Uint8Array(n)
    let written = 0
    while (written < n) {
      const head = this.chunks[0]!
      const available = head.byteLength - this.offset
      const count = Math.min(available, n - written)
      out.set(head.subarray(this.offset, this.offset + count), written)
      written += count
      if (count === available) {
        this.chunks.shift()
        this.offset = 0
      } else {
        this.offset += count
      }
    }
    this.buffered -= n
    return out
  }
}
