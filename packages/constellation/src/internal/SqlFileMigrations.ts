/**
 * Loads `NNN_name.sql` files for effect's Migrator. Each file runs statement by statement,
 * because @effect/sql-pg (and PGlite's query) use the extended protocol, which takes one
 * statement per call.
 */
import { Effect } from "effect"
import { Migrator, SqlClient } from "effect/sql"
import * as Fs from "node:fs/promises"
import * as Path from "node:path"

const FILE_NAME = /^(\d+)_([^.]+)\.sql$/

/** A Migrator loader for the `.sql` files in `directory`, ordered by their numeric prefix. */
export const sqlFileLoader = (directory: string): Migrator.Loader =>
  Effect.gen(function*() {
    const names = yield* Effect.tryPromise({
      try: () => Fs.readdir(directory),
      catch: (cause) =>
        new Migrator.MigrationError({
          kind: "ImportError",
          message: `cannot read the migrations directory ${directory}: ${String(cause)}`,
          cause
        })
    })
    const migrations: Array<Migrator.ResolvedMigration> = []
    for (const file of names.slice().sort()) {
      const match = FILE_NAME.exec(file)
      if (match === null) continue
      const path = Path.join(directory, file)
      const run = Effect.gen(function*() {
        const text = yield* Effect.tryPromise(() => Fs.readFile(path, "utf8"))
        const sql = yield* SqlClient.SqlClient
        for (const statement of splitStatements(text)) yield* sql.unsafe(statement)
      })
      migrations.push([Number(match[1]), match[2]!, Effect.succeed(run)])
    }
    return migrations.sort(([a], [b]) => a - b)
  })

/**
 * Splits a script at top-level semicolons, skipping those inside quotes, dollar quotes and
 * comments; comment-only pieces are dropped.
 */
export const splitStatements = (script: string): Array<string> => {
  const statements: Array<string> = []
  let start = 0
  let i = 0
  const push = (end: number) => {
    const piece = script.slice(start, end)
    if (stripComments(piece).trim() !== "") statements.push(piece.trim())
    start = end + 1
  }
  while (i < script.length) {
    const c = script[i]!
    if (c === "-" && script[i + 1] === "-") {
      const end = script.indexOf("\n", i)
      i = end === -1 ? script.length : end + 1
    } else if (c === "/" && script[i + 1] === "*") {
      const end = script.indexOf("*/", i + 2)
      i = end === -1 ? script.length : end + 2
    } else if (c === "'" || c === "\"") {
      let j = i + 1
      while (j < script.length && !(script[j] === c && script[j + 1] !== c)) j += script[j] === c ? 2 : 1
      i = j + 1
    } else if (c === "$") {
      const tag = /^\$[A-Za-z_]*\$/.exec(script.slice(i))?.[0]
      if (tag === undefined) {
        i++
      } else {
        const end = script.indexOf(tag, i + tag.length)
        i = end === -1 ? script.length : end + tag.length
      }
    } else if (c === ";") {
      push(i)
      i++
    } else {
      i++
    }
  }
  push(script.length)
  return statements
}

const stripComments = (sql: string) => sql.replace(/--[^\n]*/g, "").replace(/\/\*[\s\S]*?\*\//g, "")
