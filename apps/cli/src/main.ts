/** `omega`: the command-line entry point for demos, evaluation and benchmarks. */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { databaseUrlFromEnv } from "@omega/constellation"
import { transportLayer } from "@omega/sync"
import { Config, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { runBrainBench } from "./BrainBench.ts"
import { runDemo } from "./DemoCommand.ts"
import { runEval } from "./EvalCommand.ts"
import { runLoadTest } from "./LoadTest.ts"
import { runSimulate } from "./SimulateCommand.ts"

const json = Flag.Boolean("json").pipe(
  Flag.withDescription("End with one JSON line of results"),
  Flag.withDefault(false)
)
const dataset = Flag.String("dataset").pipe(
  Flag.withDescription("MovieLens 100K folder (default: $OMEGA_DATASET or ../shared/data/ml-100k)"),
  Flag.optional
)

const evalCommand = Command.make(
  "eval",
  {
    json,
    dataset,
    users: Flag.Int("users").pipe(Flag.withDescription("Evaluate only the first N users"), Flag.optional),
    rounds: Flag.Int("rounds").pipe(
      Flag.withDescription("Sync and federation rounds of the federated replay"),
      Flag.optional
    ),
    dpEpsilon: Flag.Finite("dp-epsilon").pipe(
      Flag.withDescription("Also run the federated fleet with this epsilon of DP noise on every uploaded pattern"),
      Flag.optional
    ),
    validation: Flag.Boolean("validation").pipe(
      Flag.withDescription("Hold out each user's second-to-last positive instead (for tuning)"),
      Flag.withDefault(false)
    )
  },
  (flags) =>
    runEval({
      json: flags.json,
      dataset: Option.getOrUndefined(flags.dataset),
      users: Option.getOrUndefined(flags.users),
      rounds: Option.getOrUndefined(flags.rounds),
      dpEpsilon: Option.getOrUndefined(flags.dpEpsilon),
      validation: flags.validation
    })
).pipe(Command.withDescription(
  "Recommendation quality on MovieLens 100K: HR@10 and NDCG@10 per method (random, popularity, local-only, federated, central) and bytes per sync"
))

const benchBrain = Command.make(
  "bench-brain",
  {
    json,
    sizes: Flag.String("sizes").pipe(
      Flag.withDescription("Pattern counts to measure at"),
      Flag.withDefault("1000,10000")
    ),
    samples: Flag.Int("samples").pipe(Flag.withDescription("Timed calls per measurement"), Flag.withDefault(2000))
  },
  (flags) =>
    runBrainBench({ json: flags.json, sizes: flags.sizes.split(",").map(Number), samples: flags.samples }).pipe(
      Effect.scoped
    )
).pipe(Command.withDescription("Observe/recommend latency at 1K and 10K patterns, cold start and RSS"))

const demo = Command.make(
  "demo",
  {
    json,
    dataset,
    tvs: Flag.Int("tvs").pipe(
      Flag.withDescription("How many TVs to simulate (default 200 MovieLens viewers, or 400 synthetic ones)"),
      Flag.optional
    )
  },
  (flags) =>
    runDemo({
      json: flags.json,
      dataset: Option.getOrUndefined(flags.dataset),
      tvs: Option.getOrUndefined(flags.tvs)
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("A fleet of TV brains replaying viewers and recommending, with the numbers"))

const loadtest = Command.make(
  "loadtest",
  {
    json,
    sessions: Flag.Int("sessions").pipe(Flag.withDescription("Long-lived sessions to open"), Flag.withDefault(2000)),
    seconds: Flag.Int("seconds").pipe(Flag.withDescription("How long to sync"), Flag.withDefault(20)),
    rate: Flag.Int("rate").pipe(
      Flag.withDescription("Target syncs/s over all sessions (0: as fast as acks allow)"),
      Flag.withDefault(0)
    ),
    patterns: Flag.Int("patterns").pipe(Flag.withDescription("Patterns per delta"), Flag.withDefault(15)),
    tastes: Flag.Int("tastes").pipe(
      Flag.withDescription("Distinct tastes in the fleet (0: every session its own, nothing aggregates)"),
      Flag.withDefault(512)
    ),
    transport: Flag.Literals("transport", ["webtransport", "quic"]).pipe(Flag.withDefault("quic")),
    killAt: Flag.Int("kill-at").pipe(
      Flag.withDescription("Kill the shard (SIGKILL) this many seconds in, restart it, keep going"),
      Flag.withDefault(0)
    )
  },
  (flags) =>
    runLoadTest({
      json: flags.json,
      sessions: flags.sessions,
      seconds: flags.seconds,
      rate: flags.rate,
      patternsPerSync: flags.patterns,
      tastes: flags.tastes,
      transport: flags.transport,
      killAt: flags.killAt,
      databaseUrl: databaseUrlFromEnv()
    }).pipe(
      Effect.scoped,
      Effect.provide(transportLayer(flags.transport))
    )
).pipe(Command.withDescription("Sessions syncing against a shard of its own; checks nothing acknowledged was lost"))

const simulate = Command.make(
  "simulate",
  {
    json,
    dataset,
    host: Flag.String("host").pipe(Flag.withDescription("The shard's sync host"), Flag.withDefault("127.0.0.1")),
    port: Flag.Int("port").pipe(Flag.withDescription("The shard's sync port (SYNC_PORT)"), Flag.withDefault(4433)),
    transport: Flag.Literals("transport", ["webtransport", "quic"]).pipe(
      Flag.withDescription("The shard's TRANSPORT"),
      Flag.withDefault("webtransport")
    ),
    pin: Flag.String("pin").pipe(
      Flag.withDescription(
        "QUIC: the shard's peer id; WebTransport: its certificate's SHA-256 in hex (both in its start-up log). " +
          "Default: what --api's /api/v1/shards reports"
      ),
      Flag.optional
    ),
    secret: Flag.Redacted("fleet-secret").pipe(
      Flag.withDescription("The shard's FLEET_SECRET, which device tokens derive from (default: $FLEET_SECRET)"),
      Flag.withFallbackConfig(Config.Redacted("FLEET_SECRET"))
    ),
    region: Flag.String("region").pipe(
      Flag.withDescription("The region the TVs say they are in (the shard aggregates per region)"),
      Flag.withDefault("eu-west")
    ),
    tvs: Flag.Int("tvs").pipe(
      Flag.withDescription("TVs to simulate (co-watch rows need a few hundred: k devices behind each pair)"),
      Flag.withDefault(50)
    ),
    rounds: Flag.Int("rounds").pipe(Flag.withDescription("Replay-and-sync rounds"), Flag.withDefault(3)),
    every: Flag.Int("every").pipe(
      Flag.withDescription("Seconds between rounds (the shard takes one sync per device per MIN_SYNC_INTERVAL_MS)"),
      Flag.withDefault(65)
    ),
    api: Flag.String("api").pipe(
      Flag.withDescription("The shard's management API, e.g. http://127.0.0.1:8080: federation each round, stats"),
      Flag.optional
    ),
    settle: Flag.Int("settle").pipe(
      Flag.withDescription("Seconds to wait after the last round for the shard's pushes (its PUSH_EVERY_MS)"),
      Flag.withDefault(70)
    ),
    connectTimeout: Flag.Int("connect-timeout").pipe(
      Flag.withDescription("Seconds to wait for the TVs' sessions to open"),
      Flag.withDefault(30)
    ),
    maxErrors: Flag.Int("max-errors").pipe(
      Flag.withDescription("Failed syncs allowed before the run fails (exit status 1)"),
      Flag.withDefault(0)
    ),
    addCatalog: Flag.Boolean("add-catalog").pipe(
      Flag.withDescription("POST the simulated catalog to the API first, so the shard can decode trends (dev shards)"),
      Flag.withDefault(false)
    )
  },
  (flags) =>
    runSimulate({
      json: flags.json,
      dataset: Option.getOrUndefined(flags.dataset),
      host: flags.host,
      port: flags.port,
      transport: flags.transport,
      pin: Option.getOrUndefined(flags.pin),
      secret: flags.secret,
      region: flags.region,
      tvs: flags.tvs,
      rounds: flags.rounds,
      everySeconds: flags.every,
      api: Option.getOrUndefined(flags.api),
      addCatalog: flags.addCatalog,
      settleSeconds: flags.settle,
      connectSeconds: flags.connectTimeout,
      maxErrors: flags.maxErrors
    }).pipe(Effect.scoped, Effect.provide(transportLayer(flags.transport)))
).pipe(Command.withDescription("A fleet of simulated TVs syncing with a running shard, and what it got back"))

const omega = Command.make("omega").pipe(
  Command.withDescription("Omega: edge-first TV recommendations"),
  Command.withSubcommands([demo, evalCommand, benchBrain, loadtest, simulate])
)

omega.pipe(
  Command.run({ version: "0.1.0" }),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain
)
