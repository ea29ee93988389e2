import { assert, describe, it } from "@effect/vitest"
import { shardLayer, SyncServer } from "@omega/constellation"
import { makeDevCertificate, makeQuicIdentity, SyncTransport } from "@omega/sync"
import { Context, Duration, Effect, Layer, Redacted } from "effect"
import { FleetError } from "./Fleet.ts"
import { freePort } from "./FreePort.ts"
import { endpointOf, runSimulate, SimulateError, type SimulateOptions } from "./SimulateCommand.ts"

const SECRET = "simulate-test-secret"

/**
 * A whole shard as the server app runs it (PGlite in memory, QUIC or WebTransport, management API);
 * by default not rate-limited.
 */
const startShard = (
  { minSyncInterval = Duration.zero, transport = "quic" }: {
    readonly minSyncInterval?: Duration.Input
    readonly transport?: "quic" | "webtransport"
  } = {}
) =>
  Effect.gen(function*() {
    const identity = makeQuicIdentity()
    const certificate = yield* makeDevCertificate()
    const httpPort = yield* freePort()
    const context = yield* Layer.build(shardLayer({
      shardId: "simulated",
      region: "eu-west",
      maxDevices: 1_000,
      fleetSecret: SECRET,
      transport,
      sync: transport === "quic" ?
        { host: "127.0.0.1", port: 0, identity } :
        { host: "127.0.0.1", port: 0, certificate },
      host: "127.0.0.1",
      httpPort,
      metricsPort: 0,
      // Snapshots and pushes at once rather than every minute.
      ingestion: {
        minSyncInterval,
        pushEvery: Duration.millis(500),
        pushSpread: Duration.zero,
        snapshotEvery: Duration.millis(200)
      }
    }))
    return {
      port: Context.get(context, SyncServer).port,
      // What a TV pins, as the shard's log prints it.
      pin: transport === "quic" ? identity.peerId : certificate.sha256Hex,
      api: `http://127.0.0.1:${httpPort}`
    }
  })

const options = (shard: { port: number; pin: string; api: string }): SimulateOptions => ({
  host: "127.0.0.1",
  port: shard.port,
  transport: "quic",
  pin: shard.pin,
  secret: Redacted.make(SECRET),
  region: "eu-west",
  tvs: 40,
  // No MovieLens: the seeded synthetic world, whatever the machine has.
  dataset: "/nonexistent/ml-100k",
  rounds: 2,
  everySeconds: 0,
  api: shard.api,
  addCatalog: true,
  settleSeconds: 2,
  connectSeconds: 20,
  maxErrors: 0,
  json: false
})

