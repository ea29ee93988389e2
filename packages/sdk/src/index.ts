export type { TvEvent, TvEventListener } from "./internal/events.ts"
export * from "./OmegaError.ts"
export * from "./OmegaTv.ts"
// The types of what the SDK returns, so an app can name them without importing the packages inside it.
export type { BrainStats, ObserveResult } from "@omega/brain"
export type { Recommendation } from "@omega/protocol"
export type { SyncStatus } from "@omega/sync"
