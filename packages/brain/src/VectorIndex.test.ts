import { assert, layer } from "@effect/vitest"
import { seededRandom } from "@omega/protocol"
import { Cause, Effect, Exit } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { type IndexHandle, type IndexOptions, VectorIndex } from "./VectorIndex.ts"

const DIMENSIONS = 8

const vector = (...components: ReadonlyArray<number>) => {
  const v = new Float32Array(DIMENSIONS)
  v.set(components)
  return v
}

/** Uniformly random directions: normalised Gaussian vectors. */
const randomUnits = (count: number, dimensions: number, seed: number) => {
  const random = seededRandom(seed)
  const gaussian = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random())
  return Array.from({ length: count }, () => {
    const v = new Float32Array(dimensions)
    let norm = 0
    for (let i = 0; i < dimensions; i++) {
      v[i] = gaussian()
      norm += v[i]! * v[i]!
    }
    for (let i = 0; i < dimensions; i++) v[i]! /= Math.sqrt(norm)
    return v
  })
}

const tempDir = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "vector-index-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
)

const keysOf = (index: IndexHandle, query: Float32Array, k: number) =>
  index.search(query, k).pipe(Effect.map((hits) => hits.map((hit) => hit.key)))

/** The key and similarity of the closest hit. */
const nearest = (index: IndexHandle, query: Float32Array) => index.search(query, 1).pipe(Effect.map((hits) => hits[0]))

const createIndex = (options: IndexOptions) =>
  Effect.gen(function*() {
    const service = yield* VectorIndex
    return yield* service.create(options)
  })

const create = (capacity?: number) =>
  createIndex({ dimensions: DIMENSIONS, ...(capacity === undefined ? {} : { capacity }) })

const implementations = [
  ["usearch HNSW", VectorIndex.layer],
  ["brute force", VectorIndex.layerTest]
] as const

