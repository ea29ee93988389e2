/**
 * Effect's `SqlClient` over an in-process PGlite (on this thread or its own, see PgliteThread),
 * so the embedded store runs the same
 * statements through the same compiler as @effect/sql-pg. (@effect/sql-pglite exists only
 * as a beta built against effect's former `unstable/sql` modules and PGlite 0.4.)
 */
import { PgClient } from "@effect/sql-pg"
import type { Results } from "@electric-sql/pglite"
import { Effect, Semaphore, Stream } from "effect"
import { SqlClient } from "effect/sql"
import type { Connection } from "effect/sql/SqlConnection"
import {
  ConstraintError,
  SerializationError,
  SqlError,
  type SqlErrorReason,
  SqlSyntaxError,
  UniqueViolation,
  UnknownError
} from "effect/sql/SqlError"
import type { PgliteQueryable } from "./PgliteThread.ts"

type TransformRows = (<A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined

/** A SqlClient that serialises every statement and transaction on the one PGlite session. */
export const makePgliteSqlClient = (pglite: PgliteQueryable) =>
  Effect.gen(function*() {
    const connection = new PgliteConnection(pglite)
    // PGlite is a single session: a statement from one fiber must never land inside another
    // fiber's open transaction, so both acquirers hold the one permit for their whole scope.
    const acquirers = SqlClient.makeSqliteAcquirers({
      connection: Effect.succeed(connection),
      semaphore: yield* Semaphore.make(1)
    })
    return yield* SqlClient.make({
      acquirer: acquirers.acquirer,
      borrower: acquirers.borrower,
      transactionAcquirer: acquirers.transactionAcquirer,
      compiler: PgClient.makeCompiler(),
      driver: "pglite",
      spanAttributes: [["db.system.name", "postgresql"]]
    })
  })

class PgliteConnection implements Connection {
  readonly pglite: PgliteQueryable
  constructor(pglite: PgliteQueryable) {
    this.pglite = pglite
  }

  private query<Row = Record<string, unknown>>(sql: string, params: ReadonlyArray<unknown>, rowMode?: "array") {
    return Effect.tryPromise({
      try: (): Promise<Results<Row>> =>
        this.pglite.query<Row>(sql, params as Array<unknown>, rowMode === undefined ? undefined : { rowMode }),
      catch: (cause) => new SqlError({ reason: classify(cause) })
    })
  }

  private rows(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    return Effect.map(
      this.query(sql, params),
      (result) => transformRows === undefined ? result.rows : transformRows(result.rows)
    )
  }

  execute(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    return this.rows(sql, params, transformRows)
  }
  executeRaw(sql: string, params: ReadonlyArray<unknown>) {
    return this.query(sql, params)
  }
  executeStream(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    return Stream.fromArrayEffect(this.rows(sql, params, transformRows))
  }
  executeValues(sql: string, params: ReadonlyArray<unknown>) {
    return Effect.map(this.query<ReadonlyArray<unknown>>(sql, params, "array"), (result) => result.rows)
  }
  executeValuesUnprepared(sql: string, params: ReadonlyArray<unknown>) {
    return this.executeValues(sql, params)
  }
  // Like @effect/sql-pg, one statement per call (PGlite's query uses the extended protocol).
  executeUnprepared(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    return this.rows(sql, params, transformRows)
  }
}

/** Maps a PGlite DatabaseError (with its SQLSTATE `code`) to the reason @effect/sql-pg would give. */
const classify = (cause: unknown): SqlErrorReason => {
  const code = typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : ""
  const message = cause instanceof Error ? cause.message : String(cause)
  const props = { cause, message: `PGlite: ${message}`, operation: "query" }
  if (code === "23505") {
    const constraint = typeof cause === "object" && cause !== null && "constraint" in cause
      ? String(cause.constraint)
      : "unknown"
    return new UniqueViolation({ ...props, constraint })
  }
  if (code.startsWith("23")) return new ConstraintError(props)
  if (code.startsWith("42")) return new SqlSyntaxError(props)
  if (code === "40001") return new SerializationError(props)
  return new UnknownError(props)
}
