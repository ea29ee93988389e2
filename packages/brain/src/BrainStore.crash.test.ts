import { assert, describe, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { BrainStore } from "./BrainStore.ts"
import { contentIdOf, patternIdOf, PATTERNS } from "./testing/crashWriter.ts"

const WRITER = fileURLToPath(new URL("./testing/crashWriter.ts", import.meta.url))
const ROUNDS = 3

interface WriterRun {
  /** Local version the writer found on opening the database. */
  readonly resumedAt: number
  /** Content ids the writer reported as committed, in order. */
  readonly committed: ReadonlyArray<string>
  readonly signal: NodeJS.Signals | null
  readonly code: number | null
  readonly stderr: string
}

/** Runs the writer against `path` and SIGKILLs it once it has reported `killAfter` committed events. */
const runWriterUntilKilled = (path: string, killAfter: number) =>
  Effect.callback<WriterRun, Error>((resume) => {
    const child = spawn(process.execPath, [WRITER, path, "20"], { stdio: ["ignore", "pipe", "pipe"] })
    let resumedAt = -1
    const committed: Array<string> = []
    let pending = ""
    let stderr = ""
    child.stdout.setEncoding("utf8")
    child.stderr.setEncoding("utf8")
    child.stdout.on("data", (chunk: string) => {
      // Only whole lines count: the writer prints a line after its commit, in one write.
      const lines = (pending + chunk).split("\n")
      pending = lines.pop()!
      for (const line of lines) {
        if (line.startsWith("ready ")) resumedAt = Number(line.slice("ready ".length))
        else committed.push(line)
      }
      if (committed.length >= killAfter && child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL")
      }
    })
    child.stderr.on("data", (chunk: string) => {
      stderr += chunk
    })
    child.on("error", (error) => resume(Effect.fail(error)))
    child.on("close", (code, signal) => resume(Effect.succeed({ resumedAt, committed, signal, code, stderr })))
    // Interrupted (test timeout): kill the writer this test started.
    return Effect.sync(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    })
  })

const tempDir = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "brain-crash-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
)

/** SQLite's own verdict on the file, from a separate connection. */
const integrityOf = (path: string) =>
  Effect.acquireUseRelease(
    Effect.sync(() => new Database(path, { readonly: true })),
    (db) => Effect.sync(() => db.pragma("integrity_check", { simple: true })),
    (db) => Effect.sync(() => db.close())
  )

describe("BrainStore crash safety", () => {
  it.live(
    "a writer killed with SIGKILL mid-write loses no committed event and leaves a consistent database",
    () =>
      Effect.gen(function*() {
        const path = Path.join(yield* tempDir, "brain.db")
        let previousLocal = 0
        let reportedTotal = 0
        for (let round = 1; round <= ROUNDS; round++) {
          const killAfter = 150 + Math.floor(Math.random() * 300)
          const run = yield* runWriterUntilKilled(path, killAfter).pipe(Effect.timeout("8 seconds"))
          const label = `round ${round} (kill after ${killAfter} reports)`
          assert.strictEqual(run.signal, "SIGKILL", `${label}: writer exited with code ${run.code}: ${run.stderr}`)
          assert.strictEqual(run.resumedAt, previousLocal, `${label}: writer resumed at the stored version`)
          assert.isAtLeast(run.committed.length, killAfter, label)
          // Reports are consecutive observations starting right after the resumed version.
          assert.deepStrictEqual(
            run.committed,
            run.committed.map((_, i) => contentIdOf(previousLocal + 1 + i)),
            label
          )
          const lastReported = previousLocal + run.committed.length
          reportedTotal += run.committed.length

          const { eventCount, snapshot } = yield* Effect.gen(function*() {
            const store = yield* BrainStore
            return { snapshot: yield* store.load(1_000_000), eventCount: yield* store.eventCount }
          }).pipe(Effect.provide(BrainStore.layer({ path })))
          const local = snapshot.versions.local

          // At most the one event committed between its commit and its report can be unreported.
          assert.include([lastReported, lastReported + 1], local, `${label}: local version ${local}`)
          // Every observation up to the local version is there, in order, with no gap and nothing extra.
          assert.strictEqual(eventCount, local, label)
          assert.deepStrictEqual(
            snapshot.recentEvents.map((e): string => e.contentId),
            Array.from({ length: local }, (_, i) => contentIdOf(i + 1)),
            label
          )
          assert.strictEqual(snapshot.watched.length, local, label)
          assert.isAtLeast(local, reportedTotal, label)

          // Each event was written with its pattern in one transaction: pattern p-(v % 8) holds the newest such v.
          assert.strictEqual(snapshot.patterns.length, Math.min(PATTERNS, local), label)
          for (const p of snapshot.patterns) {
            const residue = Number(p.id.slice("p-".length))
            const expected = local - ((local - residue) % PATTERNS + PATTERNS) % PATTERNS
            assert.strictEqual(p.id, patternIdOf(p.version), label)
            assert.strictEqual(p.version, expected, `${label}: ${p.id}`)
            assert.strictEqual(p.sampleCount, p.version, `${label}: ${p.id} written whole`)
            assert.strictEqual(p.exemplar, contentIdOf(p.version), `${label}: ${p.id} written whole`)
          }
          assert.strictEqual(Math.max(...snapshot.patterns.map((p) => p.version)), local, label)

          assert.strictEqual(yield* integrityOf(path), "ok", label)
          previousLocal = local
        }
      }),
    20_000
  )
})
