import { assert, describe, it } from "@effect/vitest"
import { type TvEvent, TvEvents } from "./events.ts"

const connected = (session: number): TvEvent => ({ type: "connected", session })
const disconnected: TvEvent = { type: "disconnected", reason: "error", message: "connection reset" }
const update: TvEvent = { type: "global-patterns", version: 3, patterns: 2, trends: 1 }
/** Lets queued microtasks (a late listener's `connected`) and settled promises run. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 0))

describe("TvEvents (the SDK's listeners)", () => {
  it("tells a listener added during a session of that session first, once", async () => {
    const events = new TvEvents(() => assert.fail("no listener fails here"))
    events.dispatch(connected(2))
    const told: Array<TvEvent> = []
    events.add((event) => told.push(event))
    assert.deepStrictEqual(told, [], "not inside add")
    await settle()
    events.dispatch(update)
    assert.deepStrictEqual(told, [connected(2), update])

    // Added while no session is open: told nothing until one opens.
    events.dispatch(disconnected)
    const later: Array<TvEvent> = []
    events.add((event) => later.push(event))
    await settle()
    assert.deepStrictEqual(later, [])
    // Added during a session that ends before its turn: not told of a session that is gone.
    events.dispatch(connected(3))
    const late: Array<TvEvent> = []
    events.add((event) => late.push(event))
    events.dispatch(disconnected)
    await settle()
    assert.deepStrictEqual(late, [disconnected])
  })

  it("calls the listeners registered when an event came, and not a removed one", () => {
    const events = new TvEvents(() => assert.fail("no listener fails here"))
    const calls: Array<string> = []
    events.add((event) => {
      calls.push(`first ${event.type}`)
      // A listener added by a listener starts with the next event.
      if (event.type === "content") events.add((e) => calls.push(`added ${e.type}`))
    })
    const removeSecond = events.add((event) => calls.push(`second ${event.type}`))
    events.dispatch({ type: "content", items: 1 })
    removeSecond()
    events.dispatch(update)
    assert.deepStrictEqual(calls, ["first content", "second content", "first global-patterns", "added global-patterns"])
  })

  it("reports a listener that throws or rejects, and still calls the others", async () => {
    const reported: Array<string> = []
    const events = new TvEvents((failure, event) => reported.push(`${event.type}: ${(failure as Error).message}`))
    const told: Array<string> = []
    events.add(() => {
      throw new Error("a bug in the app")
    })
    events.add(async () => {
      throw new Error("an async bug")
    })
    events.add((event) => told.push(event.type))
    events.dispatch(update)
    await settle()
    assert.deepStrictEqual(told, ["global-patterns"])
    assert.sameMembers(reported, ["global-patterns: a bug in the app", "global-patterns: an async bug"])
  })

  it("stops calling every listener once cleared (the TV closed)", () => {
    const events = new TvEvents(() => {})
    let calls = 0
    events.add(() => calls++)
    events.clear()
    events.dispatch(update)
    assert.strictEqual(calls, 0)
  })
})
