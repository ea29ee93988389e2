/**
 * What a TV and its shard say to each other on a sync session, as one tagged union of
 * schemas. The payloads are the protocol's own schemas (PatternDelta, GlobalPatterns,
 * ContentEmbedding) with the embedding field swapped for its quantized wire form; nothing
 * else about them changes, so decoding a frame runs every check those schemas declare.
 * Member order is part of the binary format: add new frames at the end.
 */
import { Schema } from "effect"
import {
  ContentEmbedding,
  GlobalPattern,
  GlobalPatterns,
  PatternDelta,
  Region,
  SharedPattern,
  Version
} from "../Pattern.ts"
import { Timestamp } from "../Viewing.ts"
import { QuantizedEmbedding, type QuantizerConfig, QuantizerPresets } from "./Quantize.ts"

/** Version of the frame schemas below; bump on any change to them or to the binary layout. */
export const PROTOCOL_VERSION = 1

/** Upper bound on catalog items announced in one ContentUpdate. */
export const MAX_CONTENT_ITEMS = 64

export const DeviceId = Schema.String.check(Schema.isBetweenLength(1, 128)).pipe(Schema.brand("DeviceId"))
export type DeviceId = typeof DeviceId.Type

export const SessionId = Schema.String.check(Schema.isBetweenLength(1, 128)).pipe(Schema.brand("SessionId"))
export type SessionId = typeof SessionId.Type

/** Where a reconnecting TV left off, so the shard can skip what it already has. */
export const Resume = Schema.Struct({
  lastAckedVersion: Version,
  globalVersion: Version
})
export type Resume = typeof Resume.Type

/** Why a peer refused or dropped something. */
export const ErrorCode = Schema.Literals([
  "bad-frame",
  "unauthorized",
  "rate-limited",
  "unsupported-version",
  "overloaded",
  "internal"
])
export type ErrorCode = typeof ErrorCode.Type

/** Precision of the embeddings a frame schema writes (decoding reads every precision). */
export interface FrameQuantization {
  /** Patterns in deltas and global updates: sized for the ~1 KB up / ~5 KB down budget. */
  readonly patterns: QuantizerConfig
  /** Catalog items: fewer per sync and searched directly, so they travel finer. */
  readonly content: QuantizerConfig
}

export const defaultQuantization: FrameQuantization = {
  patterns: QuantizerPresets.compact,
  content: QuantizerPresets.precise
}

/** An array schema like `array` (same checks: lengths) whose items are `item`. */
const arrayLike = <S extends Schema.Top>(array: Schema.Top, item: S) => {
  const checks = array.ast.checks
  return checks === undefined ? Schema.Array(item) : Schema.Array(item).check(...checks)
}

const Nonce = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 0xffff_ffff }))

/** The frame schemas with embeddings quantized as `quantization` says. */
export const makeSyncFrame = (quantization: FrameQuantization = defaultQuantization) => {
  const patternEmbedding = { embedding: QuantizedEmbedding(quantization.patterns) }
  // Struct-level checks only see decoded values, which the swap leaves as they were: keep them.
  const keep = { unsafePreserveChecks: true }
  const WireSharedPattern = SharedPattern.mapFields((f) => ({ ...f, ...patternEmbedding }), keep)
  const WireGlobalPattern = GlobalPattern.mapFields((f) => ({ ...f, ...patternEmbedding }), keep)
  const WireContentEmbedding = ContentEmbedding.mapFields((f) => ({
    ...f,
    embedding: QuantizedEmbedding(quantization.content)
  }), keep)
  const WirePatternDelta = PatternDelta.mapFields((f) => ({
    ...f,
    added: arrayLike(f.added, WireSharedPattern),
    updated: arrayLike(f.updated, WireSharedPattern)
  }), keep)
  const WireGlobalPatterns = GlobalPatterns.mapFields((f) => ({
    ...f,
    similar: arrayLike(f.similar, WireGlobalPattern)
  }), keep)

  /** First frame of a session, TV to shard. */
  const Hello = Schema.TaggedStruct("Hello", {
    deviceId: DeviceId,
    /** Bearer credential checked by the shard; never logged. */
    token: Schema.String.check(Schema.isBetweenLength(1, 4096)),
    region: Region,
    protocolVersion: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
    resume: Schema.optionalKey(Resume)
  })
  /** Shard accepts the session. */
  const Welcome = Schema.TaggedStruct("Welcome", {
    sessionId: SessionId,
    serverTime: Timestamp,
    globalVersion: Version
  })
  /** TV pushes its changed high-quality patterns; no timestamps of anything watched. */
  const DeltaUpload = Schema.TaggedStruct("DeltaUpload", {
    delta: WirePatternDelta,
    sentAt: Schema.optionalKey(Timestamp)
  })
  /** Shard acknowledges a delta; `duplicate` when it was a replay already counted. */
  const DeltaAck = Schema.TaggedStruct("DeltaAck", {
    version: Version,
    accepted: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
    duplicate: Schema.Boolean
  })
  /** Shard streams global patterns and trends for the TV's region. */
  const GlobalUpdate = Schema.TaggedStruct("GlobalUpdate", { global: WireGlobalPatterns })
  /** Shard announces new catalog items with their embeddings. */
  const ContentUpdate = Schema.TaggedStruct("ContentUpdate", {
    items: Schema.Array(WireContentEmbedding).check(Schema.isMaxLength(MAX_CONTENT_ITEMS))
  })
  const Ping = Schema.TaggedStruct("Ping", { nonce: Nonce })
  const Pong = Schema.TaggedStruct("Pong", { nonce: Nonce })
  const ErrorFrame = Schema.TaggedStruct("ErrorFrame", {
    code: ErrorCode,
    message: Schema.String.check(Schema.isMaxLength(512)),
    /** With rate-limited and overloaded: when to try again. */
    retryAfterMs: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)))
  })

  return Schema.Union([Hello, Welcome, DeltaUpload, DeltaAck, GlobalUpdate, ContentUpdate, Ping, Pong, ErrorFrame])
}

/** Every frame of a sync session, with the default quantization. */
export const SyncFrame = makeSyncFrame()
export type SyncFrame = typeof SyncFrame.Type

export type Hello = Extract<SyncFrame, { readonly _tag: "Hello" }>
export type Welcome = Extract<SyncFrame, { readonly _tag: "Welcome" }>
export type DeltaUpload = Extract<SyncFrame, { readonly _tag: "DeltaUpload" }>
export type DeltaAck = Extract<SyncFrame, { readonly _tag: "DeltaAck" }>
export type GlobalUpdate = Extract<SyncFrame, { readonly _tag: "GlobalUpdate" }>
export type ContentUpdate = Extract<SyncFrame, { readonly _tag: "ContentUpdate" }>
export type Ping = Extract<SyncFrame, { readonly _tag: "Ping" }>
export type Pong = Extract<SyncFrame, { readonly _tag: "Pong" }>
export type ErrorFrame = Extract<SyncFrame, { readonly _tag: "ErrorFrame" }>
