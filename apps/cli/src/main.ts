/** `omega`: the command-line entry point for demos, evaluation and benchmarks. */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { SyncTransport } from "@omega/sync"
import { Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { runBrainBench } from "./BrainBench.ts"
import { runDemo } from "./DemoCommand.ts"
import { runEval } from "./EvalCommand.ts"
import { runLoadTest } from "./LoadTest.ts"

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
      killAt: flags.killAt
    }).pipe(
      Effect.scoped,
      Effect.provide(flags.transport === "quic" ? SyncTransport.layerQuic() : SyncTransport.layerWebTransport())
    )
).pipe(Command.withDescription("Sessions syncing against a shard of its own; checks nothing acknowledged was lost"))

const omega = Command.make("omega").pipe(
  Command.withDescription("Omega: edge-first TV recommendations"),
  Command.withSubcommands([demo, evalCommand, benchBrain, loadtest])
)

omega.pipe(
  Command.run({ version: "0.1.0" }),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain
)
