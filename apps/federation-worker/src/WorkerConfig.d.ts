import { Config, Duration, Effect } from "effect"
declare const WorkerConfigError_base: new<A extends Record<string, any> = {}>(
  args: import("effect/Types").VoidIfEmpty<{ readonly [P in keyof A as P extends "_tag" ? never : P]: A[P] }>
) => import("effect/Cause").YieldableError & {
  readonly _tag: "WorkerConfigError"
} & Readonly<A>
export declare class WorkerConfigError extends WorkerConfigError_base<{
  readonly message: string
}> {
}
export declare const workerConfig: Config.Config<{
  workerId: string
  fleetSecret: import("effect/Redacted").Redacted<string>
  shards: string
  transport: "webtransport" | "quic"
  everyMs: number
  minDevices: number
  metricsPort: number
  host: string
}>
/** Parses SHARDS into endpoints; a malformed entry is a typed error naming it. */
export declare const parseShards: (spec: string, transport: "webtransport" | "quic") => Effect.Effect<
  {
    shardId: string
    endpoint: {
      host: string
      port: number
      serverPeerId: string
      certificateHash?: never
    } | {
      host: string
      port: number
      certificateHash: Uint8Array<ArrayBuffer>
      serverPeerId?: never
    }
  }[],
  WorkerConfigError,
  never
>
export declare const roundEvery: (ms: number) => Duration.Duration
export {}
// # sourceMappingURL=WorkerConfig.d.ts.map
