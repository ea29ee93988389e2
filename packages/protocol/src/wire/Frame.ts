/**
 * What a TV and its shard say to each other on a sync session, as one tagged union of
 * schemas. The payloads are the protocol's own schemas (PatternDelta, GlobalPatterns,
 * ContentEmbedding) with the embedding field swapped for its quantized wire form; nothing
 * else about them changes, so decoding a frame runs every check those schemas declare.
 * Member order is part of the binary format: add new frames at the end.
 */
import { Schema } from "effect"
import { MAX_COWATCH_COUNT_ROWS, MAX_COWATCH_ROWS, MAX_GLOBAL_PATTERNS, MAX_TRENDS } from "../Constants.ts"
import {
  ContentEmbedding,
  CoWatchCount,
  CoWatchRow,
  GlobalPattern,
  GlobalPatterns,
  PatternDelta,
  Region,
  SharedPattern,
  TrendSignal,
  Version
} from "../Pattern.ts"
import { isNulFree } from "../Text.ts"
import { Timestamp } from "../Viewing.ts"
import { type EmbeddingBasis, QuantizedEmbedding, type QuantizerConfig, QuantizerPresets } from "./Quantize.ts"

/** Version of the frame schemas below; bump on any change to them or to the binary layout. */
export const PROTOCOL_VERSION = 3

/** Upper bound on catalog items announced in one ContentUpdate. */
export const MAX_CONTENT_ITEMS = 64

/** A device id as plain text; `DeviceId` is its branded form. */
export const DeviceIdText = Schema.String.check(Schema.isBetweenLength(1, 128), isNulFree)
export const DeviceId = DeviceIdText.pipe(Schema.brand("DeviceId"))
export type DeviceId = typeof DeviceId.Type

/** A device's bearer credential (the fleet issues it; the shard checks it); never logged. */
export const DeviceToken = Schema.String.check(Schema.isBetweenLength(1, 4096))

export const SessionId = Schema.String.check(Schema.isBetweenLength(1, 128), isNulFree).pipe(Schema.brand("SessionId"))
export type SessionId = typeof SessionId.Type

