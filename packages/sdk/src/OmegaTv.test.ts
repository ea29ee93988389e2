import { afterEach, assert, describe, it } from "@effect/vitest"
import { makeQuicIdentity } from "@omega/sync"
import { mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
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
    const morning = { timeOfDay: "morning", dayType: "weekend", recentWatches: [] } as const
    const ranked = await tv.recommend(morning, 5)
    await tv.close()

    await using reopened = await OmegaTv.open({ path, ...quiet })
    const after = await reopened.status()
    assert.strictEqual(after.brain.patterns, before.brain.patterns)
    assert.strictEqual(after.brain.catalogItems, catalog.length)
    assert.deepStrictEqual(after.brain.versions, before.brain.versions)
    const again = await reopened.recommend(morning, 5)
    assert.deepStrictEqual(again.map((r) => r.contentId), ranked.map((r) => r.contentId))
  })

  it("refuses bad input with invalid-input and keeps everything stored", async () => {
    await using tv = await OmegaTv.open({ path: ":memory:", ...quiet })
    await tv.addContent(catalog)
    await tv.observe(watch("horror-2", 1_700_000_000_000))
    const before = structuredClone(await tv.status())

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
    for (const limit of [0, -1, 1.5, Number.NaN, Infinity]) {
      assert.match((await rejection(tv.recommend(evening, limit), "invalid-input")).message, /limit/)
    }

    // status() is a snapshot: changing what it returned changes nothing in the brain.
    const snapshot = await tv.status()
    ;(snapshot.brain.outcomes.local as { watched: number }).watched = 999
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
    // Every refusal comes before the brain opens: its directory stays empty.
    const path = brainPath()
    const refused = async (options: OmegaTvOptions, pattern: RegExp) => {
      assert.match((await rejection(OmegaTv.open(options), "invalid-options")).message, pattern)
      assert.deepStrictEqual(readdirSync(dirname(path)), [])
    }
    await refused({ path: "" }, /path/)
    await refused({ path, learningLoop: false } as OmegaTvOptions, /learningLoop/)
    await refused({ path, shard: { ...shard, port: 0 } }, /port/)
    await refused({ path, shard: { ...shard, pin: "abc" } }, /shard\.pin.*64 hex/)
    await refused({ path, shard: { ...shard, transport: "quic", pin: "ab".repeat(32) } }, /shard\.pin.*12D3KooW/)
    await refused({ path, shard: { ...shard, timing: { minIntervalMs: 60_000, maxIntervalMs: 1_000 } } }, /minimum/)
    // Against the defaults too: a 1 s maximum is below the default 5 minute minimum.
    await refused({ path, shard: { ...shard, timing: { maxIntervalMs: 1_000 } } }, /minimum \(300000 ms\)/)
    await refused({ path, shard: { ...shard, timing: { reconnectBaseMs: 10_000, reconnectMaxMs: 10 } } }, /reconnect/)
    const quic = { ...shard, transport: "quic", pin: makeQuicIdentity().peerId } as const
    await refused({ path, shard: { ...quic, quicPrivateKey: new Uint8Array(12) } }, /quicPrivateKey/)
    const key = makeQuicIdentity().privateKey
    await refused({ path, shard: { ...shard, quicPrivateKey: key } }, /quicPrivateKey.*webtransport/)
  })

  it("a brain that cannot start rejects with what failed", async () => {
    const noModel = await rejection(OmegaTv.open({ path: ":memory:", modelDir: "/nonexistent-model" }), "embedder")
    assert.match(noModel.message, /nonexistent-model/)
    await rejection(OmegaTv.open({ path: "/nonexistent-dir/brain.db" }), "storage")
  })

  it("close lets a write in flight finish, and every close resolves once the store is closed", async () => {
    const path = brainPath()
    const tv = await OmegaTv.open({ path, ...quiet })
    // Big enough to span many turns of the event loop, so the close really lands in the middle of it.
    const many = Array.from(
      { length: 3_000 },
      (_, i) => ({ contentId: `film-${i}`, title: `Film ${i}`, genres: ["Drama"] })
    )
    const written = tv.addContent(many)
    const closes = [tv.close(), tv.close()]
    await written
    await Promise.all(closes)
    await rejection(tv.observe(watch("horror-3", 1_700_000_060_000)), "closed")
    await using reopened = await OmegaTv.open({ path, ...quiet })
    assert.strictEqual((await reopened.status()).brain.catalogItems, many.length)
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
    await rejection(tv.connected(-1), "invalid-input")
    let status = await tv.status()
    for (let i = 0; i < 100 && status.sync?.lastError === undefined; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20))
      status = await tv.status()
    }
    assert.isFalse(status.sync!.connected)
    assert.strictEqual(status.sync!.sessions, 0)
    assert.isString(status.sync!.lastError, "the failed connects are reported")
  })
})
