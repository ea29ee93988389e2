/**
 * Packs `@omega/sdk` as one npm tarball a TV integrator can install, with the workspace packages
 * it depends on (protocol, brain, sync) bundled inside it. Inside the workspace every package
 * exports its TypeScript sources, which Node runs by stripping types; Node refuses to do that
 * under `node_modules` (ERR_UNSUPPORTED_NODE_MODULES_TYPE_STRIPPING), so an installed package
 * must ship JavaScript. Bundled, the `@omega/*` packages are never looked up on a registry, where
 * someone else's package of the same name could stand in for them.
 *
 * For each package, in dependency order, tsc compiles `src/` (tests, benchmarks and test helpers
 * left out) to JavaScript and declarations where it goes in the tarball: the SDK at the top of the
 * staging directory, the other three under its `node_modules` (its `bundleDependencies`). Each
 * gets a manifest that exports them (workspace dependencies pinned to their versions, `file:`
 * stand-ins and the `private` flag dropped); the SDK's also declares every third-party package any
 * of the four needs, so npm installs those beside it, and their peers (onnxruntime-node, needed only
 * for a model directory, is an optional one). `npm pack` makes the tarball; one holding a
 * `.ts` source is refused.
 *
 *   node scripts/pack-sdk.ts [--out <dir>] [--json]
 *
 * `--out` defaults to `dist/sdk`; the tarball is written there, the staging under `<out>/stage`.
 * With `--json` the last line is one JSON object: `{ name, version, file, files, packed_bytes,
 * unpacked_bytes, bundled: [names], dependencies: { name: range }, peer_dependencies: { name: range } }`.
 */
import { execFileSync } from "node:child_process"
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..")

/** What the SDK needs, dependencies first. */
const PACKAGES = ["protocol", "brain", "sync", "sdk"] as const

/** Files of `src/` that are not part of a published package. */
const LEFT_OUT = ["**/*.test.ts", "**/bench.ts", "**/throughput.ts", "**/SyntheticData.ts", "testing/**"]

interface Manifest {
  readonly name: string
  readonly version: string
  readonly description?: string
  readonly dependencies?: Record<string, string>
  readonly peerDependencies?: Record<string, string>
  readonly peerDependenciesMeta?: Record<string, { readonly optional?: boolean }>
}

const argument = (name: string): string | undefined => {
  const at = process.argv.indexOf(name)
  return at < 0 ? undefined : process.argv[at + 1]
}
const json = process.argv.includes("--json")
const out = resolve(argument("--out") ?? join(root, "dist", "sdk"))
const stageRoot = join(out, "stage")
const sdkStage = join(stageRoot, "sdk")
/** Where a package goes in the tarball: the SDK at the top, the others bundled in its node_modules. */
const stageOf = (name: (typeof PACKAGES)[number]) =>
  name === "sdk" ? sdkStage : join(sdkStage, "node_modules", "@omega", name)
const progress = (message: string) => process.stderr.write(`${message}\n`)

const tsc = (...args: Array<string>) =>
  execFileSync(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), ...args], {
    cwd: root,
    stdio: ["ignore", "inherit", "inherit"]
  })

const readManifest = (dir: string): Manifest => JSON.parse(readFileSync(join(dir, "package.json"), "utf8"))
const manifests = new Map(PACKAGES.map((name) => [name, readManifest(join(root, "packages", name))]))
const versionOf = new Map([...manifests.values()].map((m) => [m.name, m.version]))

/** The published manifest: compiled entry points, pinned workspace dependencies, no stand-ins. */
const publishedManifest = (manifest: Manifest) => {
  const dependencies: Record<string, string> = {}
  for (const [name, spec] of Object.entries(manifest.dependencies ?? {})) {
    if (spec.startsWith("file:")) continue // a local stand-in; the real package is the integrator's choice
    const workspace = versionOf.get(name)
    if (name.startsWith("@omega/") && workspace === undefined) {
      throw new Error(`${manifest.name} depends on ${name}, which this script does not pack; add it to PACKAGES`)
    }
    dependencies[name] = workspace ?? spec
  }
  return {
    name: manifest.name,
    version: manifest.version,
    ...(manifest.description === undefined ? {} : { description: manifest.description }),
    type: "module",
    exports: { ".": { types: "./dist/index.d.ts", default: "./dist/index.js" } },
    files: ["dist"],
    engines: { node: ">=22.19" },
    dependencies,
    peerDependencies: manifest.peerDependencies ?? {},
    peerDependenciesMeta: manifest.peerDependenciesMeta ?? {}
  }
}

