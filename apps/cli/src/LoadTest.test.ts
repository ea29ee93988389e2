import { assert, describe, it } from "@effect/vitest"
import { databaseUrlFromEnv, ShardStorage } from "@omega/constellation"
import { transportLayer } from "@omega/sync"
import { Effect } from "effect"
import { type LoadTestOptions, runLoadTest } from "./LoadTest.ts"

const DATABASE_URL = databaseUrlFromEnv()
if (DATABASE_URL === undefined) {
  console.log(
    "omega loadtest: the PostgreSQL case is skipped because OMEGA_DATABASE_URL (or POSTGRES_URL) is not set"
  )
}

/** A small load test on QUIC: 15 patterns per sync from a fleet of 8 tastes, on PGlite unless told. */
const smallLoadTest = (options: Pick<LoadTestOptions, "sessions" | "seconds" | "rate"> & Partial<LoadTestOptions>) =>
  runLoadTest({
    patternsPerSync: 15,
    tastes: 8,
    transport: "quic",
    killAt: 0,
    json: false,
    databaseUrl: undefined,
    ...options
  }).pipe(Effect.scoped, Effect.provide(transportLayer("quic")))

describe("omega loadtest", () => {
  // The promise the load test's numbers rest on, small: a shard process (PGlite on disk) killed
  // with SIGKILL mid-run and restarted keeps every pattern it acknowledged, and the sessions come
  // back without an error.
  it.live(
    "kills the shard mid-run and restarts it: every acknowledged pattern is stored",
    () =>
      Effect.gen(function*() {
        const result = yield* smallLoadTest({ sessions: 40, seconds: 12, rate: 40, killAt: 2 })
        assert.strictEqual(result.killed_and_restarted, "yes")
        assert.strictEqual(result.sessions_open, 40)
        assert.strictEqual(result.errors, 0, result.error_kinds)
        // At 40 syncs/s the 2 s before the kill hold at most ~80 acks: more means the sessions
        // synced again with the restarted shard.
        assert.isAbove(Math.round(result.syncs_per_s * result.seconds), 100)
        assert.isAbove(result.acked_patterns, 0)
        assert.strictEqual(result.lost, 0)
        assert.isAtLeast(result.stored_patterns, result.acked_patterns)
      }),
    90_000
  )

  it.live.skipIf(DATABASE_URL === undefined)(
    "on PostgreSQL: every acknowledged pattern is stored, and the run's schema is dropped afterwards",
    () =>
      Effect.gen(function*() {
        const url = DATABASE_URL!
        const result = yield* smallLoadTest({ sessions: 20, seconds: 3, rate: 20, databaseUrl: url })
        assert.strictEqual(result.storage, "PostgreSQL")
        assert.strictEqual(result.errors, 0, result.error_kinds)
        assert.isAbove(result.acked_patterns, 0)
        assert.strictEqual(result.lost, 0)
        assert.match(result.database_schema, /^loadtest_/)
        // Nothing left to drop: the load test dropped its schema itself.
        assert.deepStrictEqual(yield* ShardStorage.dropPgSchemas(url, [result.database_schema]), [])
      }),
    60_000
  )
})
