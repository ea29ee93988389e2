import { afterEach, assert, describe, it } from "@effect/vitest"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { OmegaError, type OmegaErrorCode } from "./OmegaError.ts"
import { type ContentInput, OmegaTv, type OmegaTvOptions, type ViewContextInput } from "./OmegaTv.ts"

const catalog: Array<ContentInput> = ["Comedy", "Horror"].flatMap((genre) =>
  ["Harbor", "Winter", "Signal", "Meadow"].map((word, i) => ({
    contentId: `${genre.toLowerCase()}-${i}`,
    title: `${genre} ${word} (199${i})`,
    genres: [genre]
  }))
)
const evening: ViewContextInput = { timeOfDay: "evening", dayType: "weekday", recentWatches: [] }
const watch = (contentId: string, at: number) => {
  const item = catalog.find((c) => c.contentId === contentId)!
  return { contentId, title: item.title, genres: item.genres, watchedAt: at, watchShare: 0.9, context: evening }
}

const directories: Array<string> = []
const brainPath = () => {
  const dir = mkdtempSync(join(tmpdir(), "omega-sdk-"))
  directories.push(dir)
  return join(dir, "brain.db")
}
afterEach(() => {
  for (const dir of directories.splice(0)) rmSync(dir, { recursive: true, force: true })
})

/** The OmegaError `promise` rejects with; fails the test when it resolves or rejects otherwise. */
const rejection = async (promise: Promise<unknown>, code: OmegaErrorCode): Promise<OmegaError> => {
  try {
    await promise
  } catch (error) {
    assert.instanceOf(error, OmegaError)
    assert.strictEqual((error as OmegaError).code, code, (error as OmegaError).message)
    return error as OmegaError
  }
  return assert.fail(`expected a rejection with code ${code}`)
}

const quiet = { learningLoops: false } as const

describe("OmegaTv (Promise API)", () => {
  it("learns, recommends and keeps what it learned across a restart", async () => {
    const path = brainPath()
    const tv = await OmegaTv.open({ path, ...quiet })
    await tv.addContent(catalog)
    for (const [n, id] of ["comedy-0", "comedy-1", "comedy-0"].entries()) {
      await tv.observe(watch(id, 1_700_000_000_000 + n * 60_000))
    }
    const suggestions = await tv.recommend({ ...evening, recentWatches: ["comedy-0", "comedy-1"] }, 3)
    assert.lengthOf(suggestions, 3)
    assert.notInclude(
      suggestions.map((s): string => s.contentId),
      "comedy-0",
      "what was watched is not suggested again"
    )
    assert.strictEqual(suggestions[0]!.contentId.split("-")[0], "comedy")
    const before = await tv.status()
    assert.strictEqual(before.brain.catalogItems, catalog.length)
    assert.isAbove(before.brain.patterns, 0)
    assert.isUndefined(before.sync)
    await tv.close()

    await using reopened = await OmegaTv.open({ path, ...quiet })
    const after = await reopened.status()
    assert.strictEqual(after.brain.patterns, before.brain.patterns)
    assert.strictEqual(after.brain.catalogItems, catalog.length)
    assert.deepStrictEqual(after.brain.versions, before.brain.versions)
  })

  it("refuses bad input with invalid-input and keeps everything stored", async () => {
    await using tv = await OmegaTv.open({ path: ":memory:", ...quiet })
    await tv.addContent(catalog)
    await tv.observe(watch("horror-2", 1_700_000_000_000))
    const before = await tv.status()

    const badEvent = await rejection(tv.observe({ ...watch("horror-1", 1), watchShare: 1.5 }), "invalid-input")
    assert.match(badEvent.message, /watchShare/)
    await rejection(tv.observe(JSON.parse("{\"contentId\":\"x\"}")), "invalid-input")
    const badContext = await rejection(tv.recommend({ ...evening, timeOfDay: "noon" as "night" }), "invalid-input")
    assert.match(badContext.message, /timeOfDay/)
    // One bad item refuses the whole batch: the good item before it is not stored either.
    const badItems = [
      { contentId: "new-1", title: "New One (2024)", genres: ["Drama"] },
      { contentId: "new-2", title: "New Two (2024)", genres: ["Drama"], embedding: new Float32Array(7) }
    ]
    const badItem = await rejection(tv.addContent(badItems), "invalid-input")
    assert.match(badItem.message, /384 dimensions/)

    assert.deepStrictEqual(await tv.status(), before)
  })

  it("refuses options it cannot use, naming the option", async () => {
    const shard = {
      transport: "webtransport",
      host: "127.0.0.1",
      port: 4433,
      pin: "ab".repeat(32),
      deviceId: "tv-1",
      token: "secret",
      region: "eu-west"
    } as const
    const refused = (options: OmegaTvOptions) => rejection(OmegaTv.open(options), "invalid-options")
    assert.match((await refused({ path: "" })).message, /path/)
    assert.match((await refused({ path: ":memory:", shard: { ...shard, port: 0 } })).message, /port/)
    assert.match((await refused({ path: ":memory:", shard: { ...shard, pin: "abc" } })).message, /shard\.pin.*64 hex/)
    const timing = { minIntervalMs: 60_000, maxIntervalMs: 1_000 }
    assert.match((await refused({ path: ":memory:", shard: { ...shard, timing } })).message, /minIntervalMs/)
    const key = new Uint8Array(12)
    const badKey = await refused({
      path: ":memory:",
      shard: { ...shard, transport: "quic", pin: "peer", quicPrivateKey: key }
    })
    assert.match(badKey.message, /quicPrivateKey/)
  })

  it("without a shard: syncNow and connected say so; after close every call rejects with closed", async () => {
    const tv = await OmegaTv.open({ path: ":memory:", ...quiet })
    await rejection(tv.syncNow(), "no-shard")
    await rejection(tv.connected(10), "no-shard")
    await tv.close()
    await tv.close()
    await rejection(tv.recommend(evening), "closed")
    await rejection(tv.status(), "closed")
  })

  it("with its shard unreachable the TV opens, works offline and reports it", async () => {
    await using tv = await OmegaTv.open({
      path: ":memory:",
      ...quiet,
      shard: {
        transport: "webtransport",
        host: "127.0.0.1",
        // Nothing listens on port 9 (discard) here: every connect fails and the TV keeps retrying.
        port: 9,
        pin: "ab".repeat(32),
        deviceId: "tv-offline",
        token: "secret",
        region: "eu-west",
        timing: { reconnectBaseMs: 20, reconnectMaxMs: 50 }
      }
    })
    await tv.addContent(catalog)
    await tv.observe(watch("comedy-1", 1_700_000_000_000))
    await tv.observe(watch("comedy-1", 1_700_000_060_000))
    assert.lengthOf(await tv.recommend(evening), catalog.length - 1, "everything not watched, offline")
    assert.deepStrictEqual(await tv.syncNow(), { status: "offline" })
    await rejection(tv.connected(100), "timeout")
    const status = await tv.status()
    assert.isFalse(status.sync!.connected)
    assert.strictEqual(status.sync!.sessions, 0)
    assert.isString(status.sync!.lastError)
  })
})
