/**
 * The SDK as an integrator gets it: `scripts/pack-sdk.ts` packs @omega/sdk with the workspace
 * packages it needs bundled inside; the tarball is unpacked into a fresh app's `node_modules` (the
 * third-party packages its manifest declares are linked from this workspace, so nothing is
 * downloaded), and
 * a plain JavaScript app, run by Node in a process of its own, opens a TV, learns, recommends,
 * syncs with a shard over QUIC and reopens its file. A TypeScript consumer is type-checked against
 * the shipped declarations. Inside the workspace the packages export TypeScript sources, which
 * Node refuses to run under `node_modules`; this test fails if the tarballs ship those.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Ingestion } from "@omega/constellation"
import { Context, Duration, Effect } from "effect"
import { execFile, execFileSync } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { testShardForSdk } from "./support.ts"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..")
const directory = mkdtempSync(join(tmpdir(), "omega-sdk-package-"))
const app = join(directory, "app")
const SECRET = "packaged-fleet-secret"
const REGION = "eu-west"

interface Packed {
  readonly file: string
  readonly bundled: ReadonlyArray<string>
}
let packed: Packed = { file: "", bundled: [] }
const sdkDirectory = join(app, "node_modules", "@omega", "sdk")

const manifestOf = (packageDirectory: string) =>
  JSON.parse(readFileSync(join(packageDirectory, "package.json"), "utf8")) as {
    readonly dependencies: Record<string, string>
    readonly peerDependencies?: Record<string, string>
    readonly peerDependenciesMeta?: Record<string, { readonly optional?: boolean }>
    readonly bundleDependencies?: ReadonlyArray<string>
    readonly exports: unknown
  }

beforeAll(() => {
  const output = execFileSync(
    process.execPath,
    [join(root, "scripts", "pack-sdk.ts"), "--out", join(directory, "packs"), "--json"],
    { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }
  )
  packed = JSON.parse(output.trim().split("\n").pop()!) as Packed
  // What `npm install <tarball>` would put in node_modules, without the network: the SDK with the
  // packages bundled in it, and the third-party packages it declares beside it (not its optional
  // peers: npm installs those only when the app asks for them).
  mkdirSync(sdkDirectory, { recursive: true })
  execFileSync("tar", ["-xzf", packed.file, "-C", sdkDirectory, "--strip-components=1"])
  const thirdParty = Object.keys(manifestOf(sdkDirectory).dependencies).filter((d) => !d.startsWith("@omega/"))
  for (const dependency of thirdParty) {
    mkdirSync(dirname(join(app, "node_modules", dependency)), { recursive: true })
    symlinkSync(join(root, "node_modules", dependency), join(app, "node_modules", dependency))
  }
}, 240_000)
afterAll(() => rmSync(directory, { recursive: true, force: true }))

/** The app an integrator writes: plain JavaScript, nothing but @omega/sdk imported. */
const APP = `
import { OmegaError, OmegaTv } from "@omega/sdk"

const [path, shardJson] = process.argv.slice(2)
const shard = JSON.parse(shardJson)
const catalog = ["Comedy", "Horror"].flatMap((genre) =>
  ["Harbor", "Winter", "Signal"].map((word, i) => ({
    contentId: genre.toLowerCase() + "-" + i, title: genre + " " + word + " (199" + i + ")", genres: [genre]
  })))
const evening = { timeOfDay: "evening", dayType: "weekday", recentWatches: [] }

const tv = await OmegaTv.open({ path, learningLoops: false, shard })
const told = []
tv.onEvent((event) => told.push(event.type))
await tv.addContent(catalog)
for (const [n, id] of ["comedy-0", "comedy-1", "comedy-0", "comedy-1"].entries()) {
  const item = catalog.find((c) => c.contentId === id)
  await tv.observe({ ...item, watchedAt: 1_700_000_000_000 + n * 3_600_000, watchShare: 0.9, context: evening })
}
const recommended = await tv.recommend({ ...evening, recentWatches: ["comedy-0"] }, 3)
let refused
try {
  await tv.observe({ contentId: "comedy-2", title: "x", genres: [], watchedAt: 1, watchShare: 7, context: evening })
} catch (error) {
  refused = { omegaError: error instanceof OmegaError, code: error.code }
}
await tv.connected(10_000)
const sync = await tv.syncNow()
const patterns = (await tv.status()).brain.patterns
await tv.close()

const reopened = await OmegaTv.open({ path, learningLoops: false })
const reopenedPatterns = (await reopened.status()).brain.patterns
await reopened.close()

// A model directory needs the optional onnxruntime-node, which this app did not install.
let withModel
try {
  await (await OmegaTv.open({ path: ":memory:", modelDir: "./model" })).close()
} catch (error) {
  withModel = { code: error.code, message: error.message }
}
console.log(JSON.stringify({
  resolved: import.meta.resolve("@omega/sdk"),
  recommended: recommended.map((r) => r.contentId),
  refused,
  sync,
  patterns,
  reopenedPatterns,
  told,
  withModel
}))
`

/** A TypeScript consumer: it compiles only if the shipped declarations carry the SDK's types. */
const CONSUMER = `
import { type OmegaErrorCode, OmegaTv, type Recommendation, type TvEvent } from "@omega/sdk"

export const topTitles = async (path: string): Promise<Array<string>> => {
  await using tv = await OmegaTv.open({ path })
  const recommended: ReadonlyArray<Recommendation> = await tv.recommend({
    timeOfDay: "night",
    dayType: "weekend",
    recentWatches: []
  }, 5)
  return recommended.map((r) => r.title)
}
export const retryable = (code: OmegaErrorCode): boolean => code === "timeout" || code === "transport"
export const watch = (tv: OmegaTv): () => void =>
  tv.onEvent((event: TvEvent) => {
    if (event.type === "disconnected") console.log(event.reason, event.message)
  })
`

