import { assert, describe, it } from "@effect/vitest"
import { startPgliteThread } from "./PgliteThread.ts"

describe("PgliteThread", () => {
  it("answers statements, and refuses them at once after its thread has exited instead of hanging", async () => {
    const thread = await startPgliteThread(undefined)
    const { rows } = await thread.query<{ one: number }>("select 1 as one")
    assert.deepStrictEqual(rows, [{ one: 1 }])
    await thread.close()
    const refused = await Promise.race([
      thread.query("select 1").then(() => "answered", (error: Error) => error.message),
      new Promise((resolve) => setTimeout(() => resolve("hung"), 2_000))
    ])
    assert.match(String(refused), /the PGlite thread exited/)
  }, 60_000)
})