describe("omega simulate", () => {
  it.live(
    "runs a fleet against a running shard: every sync with news acknowledged, devices registered, patterns back",
    () =>
      Effect.gen(function*() {
        const shard = yield* startShard()
        // No --pin: the fleet pins the peer id the shard's API reports.
        const report = yield* runSimulate({ ...options(shard), pin: undefined }).pipe(
          Effect.provide(SyncTransport.layerQuic())
        )
        assert.strictEqual(report.tvs, 40)
        assert.strictEqual(report.tvs_connected, 40)
        assert.strictEqual(report.sync_errors, 0)
        assert.deepStrictEqual(report.failures, {})
        // Two rounds of 40 TVs: each sync is acknowledged or had nothing new (no viewing in that window), and
        // every TV has viewing in some window; nothing is a replay.
        assert.strictEqual(report.syncs_acknowledged + report.syncs_idle, 80)
        assert.isAtLeast(report.syncs_acknowledged, 40)
        assert.strictEqual(report.duplicates, 0)
        assert.isAbove(report.bytes_up_per_sync, 0)
        assert.isAtMost(report.bytes_up_per_sync, 6_000)
        assert.strictEqual(report.shard?.["registeredDevices"], 40)
        assert.strictEqual(report.shard?.["deltasAccepted"], report.syncs_acknowledged)
        assert.isAbove(Number(report.shard?.["loggedDeltas"]), 0)
        // The shard's aggregated patterns came back on the open sessions, and the trends it decoded
        // from the fleet's uploads against the catalog the simulation posted.
        assert.isAbove(report.global_patterns_per_tv, 0)
        assert.isAbove(report.trends_per_tv, 0)
      }),
    120_000
  )

  it.live(
    "runs over WebTransport (the server's default transport), pinning the certificate the API reports",
    () =>
      Effect.gen(function*() {
        const shard = yield* startShard({ transport: "webtransport" })
        const report = yield* runSimulate({
          ...options(shard),
          transport: "webtransport",
          pin: undefined,
          tvs: 12,
          addCatalog: false,
          settleSeconds: 0
        }).pipe(Effect.provide(SyncTransport.layerWebTransport()))
        assert.strictEqual(report.tvs_connected, 12)
        assert.strictEqual(report.sync_errors, 0)
        assert.isAtLeast(report.syncs_acknowledged, 12)
        assert.strictEqual(report.shard?.deltasAccepted, report.syncs_acknowledged)
      }),
    60_000
  )

  it.live("fails with the shard's answer when the fleet secret is wrong", () =>
    Effect.gen(function*() {
      const shard = yield* startShard()
      const error = yield* runSimulate({
        ...options(shard),
        tvs: 3,
        secret: Redacted.make("not-the-secret"),
        addCatalog: false,
        connectSeconds: 3
      }).pipe(Effect.provide(SyncTransport.layerQuic()), Effect.flip)
      assert.instanceOf(error, FleetError)
      assert.match(error.message, /no TV could open a session/)
      assert.match(error.message, /wrong token/)
    }), 60_000)

  it.live(
    "counts syncs the shard rate-limits by its error code, and fails the run past --max-errors",
    () =>
      Effect.gen(function*() {
        // The shard's default: one sync per device per minute; the fleet's second round comes at once.
        const shard = yield* startShard({ minSyncInterval: Duration.minutes(1) })
        const quick = { ...options(shard), tvs: 12, addCatalog: false, settleSeconds: 0 }
        const report = yield* runSimulate({ ...quick, maxErrors: 1_000 }).pipe(
          Effect.provide(SyncTransport.layerQuic())
        )
        assert.deepStrictEqual(Object.keys(report.failures), ["rate-limited"])
        assert.strictEqual(report.sync_errors, report.failures["rate-limited"])
        assert.isAbove(report.sync_errors, 0)
        // The first round's syncs went through; the second round's were refused, not lost.
        assert.strictEqual(report.syncs_acknowledged + report.syncs_idle + report.sync_errors, 24)
        const verdict = yield* runSimulate(quick).pipe(Effect.provide(SyncTransport.layerQuic()), Effect.flip)
        assert.instanceOf(verdict, SimulateError)
        assert.match(verdict.message, /syncs failed \(--max-errors 0\)/)
      }),
    90_000
  )

  it.effect("rejects a pin that is not one, and bad rounds, before connecting", () =>
    Effect.gen(function*() {
      const base = { host: "127.0.0.1", port: 4433 }
      const bad = yield* Effect.flip(endpointOf({ ...base, transport: "webtransport", pin: "abc" }))
      assert.match(bad.message, /64 hex digits/)
      const empty = yield* Effect.flip(endpointOf({ ...base, transport: "quic", pin: " " }))
      assert.match(empty.message, /peer id/)
      const good = yield* endpointOf({ ...base, transport: "webtransport", pin: "ab".repeat(32) })
      assert.strictEqual(good.certificateHash?.length, 32)
      const refused = (changes: Partial<SimulateOptions>) =>
        runSimulate({ ...options({ port: 1, pin: "x", api: "http://127.0.0.1:1" }), ...changes }).pipe(
          Effect.provide(SyncTransport.layerMemory),
          Effect.flip
        )
      const unpinned = yield* refused({ pin: undefined, api: undefined, addCatalog: false })
      assert.instanceOf(unpinned, SimulateError)
      assert.match(unpinned.message, /--pin is needed without --api/)
      const catalogWithoutApi = yield* refused({ api: undefined })
      assert.instanceOf(catalogWithoutApi, SimulateError)
      assert.match(catalogWithoutApi.message, /--add-catalog needs --api/)
      const negative = yield* refused({ settleSeconds: -1 })
      assert.instanceOf(negative, SimulateError)
      assert.match(negative.message, /--settle must be 0 or more/)
      const rounds = yield* refused({ rounds: 0 })
      assert.instanceOf(rounds, SimulateError)
      assert.match(rounds.message, /--rounds must be at least 1/)
      const tvs = yield* refused({ tvs: 0 })
      assert.instanceOf(tvs, SimulateError)
      assert.match(tvs.message, /--tvs must be at least 1/)
    }))
})