/** Where a reconnecting TV left off, so the shard can skip what it already has. */
export const Resume = Schema.Struct({
  lastAckedVersion: Version,
  globalVersion: Version,
  /** Co-watch rows changed after this version are what the TV still lacks. */
  coWatchVersion: Schema.optionalKey(Version)
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

/**
 * The frame schemas with embeddings quantized as `quantization` says; `basis` "rotated" decodes
 * (and encodes) embeddings in the quantizer's rotated basis instead (see `dequantizeRotated`).
 */
export const makeSyncFrame = (
  quantization: FrameQuantization = defaultQuantization,
  basis: EmbeddingBasis = "original"
) => {
  const patternEmbedding = { embedding: QuantizedEmbedding(quantization.patterns, basis) }
  // Struct-level checks only see decoded values, which the swap leaves as they were: keep them.
  const keep = { unsafePreserveChecks: true }
  const WireSharedPattern = SharedPattern.mapFields((f) => ({ ...f, ...patternEmbedding }), keep)
  const WireGlobalPattern = GlobalPattern.mapFields((f) => ({ ...f, ...patternEmbedding }), keep)
  const WireContentEmbedding = ContentEmbedding.mapFields((f) => ({
    ...f,
    embedding: QuantizedEmbedding(quantization.content, basis)
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
    token: DeviceToken,
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
  /**
   * TV pushes its changed patterns of at least two samples, each with its success rate (the shard
   * aggregates the quality ones and counts all as viewing); no timestamps of anything watched.
   */
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
  /**
   * Shard sends co-watch rows learned across the fleet (catalog knowledge like ContentUpdate, and
   * like it outside the per-sync budget); a TV replaces the rows it names and keeps the others.
   */
  const CoWatchUpdate = Schema.TaggedStruct("CoWatchUpdate", {
    version: Version,
    rows: Schema.Array(CoWatchRow).check(Schema.isMaxLength(MAX_COWATCH_ROWS))
  })
  const Ping = Schema.TaggedStruct("Ping", { nonce: Nonce })
  const Pong = Schema.TaggedStruct("Pong", { nonce: Nonce })
  const ErrorFrame = Schema.TaggedStruct("ErrorFrame", {
    code: ErrorCode,
    message: Schema.String.check(Schema.isMaxLength(512)),
    /** With rate-limited and overloaded: when to try again. */
    retryAfterMs: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)))
  })

  // Federation: a worker holds a session to every shard (authenticated like a device, with an id
  // in the "federation:" namespace) and exchanges aggregated patterns in the same schemas.
  /** Worker to shard: send your aggregated patterns for round `round`. */
  const FederationPull = Schema.TaggedStruct("FederationPull", {
    round: Nonce,
    maxPatterns: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: MAX_GLOBAL_PATTERNS }))
  })
  /** Shard to worker: one region's aggregated patterns and trends; `last` ends the shard's answer. */
  const ShardPatterns = Schema.TaggedStruct("ShardPatterns", {
    round: Nonce,
    shardId: Schema.String.check(Schema.isBetweenLength(1, 128), isNulFree),
    region: Region,
    patterns: arrayLike(Schema.Array(GlobalPattern).check(Schema.isMaxLength(MAX_GLOBAL_PATTERNS)), WireGlobalPattern),
    trends: Schema.Array(TrendSignal).check(Schema.isMaxLength(MAX_TRENDS)),
    last: Schema.Boolean
  })
  /** Worker to shard: the federated global patterns of a region. */
  const RegionUpdate = Schema.TaggedStruct("RegionUpdate", { region: Region, global: WireGlobalPatterns })
  /**
   * Shard to worker, before its ShardPatterns of the round: a slice of its co-watch counts (`last`
   * ends them), and how many devices changed them since the shard took the last federated table
   * (the worker publishes a new table only once k did across shards, so consecutive tables never
   * differ by one device's viewing).
   */
  const ShardCoWatch = Schema.TaggedStruct("ShardCoWatch", {
    round: Nonce,
    changedDevices: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 2 ** 31 })),
    rows: Schema.Array(CoWatchCount).check(Schema.isMaxLength(MAX_COWATCH_COUNT_ROWS)),
    last: Schema.Boolean
  })
  /**
   * Worker to shard: a slice of the co-watch table federated across shards; the shard takes the
   * whole table (every slice of the round up to `last`) in place of what it learned alone.
   */
  const FederatedCoWatch = Schema.TaggedStruct("FederatedCoWatch", {
    round: Nonce,
    rows: Schema.Array(CoWatchRow).check(Schema.isMaxLength(MAX_COWATCH_ROWS)),
    last: Schema.Boolean
  })
  /** Shard to worker: start a round now (POST /api/v1/federation/trigger). */
  const RoundRequest = Schema.TaggedStruct("RoundRequest", { reason: Schema.String.check(Schema.isMaxLength(256)) })

  return Schema.Union([
    Hello,
    Welcome,
    DeltaUpload,
    DeltaAck,
    GlobalUpdate,
    ContentUpdate,
    Ping,
    Pong,
    ErrorFrame,
    FederationPull,
    ShardPatterns,
    RegionUpdate,
    RoundRequest,
    CoWatchUpdate,
    ShardCoWatch,
    FederatedCoWatch
  ])
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
export type FederationPull = Extract<SyncFrame, { readonly _tag: "FederationPull" }>
export type ShardPatterns = Extract<SyncFrame, { readonly _tag: "ShardPatterns" }>
export type RegionUpdate = Extract<SyncFrame, { readonly _tag: "RegionUpdate" }>
export type RoundRequest = Extract<SyncFrame, { readonly _tag: "RoundRequest" }>
export type CoWatchUpdate = Extract<SyncFrame, { readonly _tag: "CoWatchUpdate" }>
export type ShardCoWatch = Extract<SyncFrame, { readonly _tag: "ShardCoWatch" }>
export type FederatedCoWatch = Extract<SyncFrame, { readonly _tag: "FederatedCoWatch" }>