describe("the SDK packed for integrators", () => {
  it("ships JavaScript and declarations only, with the workspace packages bundled inside", () => {
    const inside = ["@omega/protocol", "@omega/brain", "@omega/sync"]
    assert.deepStrictEqual(packed.bundled, inside)
    const files = execFileSync("tar", ["-tzf", packed.file], { encoding: "utf8" }).trim().split("\n")
    for (const prefix of ["package/", ...inside.map((name) => `package/node_modules/${name}/`)]) {
      assert.include(files, `${prefix}dist/index.js`)
      assert.include(files, `${prefix}dist/index.d.ts`)
    }
    assert.deepStrictEqual(files.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts")), [], "no sources")
    assert.deepStrictEqual(files.filter((f) => /\.test\.|bench\.|testing\//.test(f)), [], "no tests")
    const sdk = manifestOf(sdkDirectory)
    assert.deepStrictEqual(sdk.exports, { ".": { types: "./dist/index.d.ts", default: "./dist/index.js" } })
    assert.deepStrictEqual(sdk.bundleDependencies, inside)
    assert.strictEqual(sdk.dependencies["@omega/brain"], "0.1.0")
    // Every third-party package the bundled ones import is declared by the SDK itself.
    for (const name of inside) {
      const bundled = manifestOf(join(sdkDirectory, "node_modules", name))
      for (const dependency of Object.keys(bundled.dependencies)) {
        assert.property(sdk.dependencies, dependency, `${name} needs ${dependency}`)
      }
      for (const peer of Object.keys(bundled.peerDependencies ?? {})) {
        assert.property(sdk.peerDependencies, peer, `${name} asks for ${peer} as a peer`)
      }
    }
    // The ONNX runtime (288 MB installed) is for TVs with a model directory only: an optional peer.
    assert.notProperty(sdk.dependencies, "onnxruntime-node")
    assert.isString(sdk.peerDependencies?.["onnxruntime-node"])
    assert.deepStrictEqual(sdk.peerDependenciesMeta?.["onnxruntime-node"], { optional: true })
    assert.notProperty(sdk.dependencies, "@fails-components/webtransport-transport-http3-quiche")
  })

  it.live(
    "runs a plain JavaScript app from node_modules: learn, recommend, sync over QUIC, reopen",
    () =>
      Effect.gen(function*() {
        const { context, tvOptions } = yield* testShardForSdk({
          shardId: "sdk-package",
          fleetSecret: SECRET,
          region: REGION,
          snapshotEvery: Duration.seconds(1)
        })
        const shard = tvOptions("packaged-tv-1")
        writeFileSync(join(app, "main.mjs"), APP)
        const { stdout } = yield* Effect.promise(() =>
          promisify(execFile)(process.execPath, ["main.mjs", join(directory, "tv.db"), JSON.stringify(shard)], {
            cwd: app,
            timeout: 60_000
          })
        )
        const result = JSON.parse(stdout.trim().split("\n").pop()!)
        assert.strictEqual(result.resolved, `file://${join(app, "node_modules", "@omega", "sdk", "dist", "index.js")}`)
        assert.lengthOf(result.recommended, 3)
        assert.match(result.recommended[0], /^comedy-/, "the viewer watches comedies")
        assert.notInclude(result.recommended, "comedy-0", "what was just watched is not suggested again")
        assert.deepStrictEqual(result.refused, { omegaError: true, code: "invalid-input" })
        assert.strictEqual(result.sync.status, "acknowledged")
        assert.isAbove(result.sync.accepted, 0)
        assert.isAbove(result.patterns, 0)
        assert.strictEqual(result.reopenedPatterns, result.patterns)
        assert.strictEqual(result.told[0], "connected", "the app was told of its session")
        assert.strictEqual(result.withModel?.code, "embedder")
        // The hint names the range the manifest asks for.
        const range = manifestOf(sdkDirectory).peerDependencies?.["onnxruntime-node"]
        assert.include(result.withModel?.message, "modelDir needs onnxruntime-node")
        assert.include(result.withModel?.message, `npm install onnxruntime-node@${range})`)
        // The shard stored what the packaged TV sent, and counted its delta once.
        const stats = yield* Context.get(context, Ingestion).stats
        assert.strictEqual(stats.deltasAccepted, 1)
        assert.strictEqual(stats.patternsStored, result.sync.accepted)
      }),
    90_000
  )

  it("type-checks a TypeScript consumer against the shipped declarations", () => {
    writeFileSync(join(app, "consumer.ts"), CONSUMER)
    writeFileSync(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2024",
          lib: ["ES2024", "ESNext.Disposable"],
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: ["node"],
          typeRoots: [join(root, "node_modules", "@types")]
        },
        files: ["consumer.ts"]
      })
    )
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "tv-app", private: true, type: "module" }))
    const tsc = join(root, "node_modules", "typescript", "bin", "tsc")
    /** tsc's diagnostics, empty when the consumer compiles. */
    const diagnostics = () => {
      try {
        execFileSync(process.execPath, [tsc, "-p", app], { encoding: "utf8", stdio: "pipe" })
        return ""
      } catch (error) {
        return String((error as { stdout?: string }).stdout ?? error)
      }
    }
    assert.strictEqual(diagnostics(), "")
    // And it does fail on a misuse the declarations know about.
    writeFileSync(join(app, "consumer.ts"), `${CONSUMER}\nexport const wrong: OmegaErrorCode = "no-such-code"\n`)
    assert.match(diagnostics(), /consumer\.ts.*"no-such-code"/)
  }, 60_000)
})
