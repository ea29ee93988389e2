/**
 * Child process for BrainStore.crash.test.ts: records observations into the brain database at
 * `argv[2]` in a tight loop until it is killed, continuing from the stored local version.
 * Prints `ready <local version>` once, then `<contentId>` for each event only after its
 * `recordObservation` committed, so the parent knows exactly which events must survive.
 *
 * Event and pattern of observation `v` (the local version it creates) are derived from `v`:
 * content `crash-<v>`, pattern `p-<v % PATTERNS>` written at version `v` with `sampleCount = v`.
 *
 *   node packages/brain/src/testing/crashWriter.ts <path> [maxSeconds]
 */
import { type ContentId, decoder, EMBEDDING_DIMENSIONS, type PatternId, ViewingEvent } from "@omega/protocol"
import { Effect } from "effect"
import { BrainStore, type LocalPattern } from "../BrainStore.ts"

/** How many patterns the writer cycles through. */
export const PATTERNS = 8

const T0 = 1_700_000_000_000

const decodeEvent = decoder(ViewingEvent, "ViewingEvent")

export const contentIdOf = (version: number) => `crash-${version}` as ContentId
export const patternIdOf = (version: number) => `p-${version % PATTERNS}` as PatternId

const embeddingOf = (version: number) => {
  const v = new Float32Array(EMBEDDING_DIMENSIONS)
  for (let i = 0; i < v.length; i++) v[i] = Math.cos(version * 0.37 + i)
  return v
}

const patternOf = (version: number): LocalPattern => ({
  id: patternIdOf(version),
  embedding: embeddingOf(version),
  successRate: 0.5,
  sampleCount: version,
  context: { timeOfDay: "evening" },
  createdAt: T0,
  updatedAt: T0 + version,
  version,
  createdVersion: Math.max(1, version - PATTERNS + 1),
  exemplar: contentIdOf(version)
})

const program = (path: string, maxSeconds: number) =>
  Effect.gen(function*() {
    const store = yield* BrainStore
    const { versions } = yield* store.load(0)
    process.stdout.write(`ready ${versions.local}\n`)
    const deadline = Date.now() + maxSeconds * 1000
    let version = versions.local
    while (Date.now() < deadline) {
      version += 1
      // Decoding through the protocol schema also proves the workspace package resolved at runtime.
      const event = yield* decodeEvent({
        contentId: contentIdOf(version),
        title: `Crash ${version}`,
        genres: ["Test"],
        watchedAt: T0 + version,
        watchShare: 0.9,
        context: { timeOfDay: "evening", dayType: "weekday", recentWatches: [] }
      })
      yield* store.recordObservation(event, patternOf(version))
      process.stdout.write(`${event.contentId}\n`)
    }
  }).pipe(Effect.provide(BrainStore.layer({ path })))

// Only as a program: the crash test imports the naming rules above without starting a writer.
if (import.meta.main) {
  const [path, maxSeconds = "30"] = process.argv.slice(2)
  if (path === undefined) {
    process.stderr.write("usage: crashWriter.ts <path> [maxSeconds]\n")
    process.exitCode = 2
  } else {
    Effect.runPromise(program(path, Number(maxSeconds))).catch((error: unknown) => {
      process.stderr.write(`crashWriter failed: ${String(error)}\n`)
      process.exitCode = 1
    })
  }
}