/** A tsconfig that compiles one package's `src/` to JavaScript and declarations in `outDir`. */
const buildConfig = (name: string, outDir: string) => {
  const dir = join(root, "packages", name)
  const own = JSON.parse(readFileSync(join(dir, "tsconfig.json"), "utf8")) as {
    readonly references?: ReadonlyArray<{ readonly path: string }>
  }
  return {
    extends: join(dir, "tsconfig.json"),
    compilerOptions: {
      rootDir: join(dir, "src"),
      outDir,
      typeRoots: [join(root, "node_modules", "@types")],
      emitDeclarationOnly: false,
      composite: false,
      incremental: false,
      declarationMap: false
    },
    include: [join(dir, "src")],
    exclude: LEFT_OUT.map((pattern) => join(dir, "src", pattern)),
    // Imports of the other packages resolve to their declarations, built by `tsc -b` below.
    references: (own.references ?? []).map((ref) => ({ path: resolve(dir, ref.path) }))
  }
}

/** Compiles one package's `src/` into `dist/` where it goes in the tarball. */
const compile = (name: (typeof PACKAGES)[number]): void => {
  const stage = stageOf(name)
  mkdirSync(stage, { recursive: true })
  const config = join(stage, "tsconfig.build.json")
  writeFileSync(config, JSON.stringify(buildConfig(name, join(stage, "dist")), null, 2))
  progress(`  ${manifests.get(name)!.name}: compiling`)
  tsc("-p", config)
  rmSync(config)
}
const writeManifest = (name: (typeof PACKAGES)[number], manifest: object) =>
  writeFileSync(join(stageOf(name), "package.json"), `${JSON.stringify(manifest, null, 2)}\n`)

mkdirSync(out, { recursive: true })
rmSync(stageRoot, { recursive: true, force: true })
progress(`pack-sdk: building declarations of ${PACKAGES.length} packages (tsc -b)`)
tsc("-b", join(root, "packages", "sdk"))
for (const name of PACKAGES) compile(name)

// The other packages' manifests inside the SDK; the SDK's declares every third-party dependency,
// and every peer (optional ones, such as onnxruntime-node for a model directory, npm leaves to the app).
const published = new Map(PACKAGES.map((name) => [name, publishedManifest(manifests.get(name)!)]))
const inside = PACKAGES.filter((name) => name !== "sdk")
for (const name of inside) writeManifest(name, published.get(name)!)
/** The union of one field over the four manifests; a package wanted in two ranges is refused. */
const union = (field: "dependencies" | "peerDependencies") => {
  const all: Record<string, string> = {}
  for (const manifest of published.values()) {
    for (const [dependency, range] of Object.entries(manifest[field])) {
      if (all[dependency] !== undefined && all[dependency] !== range) {
        throw new Error(`${dependency} is wanted as ${all[dependency]} and as ${range}; align the workspace first`)
      }
      all[dependency] = range
    }
  }
  return all
}
const dependencies = union("dependencies")
const peerDependencies = union("peerDependencies")
const sdk = {
  ...published.get("sdk")!,
  dependencies,
  peerDependencies,
  peerDependenciesMeta: Object.assign({}, ...[...published.values()].map((m) => m.peerDependenciesMeta)),
  bundleDependencies: inside.map((name) => published.get(name)!.name)
}
writeManifest("sdk", sdk)

progress(`  ${sdk.name}: packing`)
const [result] = JSON.parse(
  execFileSync("npm", ["pack", sdkStage, "--pack-destination", out, "--json", "--silent"], {
    cwd: out,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"]
  })
) as Array<{ filename: string; size: number; unpackedSize: number; files: Array<{ path: string }> }>
const paths = result!.files.map((f) => f.path)
const sources = paths.filter((p) => p.endsWith(".ts") && !p.endsWith(".d.ts"))
if (sources.length > 0) {
  throw new Error(`the tarball holds TypeScript sources Node cannot run there: ${sources.join(", ")}`)
}
for (const name of sdk.bundleDependencies) {
  if (!paths.includes(`node_modules/${name}/dist/index.js`)) throw new Error(`${name} was not bundled`)
}
rmSync(stageRoot, { recursive: true, force: true })

const packed = {
  name: sdk.name,
  version: sdk.version,
  file: join(out, result!.filename),
  files: paths.length,
  packed_bytes: result!.size,
  unpacked_bytes: result!.unpackedSize,
  bundled: sdk.bundleDependencies,
  dependencies,
  peer_dependencies: peerDependencies
}
console.log(`Packed ${packed.file} (install it with: npm install ${packed.file})`)
const row = (cells: ReadonlyArray<string | number>) =>
  cells.map((c, i) => String(c).padStart(i === 0 ? 32 : 12)).join("  ")
console.log(row(["package", "files", "packed_kb", "unpacked_kb"]))
console.log(row([
  `${packed.name} ${packed.version}`,
  packed.files,
  (packed.packed_bytes / 1024).toFixed(1),
  (packed.unpacked_bytes / 1024).toFixed(1)
]))
console.log(`bundled inside: ${packed.bundled.join(", ")}`)
console.log(`installed beside it: ${Object.keys(dependencies).filter((d) => !d.startsWith("@omega/")).join(", ")}`)
const optional = Object.keys(peerDependencies).filter((d) => sdk.peerDependenciesMeta[d]?.optional === true)
if (optional.length > 0) console.log(`optional, installed by the app when it wants them: ${optional.join(", ")}`)
if (json) console.log(JSON.stringify(packed))
