/** Printing results: aligned tables for people, one JSON line (always the last line) for tools. */
import { Console, Effect } from "effect"

export type Cell = string | number

const format = (cell: Cell): string =>
  typeof cell === "number"
    ? (Number.isInteger(cell) ? String(cell) : cell.toFixed(Math.abs(cell) >= 100 ? 1 : 4))
    : cell

/** An aligned text table with a header row; numbers are right-aligned. */
export const table = (rows: ReadonlyArray<Readonly<Record<string, Cell>>>): string => {
  if (rows.length === 0) return "(no rows)"
  const columns = Object.keys(rows[0]!)
  const cells = rows.map((row) => columns.map((c) => format(row[c] ?? "")))
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)))
  const numeric = columns.map((c) => rows.every((row) => typeof row[c] === "number"))
  const line = (values: ReadonlyArray<string>) =>
    values.map((v, i) => (numeric[i] ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join("  ").trimEnd()
  return [line(columns), widths.map((w) => "-".repeat(w)).join("  "), ...cells.map(line)].join("\n")
}

export const printTable = (title: string, rows: ReadonlyArray<Readonly<Record<string, Cell>>>) =>
  Console.log(`\n${title}\n${table(rows)}\n`)

/** The machine-readable result; printed last so `tail -1` finds it. */
export const printJson = (value: unknown) => Console.log(JSON.stringify(value))

/** Progress on stderr so stdout stays clean for the table and JSON. */
export const progress = (message: string) => Effect.sync(() => process.stderr.write(`${message}\n`))

/** p-th percentile (0..100) of a sample, by nearest rank. */
export const percentile = (values: ReadonlyArray<number>, p: number): number => {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]!
}

/** Counts by kind (errors, failed syncs): adds `n` to `kind`'s count. */
export const addCount = (counts: Record<string, number>, kind: string, n = 1): void => {
  counts[kind] = (counts[kind] ?? 0) + n
}

/** The sum of counts by kind. */
export const totalCount = (counts: Readonly<Record<string, number>>): number =>
  Object.values(counts).reduce((sum, n) => sum + n, 0)

/** Rounds for reports: enough digits to compare, not more. */
export const round = (value: number, digits = 3): number => Number(value.toFixed(digits))
