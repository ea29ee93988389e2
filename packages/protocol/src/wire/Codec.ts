/**
 * Sync frames to bytes and back. Encoding runs the frame schema's encoder (which quantizes
 * embeddings), writes the encoded value in the schema-derived binary layout and deflates it
 * when that is smaller. Decoding caps the input, inflates in small steps under a hard cap
 * (a decompression bomb stops at the cap, never allocating what it claims), reads the
 * layout and decodes with the frame schema, so every protocol check applies.
 *
 * Frame: one header byte `version << 1 | deflated`, then the body (raw DEFLATE when flagged).
 *
 * DEFLATE is Node's own zlib rather than fflate: fflate allocates its 128 KiB working buffers
 * on every call, which for sub-kilobyte frames made inflating a 200-byte upload cost ~170 µs
 * (zlib: ~5 µs) and deflating it ~127 µs (zlib: ~54 µs); zlib's `maxOutputLength` also stops
 * a bomb natively at the cap.
 */
import { Data, Effect, Schema } from "effect"
import { deflateRawSync, inflateRawSync } from "node:zlib"

/** Bodies shorter than this are sent as they are. */
const MIN_DEFLATE_BYTES = 96
import { BinaryReadError, makeBinaryLayout } from "./Binary.ts"
import { defaultQuantization, type FrameQuantization, makeSyncFrame, type SyncFrame } from "./Frame.ts"
import type { EmbeddingBasis } from "./Quantize.ts"

/** Version of the frame envelope and binary layout. */
export const WIRE_VERSION = 1

/** Largest frame accepted on the wire (compressed). */
export const MAX_FRAME_BYTES = 64 * 1024

/** Largest body a frame may inflate to. */
export const MAX_INFLATED_BYTES = 256 * 1024

/**
 * Largest body of a Hello (a 4,096-character token, a 128-character device id, a region, the
 * resume versions), with room to spare: what a shard decodes from a peer not yet authenticated.
 */
export const MAX_HELLO_BYTES = 8 * 1024

export const WireDecodeReason = Schema.Literals([
  /** The input is above MAX_FRAME_BYTES. */
  "too-large",
  /** The body inflates beyond MAX_INFLATED_BYTES. */
  "bomb",
  /** Empty, truncated, bad DEFLATE data or bytes that do not follow the layout. */
  "malformed",
  /** A frame type this build does not know (a newer peer). */
  "unknown-frame",
  /** A wire version this build does not speak. */
  "unsupported-version",
  /** Well-formed bytes whose value fails the frame schema (ranges, dimensions, lengths). */
  "schema"
])
export type WireDecodeReason = typeof WireDecodeReason.Type

/** Bytes from a peer that are not a valid frame; `reason` says which check refused them. */
export class WireDecodeError extends Schema.TaggedError<WireDecodeError>()("WireDecodeError", {
  reason: WireDecodeReason,
  message: Schema.String
}) {}

/** A frame that cannot be sent: it fails its schema, or it is too big for the peer to accept. */
export class WireEncodeError extends Data.TaggedError("WireEncodeError")<{
  readonly reason: "schema" | "too-large"
  readonly message: string
}> {}

export interface WireCodecOptions {
  /** Precision of the embeddings this side writes; any precision is read. */
  readonly quantization?: FrameQuantization
  /** "auto" deflates when that makes the frame smaller. */
  readonly compression?: "auto" | "never"
  /**
   * "rotated": embeddings are decoded into (and encoded from) the quantizer's rotated basis, which
   * skips the inverse rotation; for a shard's ingest path, which only compares and sums them.
   */
  readonly basis?: EmbeddingBasis
}

/** Encoder and decoder of sync frames. */
export interface WireCodec {
  /** Frame to bytes; throws WireEncodeError for a frame that fails its schema or the size caps. */
  readonly encode: (frame: SyncFrame) => Uint8Array
  /** Frame to bytes, failing with WireEncodeError instead of throwing. */
  readonly encodeEffect: (frame: SyncFrame) => Effect.Effect<Uint8Array, WireEncodeError>
  /**
   * Bytes to a validated frame. `maxBodyBytes` (default MAX_INFLATED_BYTES) caps the body, inflated
   * or not: a shard reads a session's first frame, before it knows who sent it, with MAX_HELLO_BYTES.
   */
  readonly decode: (bytes: Uint8Array, maxBodyBytes?: number) => Effect.Effect<SyncFrame, WireDecodeError>
}

