/**
 * Packs `@omega/sdk`, and the workspace packages it depends on, as npm tarballs a TV integrator
 * can install. Inside the workspace every package exports its TypeScript sources, which Node runs
 * by stripping types; Node refuses to do that under `node_modules`
 * (ERR_UNSUPPORTED_NODE_MODULES_TYPE_STRIPPING), so an installed package must ship JavaScript.
 *
 * For each package, in dependency order, tsc compiles `src/` (tests, benchmarks and test
 * helpers left out) to JavaScript and declarations in a staging directory; the package's
 * manifest is rewritten to export them (workspace dependencies pinned to their versions,
 * `file:` stand-ins and the `private` flag dropped), and `npm pack` makes the tarball. A tarball
 * holding a `.ts` source is refused.
 *
 *   node scripts/pack-sdk.ts [--out <dir>] [--json]
 *
 * `--out` defaults to `dist/sdk`; the tarballs are written there, the staging under `<out>/stage`.
 * With `--json` the last line is one JSON object: `{ packages: [{ name, version, file, files,
 * packed_bytes, unpacked_bytes }] }`.
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
}

interface Packed {
  readonly name: string
  readonly version: string
  readonly file: string
  readonly files: number
  readonly packed_bytes: number
  readonly unpacked_bytes: number
}

const argument = (name: string): string | undefined => {
  const at = process.argv.indexOf(name)
  return at < 0 ? undefined : process.argv[at + 1]
}
const json = process.argv.includes("--json")
const out = resolve(argument("--out") ?? join(root, "dist", "sdk"))
const stageRoot = join(out, "stage")
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
    dependencies
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

const pack = (name: string): Packed => {
  const manifest = manifests.get(name as (typeof PACKAGES)[number])!
  const stage = join(stageRoot, name)
  rmSync(stage, { recursive: true, force: true })
  mkdirSync(stage, { recursive: true })
  const config = join(stage, "tsconfig.build.json")
  writeFileSync(config, JSON.stringify(buildConfig(name, join(stage, "dist")), null, 2))
  progress(`  ${manifest.name}: compiling`)
  tsc("-p", config)
  rmSync(config)
  writeFileSync(join(stage, "package.json"), `${JSON.stringify(publishedManifest(manifest), null, 2)}\n`)
  progress(`  ${manifest.name}: packing`)
  const [result] = JSON.parse(
    execFileSync("npm", ["pack", stage, "--pack-destination", out, "--json", "--silent"], {
      cwd: out,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"]
    })
  ) as Array<{ filename: string; size: number; unpackedSize: number; files: Array<{ path: string }> }>
  const sources = result!.files.map((f) => f.path).filter((p) => p.endsWith(".ts") && !p.endsWith(".d.ts"))
  if (sources.length > 0) {
    throw new Error(`${manifest.name}'s tarball holds TypeScript sources Node cannot run there: ${sources.join(", ")}`)
  }
  return {
    name: manifest.name,
    version: manifest.version,
    file: join(out, result!.filename),
    files: result!.files.length,
    packed_bytes: result!.size,
    unpacked_bytes: result!.unpackedSize
  }
}

mkdirSync(out, { recursive: true })
progress(`pack-sdk: building declarations of ${PACKAGES.length} packages (tsc -b)`)
tsc("-b", join(root, "packages", "sdk"))
const packed = PACKAGES.map(pack)
rmSync(stageRoot, { recursive: true, force: true })

console.log(
  `Packed into ${out} (install them together: npm install ${packed.map((p) => p.file.split("/").pop()).join(" ")})`
)
const widths = [18, 8, 6, 10, 12]
const row = (cells: ReadonlyArray<string | number>) => cells.map((c, i) => String(c).padStart(widths[i]!)).join("  ")
console.log(row(["package", "version", "files", "packed_kb", "unpacked_kb"]))
for (const p of packed) {
  console.log(
    row([p.name, p.version, p.files, (p.packed_bytes / 1024).toFixed(1), (p.unpacked_bytes / 1024).toFixed(1)])
  )
}
if (json) console.log(JSON.stringify({ packages: packed }))
