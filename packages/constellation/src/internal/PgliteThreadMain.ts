/** The PGlite thread (see PgliteThread.ts): opens the database, then answers one statement at a time. */
import { PGlite } from "@electric-sql/pglite"
import { vector } from "@electric-sql/pglite-pgvector"
import { parentPort, workerData } from "node:worker_threads"
import type { ThreadReply } from "./PgliteThread.ts"

interface Request {
  readonly id: number
  readonly sql: string
  readonly params: Array<unknown>
  readonly rowMode: "array" | "object" | undefined
}

const port = parentPort!
const { dataDir } = workerData as { readonly dataDir: string | undefined }

const field = (error: unknown, name: string): string | undefined => {
  const value = typeof error === "object" && error !== null ? (error as Record<string, unknown>)[name] : undefined
  return value === undefined || value === null ? undefined : String(value)
}

try {
  const db = new PGlite({ ...(dataDir === undefined ? {} : { dataDir }), extensions: { vector } })
  await db.waitReady
  // Statements run one after another, in arrival order (the SqlClient already serialises them).
  let queue: Promise<void> = Promise.resolve()
  port.on("message", (message: Request | { readonly close: true }) => {
    if ("close" in message) {
      queue = queue.then(() => db.close()).finally(() => process.exit(0))
      return
    }
    queue = queue.then(async () => {
      let reply: ThreadReply
      try {
        const result = await db.query(
          message.sql,
          message.params,
          message.rowMode === undefined ? undefined : { rowMode: message.rowMode }
        )
        reply = { id: message.id, result }
      } catch (error) {
        const code = field(error, "code")
        const constraint = field(error, "constraint")
        reply = {
          id: message.id,
          error: {
            message: error instanceof Error ? error.message : String(error),
            ...(code !== undefined && { code }),
            ...(constraint !== undefined && { constraint })
          }
        }
      }
      port.postMessage(reply)
    })
  })
  port.postMessage({ ready: true })
} catch (error) {
  port.postMessage({ startError: error instanceof Error ? error.message : String(error) })
}
