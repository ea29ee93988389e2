/**
 * PGlite on a thread of its own. PGlite is PostgreSQL compiled to WebAssembly: every statement
 * runs synchronously on the thread that owns it, so on a shard's main thread each group commit
 * and snapshot write stalls the sessions for as long as it takes. Here the database lives in a
 * worker thread and statements travel as messages; the main thread only waits for the answers.
 * Only `query` is offered: it is all `PgliteSqlClient` uses.
 */
import type { Results } from "@electric-sql/pglite"
import { Worker } from "node:worker_threads"

/** The part of PGlite a SqlClient needs. */
export interface PgliteQueryable {
  query<Row>(sql: string, params?: Array<unknown>, options?: { rowMode?: "array" | "object" }): Promise<Results<Row>>
}

export interface PgliteThread extends PgliteQueryable {
  /** Closes the database (a clean shutdown) and ends the thread. */
  readonly close: () => Promise<void>
}

/** What the thread answers: a result, or an error carrying PostgreSQL's SQLSTATE fields. */
export type ThreadReply =
  | { readonly id: number; readonly result: Results<unknown> }
  | {
    readonly id: number
    readonly error: { readonly message: string; readonly code?: string; readonly constraint?: string }
  }

/** An error from the thread, shaped like PGlite's DatabaseError for the SqlClient's classification. */
class ThreadDatabaseError extends Error {
  readonly code: string | undefined
  readonly constraint: string | undefined
  constructor(error: { readonly message: string; readonly code?: string; readonly constraint?: string }) {
    super(error.message)
    this.code = error.code
    this.constraint = error.constraint
  }
}

/** Starts PGlite (with pgvector) on a worker thread; resolves once it accepts statements. */
export const startPgliteThread = (dataDir: string | undefined): Promise<PgliteThread> =>
  new Promise((resolve, reject) => {
    const worker = new Worker(new URL("./PgliteThreadMain.ts", import.meta.url), { workerData: { dataDir } })
    const pending = new Map<number, { resolve: (r: Results<unknown>) => void; reject: (e: Error) => void }>()
    let nextId = 1
    let ready = false
    let exited: Error | undefined
    const failAll = (error: Error) => {
      for (const p of pending.values()) p.reject(error)
      pending.clear()
    }
    worker.on("message", (message: ThreadReply | { readonly ready: true } | { readonly startError: string }) => {
      if ("ready" in message) {
        ready = true
        resolve(thread)
        return
      }
      if ("startError" in message) {
        reject(new Error(message.startError))
        return
      }
      const waiting = pending.get(message.id)
      if (waiting === undefined) return
      pending.delete(message.id)
      if ("error" in message) waiting.reject(new ThreadDatabaseError(message.error))
      else waiting.resolve(message.result)
    })
    worker.on("error", (error) => {
      failAll(error)
      if (!ready) reject(error)
    })
    worker.on("exit", (code) => {
      exited = new Error(`the PGlite thread exited (${code})`)
      failAll(exited)
      if (!ready) reject(new Error(`the PGlite thread exited (${code}) before it was ready`))
    })
    const thread: PgliteThread = {
      query: <Row>(sql: string, params: Array<unknown> = [], options?: { rowMode?: "array" | "object" }) =>
        new Promise<Results<Row>>((resolveQuery, rejectQuery) => {
          // Posted to a thread that has exited, it would never be answered: every write would hang.
          if (exited !== undefined) return rejectQuery(exited)
          const id = nextId++
          pending.set(id, {
            resolve: resolveQuery as (r: Results<unknown>) => void,
            reject: rejectQuery
          })
          worker.postMessage({ id, sql, params, rowMode: options?.rowMode })
        }),
      close: () =>
        new Promise<void>((resolveClose) => {
          if (exited !== undefined) return resolveClose()
          worker.once("exit", () => resolveClose())
          worker.postMessage({ close: true })
          // A database that does not close in time is ended with its thread.
          setTimeout(() => void worker.terminate(), 10_000).unref()
        })
    }
  })
