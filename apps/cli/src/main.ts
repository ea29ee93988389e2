/** `omega`: the command-line entry point for demos, evaluation and benchmarks. */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { runEval } from "./EvalCommand.ts"

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
    users: Flag.Int("users").pipe(Flag.withDescription("Evaluate only the first N users"), Flag.optional)
  },
  (flags) =>
    runEval({
      json: flags.json,
      dataset: Option.getOrUndefined(flags.dataset),
      users: Option.getOrUndefined(flags.users)
    })
).pipe(Command.withDescription("Recommendation quality on MovieLens 100K: HR@10 and NDCG@10 per method"))

const omega = Command.make("omega").pipe(
  Command.withDescription("Omega: edge-first TV recommendations"),
  Command.withSubcommands([evalCommand])
)

omega.pipe(
  Command.run({ version: "0.1.0" }),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain
)
