/** Numbers every TV and every shard must agree on. */

/** Width of every embedding: MiniLM-class sentence encoders produce 384 dimensions. */
export const EMBEDDING_DIMENSIONS = 384

/** Patterns at or above this success rate are quality patterns: the ones shards aggregate. */
export const SUCCESS_THRESHOLD = 0.7

/** A viewing counts as a success when at least this share of the item was watched. */
export const SUCCESS_WATCH_SHARE = 0.7

/** Upper bound on patterns a TV keeps in its skills tier. */
export const MAX_SKILL_PATTERNS = 10_000

/**
 * Upper bound on patterns one delta may carry: a hard schema bound (about 3 KB on the wire). The
 * brain sends at most its `maxDeltaPatterns` (20, about 1 KB) per delta.
 */
export const MAX_DELTA_PATTERNS = 64

/** Upper bound on global patterns in one download. */
export const MAX_GLOBAL_PATTERNS = 512

/** Upper bound on trend signals in one download. */
export const MAX_TRENDS = 256

/** Upper bound on recent watches carried in a context. */
export const MAX_RECENT_WATCHES = 20

/** Upper bound on co-watch neighbours listed for one catalog item. */
export const MAX_COWATCH_NEIGHBOURS = 64

/** Upper bound on catalog items whose co-watch neighbours one CoWatchUpdate carries. */
export const MAX_COWATCH_ROWS = 512

/** Upper bound on neighbours (by shared devices) of one item in a shard's co-watch counts. */
export const MAX_COWATCH_COUNT_NEIGHBOURS = 64

/** Upper bound on items whose co-watch counts one ShardCoWatch frame carries. */
export const MAX_COWATCH_COUNT_ROWS = 128