for (const [name, implementation] of implementations) {
  layer(implementation)(`VectorIndex (${name})`, (it) => {
    it.effect("ranks hits by cosine similarity, closest first, whatever the vectors' lengths", () =>
      Effect.gen(function*() {
        const index = yield* create()
        yield* index.upsert(1, vector(5))
        yield* index.upsert(2, vector(0, 0.1))
        yield* index.upsert(3, vector(1, 0.5))
        const hits = yield* index.search(vector(2), 3)
        assert.deepStrictEqual(hits.map((hit) => hit.key), [1, 3, 2])
        assert.closeTo(hits[0]!.similarity, 1, 1e-5)
        assert.closeTo(hits[1]!.similarity, 1 / Math.sqrt(1.25), 1e-5)
        assert.closeTo(hits[2]!.similarity, 0, 1e-5)
      }))

    it.effect("upsert replaces the vector stored under a key", () =>
      Effect.gen(function*() {
        const index = yield* create()
        yield* index.upsert(7, vector(1))
        yield* index.upsert(7, vector(0, 1))
        assert.strictEqual(index.size(), 1)
        const hit = yield* nearest(index, vector(0, 1))
        assert.strictEqual(hit?.key, 7)
        assert.closeTo(hit!.similarity, 1, 1e-5)
        assert.closeTo((yield* nearest(index, vector(1)))!.similarity, 0, 1e-5)
      }))

    it.effect("upsertMany inserts a batch, the last vector of a repeated key winning", () =>
      Effect.gen(function*() {
        const index = yield* create()
        yield* index.upsert(1, vector(0, 0, 1))
        yield* index.upsertMany([[1, vector(1)], [2, vector(0, 1)], [1, vector(0, 0, 0, 1)]])
        assert.strictEqual(index.size(), 2)
        assert.strictEqual((yield* nearest(index, vector(0, 0, 0, 1)))?.key, 1)
        assert.strictEqual((yield* nearest(index, vector(0, 1)))?.key, 2)
        yield* index.upsertMany([])
        assert.strictEqual(index.size(), 2)
      }))

    it.effect("remove deletes a key, ignores unknown ones, and the key can come back", () =>
      Effect.gen(function*() {
        const index = yield* create()
        yield* index.upsertMany([[1, vector(1)], [2, vector(0, 1)], [3, vector(0, 0, 1)]])
        yield* index.remove(1)
        yield* index.remove(99)
        yield* index.remove(-1)
        assert.isFalse(index.has(1))
        assert.isTrue(index.has(2))
        assert.strictEqual(index.size(), 2)
        assert.sameMembers(yield* keysOf(index, vector(1), 10), [2, 3])
        yield* index.upsert(1, vector(0, 0, 0, 1))
        assert.strictEqual((yield* nearest(index, vector(0, 0, 0, 1)))?.key, 1)
        assert.strictEqual(index.size(), 3)
      }))

    it.effect("k <= 0 gives no hits and k > size gives every item", () =>
      Effect.gen(function*() {
        const index = yield* create()
        assert.deepStrictEqual(yield* index.search(vector(1), 5), [])
        yield* index.upsertMany([[1, vector(1)], [2, vector(0, 1)], [3, vector(0, 0, 1)]])
        assert.deepStrictEqual(yield* index.search(vector(1), 0), [])
        assert.deepStrictEqual(yield* index.search(vector(1), -3), [])
        assert.strictEqual((yield* index.search(vector(1), 50)).length, 3)
        assert.strictEqual((yield* index.search(vector(1), 2.7)).length, 2)
      }))

    it.effect("rejects bad vectors, keys and queries with typed errors and keeps what was stored", () =>
      Effect.gen(function*() {
        const index = yield* create()
        yield* index.upsert(1, vector(1))
        const bad: ReadonlyArray<readonly [Float32Array, string]> = [
          [new Float32Array(3), `must have ${DIMENSIONS} dimensions, got 3`],
          [vector(1, 0, NaN), "component 2 is NaN"],
          [vector(1, Infinity), "component 1 is Infinity"],
          [vector(-Infinity), "component 0 is -Infinity"],
          [vector(), "all zeros"]
        ]
        for (const [v, message] of bad) {
          const error = yield* Effect.flip(index.upsert(1, v))
          assert.strictEqual(error._tag, "IndexError")
          assert.include(error.message, message)
          assert.include((yield* Effect.flip(index.search(v, 3))).message, message)
        }
        for (const key of [-1, 1.5, NaN, 2 ** 53]) {
          assert.include((yield* Effect.flip(index.upsert(key, vector(1)))).message, "non-negative safe integer")
        }
        const batch = yield* Effect.flip(index.upsertMany([[2, vector(0, 1)], [1, vector(NaN)]]))
        assert.include(batch.message, "entry 1")
        assert.strictEqual(index.size(), 1)
        assert.isFalse(index.has(2))
        const hit = yield* nearest(index, vector(1))
        assert.strictEqual(hit?.key, 1)
        assert.closeTo(hit!.similarity, 1, 1e-5)
      }))

    it.effect("rejects invalid options", () =>
      Effect.gen(function*() {
        const service = yield* VectorIndex
        assert.include((yield* Effect.flip(service.create({ dimensions: 0 }))).message, "dimensions")
        assert.include((yield* Effect.flip(service.create({ dimensions: 4, capacity: -1 }))).message, "capacity")
      }))

    it.effect("grows past its initial capacity", () =>
      Effect.gen(function*() {
        const index = yield* create(2)
        const vectors = randomUnits(300, DIMENSIONS, 7)
        for (let key = 0; key < 150; key++) yield* index.upsert(key, vectors[key]!)
        yield* index.upsertMany(vectors.slice(150).map((v, i) => [150 + i, v] as const))
        assert.strictEqual(index.size(), 300)
        for (let key = 0; key < 300; key += 13) {
          assert.isTrue(index.has(key))
          assert.strictEqual((yield* nearest(index, vectors[key]!))?.key, key)
        }
      }))

    it.effect("saves and loads a round trip, and refuses files that do not fit", () =>
      Effect.gen(function*() {
        const service = yield* VectorIndex
        const dir = yield* tempDir
        const file = Path.join(dir, "index.bin")
        const index = yield* create()
        const vectors = randomUnits(60, DIMENSIONS, 11)
        yield* index.upsertMany(vectors.map((v, key) => [key * 3, v] as const))
        yield* index.remove(9)
        yield* index.save(file)

        const loaded = yield* service.load(file, { dimensions: DIMENSIONS })
        assert.strictEqual(loaded.size(), 59)
        assert.isFalse(loaded.has(9))
        for (const query of randomUnits(5, DIMENSIONS, 12)) {
          assert.deepStrictEqual(yield* keysOf(loaded, query, 5), yield* keysOf(index, query, 5))
        }
        yield* loaded.upsert(1000, vector(1))
        assert.strictEqual(loaded.size(), 60)

        const empty = Path.join(dir, "empty.bin")
        yield* (yield* create()).save(empty)
        assert.strictEqual((yield* service.load(empty, { dimensions: DIMENSIONS })).size(), 0)

        const wrongWidth = yield* Effect.flip(service.load(file, { dimensions: DIMENSIONS * 2 }))
        assert.include(wrongWidth.message, `expected ${DIMENSIONS * 2}`)
        assert.strictEqual(wrongWidth._tag, "IndexError")
        assert.include(
          (yield* Effect.flip(service.load(Path.join(dir, "missing"), { dimensions: 8 }))).message,
          "missing"
        )
        const garbage = Path.join(dir, "garbage")
        for (const content of ["hello world garbage", "x".repeat(5_000), ""]) {
          Fs.writeFileSync(garbage, content)
          assert.include((yield* Effect.flip(service.load(garbage, { dimensions: DIMENSIONS }))).message, "not a")
        }
      }))

    it.effect("a view searches but rejects writes, and survives its file being replaced", () =>
      Effect.gen(function*() {
        const service = yield* VectorIndex
        const dir = yield* tempDir
        const file = Path.join(dir, "index.bin")
        const index = yield* create()
        yield* index.upsertMany([[1, vector(1)], [2, vector(0, 1)]])
        yield* index.save(file)

        const view = yield* service.load(file, { dimensions: DIMENSIONS, view: true })
        assert.strictEqual((yield* nearest(view, vector(0, 1)))?.key, 2)
        assert.include((yield* Effect.flip(view.upsert(3, vector(0, 0, 1)))).message, "read-only view")
        assert.include((yield* Effect.flip(view.upsertMany([[3, vector(0, 0, 1)]]))).message, "read-only view")
        const removed = yield* Effect.exit(view.remove(1))
        assert.isTrue(Exit.isFailure(removed) && Cause.hasDies(removed.cause))
        assert.strictEqual(view.size(), 2)
        assert.isTrue(view.has(1))

        // Saving is atomic (rename), so the old mapping stays valid while a new version lands.
        yield* index.upsert(3, vector(0, 0, 1))
        yield* index.save(file)
        assert.sameMembers(yield* keysOf(view, vector(1), 10), [1, 2])
        assert.strictEqual((yield* service.load(file, { dimensions: DIMENSIONS, view: true })).size(), 3)

        const copy = Path.join(dir, "copy.bin")
        yield* view.save(copy)
        assert.strictEqual((yield* service.load(copy, { dimensions: DIMENSIONS })).size(), 2)
      }))
  })
}

layer(VectorIndex.layerTest)("VectorIndex recall", (it) => {
  it.effect("usearch HNSW with f16 vectors finds >= 95% of the exact top 10 over 2,000 random 384-d vectors", () =>
    Effect.gen(function*() {
      const hnsw = yield* createIndex({ dimensions: 384, quantization: "f16" }).pipe(Effect.provide(VectorIndex.layer))
      const exact = yield* createIndex({ dimensions: 384 })
      const entries = randomUnits(2_000, 384, 2024).map((v, key) => [key, v] as const)
      yield* hnsw.upsertMany(entries)
      yield* exact.upsertMany(entries)

      let found = 0
      const queries = randomUnits(50, 384, 4048)
      for (const query of queries) {
        const truth = yield* keysOf(exact, query, 10)
        const approximate = new Set(yield* keysOf(hnsw, query, 10))
        found += truth.filter((key) => approximate.has(key)).length
      }
      assert.isAtLeast(found / (queries.length * 10), 0.95)
    }))
})