/** A codec writing embeddings with `options.quantization`. */
export const makeWireCodec = (options: WireCodecOptions = {}): WireCodec => {
  const schema = makeSyncFrame(options.quantization ?? defaultQuantization, options.basis ?? "original")
  const layout = makeBinaryLayout(schema)
  const encodeSchema = Schema.encodeUnknownSync(schema)
  const decodeSchema = Schema.decodeUnknownEffect(schema)
  const compress = (options.compression ?? "auto") === "auto"

  const encode = (frame: SyncFrame): Uint8Array => {
    let body: Uint8Array
    try {
      body = layout.write(encodeSchema(frame))
    } catch (error) {
      throw new WireEncodeError({ reason: "schema", message: messageOf(error) })
    }
    if (body.length > MAX_INFLATED_BYTES) {
      throw new WireEncodeError({
        reason: "too-large",
        message: `${frame._tag} body is ${body.length} bytes, above ${MAX_INFLATED_BYTES}`
      })
    }
    // Small frames (acks, pings, hellos) never shrink enough to pay for a deflate on every send.
    const deflated = compress && body.length >= MIN_DEFLATE_BYTES ? deflateRawSync(body, { level: 9 }) : undefined
    const useDeflated = deflated !== undefined && deflated.length < body.length
    const payload = useDeflated ? deflated : body
    if (payload.length + 1 > MAX_FRAME_BYTES) {
      throw new WireEncodeError({
        reason: "too-large",
        message: `${frame._tag} frame is ${payload.length + 1} bytes, above ${MAX_FRAME_BYTES}`
      })
    }
    const out = new Uint8Array(payload.length + 1)
    out[0] = (WIRE_VERSION << 1) | (useDeflated ? 1 : 0)
    out.set(payload, 1)
    return out
  }

  const decode = (bytes: Uint8Array, maxBodyBytes = MAX_INFLATED_BYTES): Effect.Effect<SyncFrame, WireDecodeError> =>
    Effect.suspend(() => {
      const body = unwrap(bytes, maxBodyBytes)
      if (body instanceof WireDecodeError) return Effect.fail(body)
      let encoded: unknown
      try {
        encoded = layout.read(body)
      } catch (error) {
        return Effect.fail(new WireDecodeError({ reason: readReason(error), message: messageOf(error) }))
      }
      return decodeSchema(encoded).pipe(
        Effect.mapError((error) => new WireDecodeError({ reason: "schema", message: error.message }))
      )
    })

  return {
    encode,
    encodeEffect: (frame) =>
      Effect.try({
        try: () => encode(frame),
        catch: (error) =>
          error instanceof WireEncodeError
            ? error
            : new WireEncodeError({ reason: "schema", message: messageOf(error) })
      }),
    decode
  }
}

/** Checks the envelope and returns the body, inflated when flagged, of at most `limit` bytes. */
const unwrap = (bytes: Uint8Array, limit: number): Uint8Array | WireDecodeError => {
  if (!(bytes instanceof Uint8Array)) return new WireDecodeError({ reason: "malformed", message: "not a Uint8Array" })
  if (bytes.length > MAX_FRAME_BYTES) {
    return new WireDecodeError({
      reason: "too-large",
      message: `frame of ${bytes.length} bytes, the limit is ${MAX_FRAME_BYTES}`
    })
  }
  if (bytes.length < 2) return new WireDecodeError({ reason: "malformed", message: "frame shorter than 2 bytes" })
  const header = bytes[0]!
  if (header >> 1 !== WIRE_VERSION) {
    return new WireDecodeError({
      reason: "unsupported-version",
      message: `wire version ${header >> 1}, this build speaks ${WIRE_VERSION}`
    })
  }
  const payload = bytes.subarray(1)
  if (header & 1) return inflateCapped(payload, limit)
  return payload.length > limit
    ? new WireDecodeError({ reason: "too-large", message: `body of ${payload.length} bytes, the limit is ${limit}` })
    : payload
}

/** Inflates `input`, refusing (without allocating it) any output beyond `limit` bytes. */
const inflateCapped = (input: Uint8Array, limit: number): Uint8Array | WireDecodeError => {
  try {
    const out = inflateRawSync(input, { maxOutputLength: limit })
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength)
  } catch (error) {
    return error instanceof RangeError
      ? new WireDecodeError({ reason: "bomb", message: `body inflates beyond ${limit} bytes` })
      : new WireDecodeError({ reason: "malformed", message: `bad DEFLATE data: ${messageOf(error)}` })
  }
}

/** An array longer than its schema allows fails the schema, refused early: the reason says so. */
const readReason = (error: unknown): WireDecodeReason =>
  !(error instanceof BinaryReadError)
    ? "malformed"
    : error.kind === "unknown-variant"
    ? "unknown-frame"
    : error.kind === "too-long"
    ? "schema"
    : "malformed"

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))

const defaultCodec = makeWireCodec()

/** Encodes a frame with the default quantization; throws WireEncodeError (see WireCodec.encode). */
export const encodeFrame: (frame: SyncFrame) => Uint8Array = defaultCodec.encode

/** Encodes a frame with the default quantization. */
export const encodeFrameEffect: (frame: SyncFrame) => Effect.Effect<Uint8Array, WireEncodeError> =
  defaultCodec.encodeEffect

/** Decodes and validates a frame from a peer (any quantization). */
export const decodeFrame: (bytes: Uint8Array, maxBodyBytes?: number) => Effect.Effect<SyncFrame, WireDecodeError> =
  defaultCodec.decode
