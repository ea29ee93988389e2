/**
 * Nearest-neighbour indices over embeddings by cosine similarity. The brain keeps several
 * independent ones (learned pattern centroids, the content catalog), so the service hands out
 * index handles: `layer` builds usearch HNSW graphs, `layerTest` exact brute force, which is
 * also the reference that HNSW recall is measured against.
 */
import { Context, Data, Effect, Layer } from "effect"
import * as Fs from "node:fs"
import type { Index } from "usearch"

/** One search result; `similarity` is cosine similarity, higher is closer (1 = same direction). */
export interface Hit {
  readonly key: number
  readonly similarity: number
}

/** How usearch stores vectors; brute force always keeps exact f32. */
export type Quantization = "f32" | "f16" | "i8"

export interface IndexOptions {
  readonly dimensions: number
  /** Storage precision of the HNSW vectors (default "f32"); brute force ignores it. */
  readonly quantization?: Quantization
  /** Initial room in vectors for brute force, which doubles past it. The usearch binding cannot
   * reserve, so HNSW ignores it and grows to the next power of two as vectors arrive. */
  readonly capacity?: number
  /** HNSW edges per node (default 16). */
  readonly connectivity?: number
  /** HNSW candidate list while inserting (default 128). */
  readonly expansionAdd?: number
  /** HNSW candidate list while searching (default 256); higher buys recall with latency. */
  readonly expansionSearch?: number
}

export interface LoadOptions extends IndexOptions {
  /** Memory-map the file instead of reading it; the handle is then read-only. */
  readonly view?: boolean
}

/** One index. Keys are non-negative safe integers; vectors are compared by direction only. */
export interface IndexHandle {
  /** Inserts `vector` under `key`, replacing any vector already stored there. */
  readonly upsert: (key: number, vector: Float32Array) => Effect.Effect<void, IndexError>
  /** Upserts every entry, or none when any is invalid; a key repeated in the batch keeps its last vector. */
  readonly upsertMany: (entries: ReadonlyArray<readonly [key: number, vector: Float32Array]>) => Effect.Effect<
    void,
    IndexError
  >
  /** Removes `key` if present. Dies on a read-only view, where removing is a programming error. */
  readonly remove: (key: number) => Effect.Effect<void>
  /** Up to `k` nearest keys, closest first; `k <= 0` gives none, `k > size` gives `size`. */
  readonly search: (query: Float32Array, k: number) => Effect.Effect<ReadonlyArray<Hit>, IndexError>
  readonly has: (key: number) => boolean
  readonly size: () => number
  /** Writes the index to `path` atomically (temporary file, then rename). */
  readonly save: (path: string) => Effect.Effect<void, IndexError>
}

export class VectorIndex extends Context.Service<VectorIndex, {
  /** Which implementation this is, reported in benchmarks and health output. */
  readonly kind: "usearch-hnsw" | "brute-force"
  readonly create: (options: IndexOptions) => Effect.Effect<IndexHandle, IndexError>
  /** Opens an index written by `save` of the same implementation. */
  readonly load: (path: string, options: LoadOptions) => Effect.Effect<IndexHandle, IndexError>
}>()("omega/brain/VectorIndex") {
  /** Approximate search over usearch HNSW graphs with the cosine metric. */
  static readonly layer = Layer.effect(VectorIndex, Effect.suspend(() => makeUsearch))
  /** Exact search by scanning every vector; slow past ~100k vectors, but always right. */
  static readonly layerTest = Layer.sync(VectorIndex, makeBruteForce)
}

/** Bad input, an unreadable or foreign file, a write to a read-only view, or a native failure. */
export class IndexError extends Data.TaggedError("IndexError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

const DEFAULT_CONNECTIVITY = 16
const DEFAULT_EXPANSION_ADD = 128
// usearch's own default (64) gives ~0.80 recall@10 on random 384-d vectors; 256 gives ~0.99.
const DEFAULT_EXPANSION_SEARCH = 256
const DEFAULT_CAPACITY = 16

// ---------------------------------------------------------------------------------------------
// usearch HNSW

const makeUsearch = Effect.gen(function*() {
  // Loaded lazily so that importing the brain does not require the native binding.
  const usearch = yield* Effect.tryPromise({
    try: () => import("usearch"),
    catch: (cause) => new IndexError({ message: "the usearch native binding failed to load", cause })
  })

  const newIndex = (options: IndexOptions, quantization: Quantization) =>
    attempt("could not create a usearch index", () =>
      new usearch.Index({
        dimensions: options.dimensions,
        metric: usearch.MetricKind.Cos,
        quantization:
          { f32: usearch.ScalarKind.F32, f16: usearch.ScalarKind.F16, i8: usearch.ScalarKind.I8 }[quantization],
        connectivity: options.connectivity ?? DEFAULT_CONNECTIVITY,
        expansion_add: options.expansionAdd ?? DEFAULT_EXPANSION_ADD,
        expansion_search: options.expansionSearch ?? DEFAULT_EXPANSION_SEARCH,
        multi: false
      }))

  const create = Effect.fn("VectorIndex.create")(function*(options: IndexOptions) {
    yield* checkOptions(options)
    // The JS binding exposes no `reserve`: `add` grows capacity itself to the next power of two.
    const index = yield* newIndex(options, options.quantization ?? "f32")
    return usearchHandle(index, options.dimensions, false)
  })

  const load = Effect.fn("VectorIndex.load")(function*(path: string, options: LoadOptions) {
    yield* checkOptions(options)
    // usearch aborts the whole process on some foreign files, so the header is checked first.
    const header = yield* readUsearchHeader(path)
    if (header.dimensions !== options.dimensions) {
      return yield* new IndexError({
        message: `${path} holds ${header.dimensions}-d vectors, expected ${options.dimensions}`
      })
    }
    if (options.quantization !== undefined && options.quantization !== header.quantization) {
      return yield* new IndexError({
        message: `${path} stores ${header.quantization} vectors, expected ${options.quantization}`
      })
    }
    const index = yield* newIndex(options, header.quantization)
    const view = options.view ?? false
    yield* attempt(
      `could not ${view ? "memory-map" : "load"} ${path}`,
      () => view ? index.view(path) : index.load(path)
    )
    return usearchHandle(index, options.dimensions, view)
  })

  return VectorIndex.of({ kind: "usearch-hnsw", create, load })
})

// The binding runs synchronously on the JS thread; one thread per call keeps usearch's pool of
// per-thread search contexts from being oversubscribed, and a single vector gains nothing from more.
const usearchHandle = (index: Index, dimensions: number, readOnly: boolean): IndexHandle => {
  const writable = readOnly ? Effect.failSync(readOnlyError) : Effect.void

  // usearch rejects a duplicate key, so replacing is remove-then-add. Removing frees the slots the
  // adds then take, so no memory is needed after the old vectors are gone.
  const put = (message: string, entries: ReadonlyMap<number, Float32Array>) =>
    attempt(message, () => {
      const keys = BigUint64Array.from(entries.keys(), BigInt)
      for (const key of keys) if (index.contains(key) === true) index.remove(key)
      const vectors = new Float32Array(keys.length * dimensions)
      let row = 0
      for (const vector of entries.values()) vectors.set(vector, dimensions * row++)
      index.add(keys, vectors, 1)
    })

  const upsert = Effect.fn("VectorIndex.upsert")(function*(key: number, vector: Float32Array) {
    yield* writable
    const unit = yield* checkEntry(key, vector, dimensions)
    yield* put(`could not insert key ${key}`, new Map([[key, unit]]))
  })

  const upsertMany = Effect.fn("VectorIndex.upsertMany")(
    function*(entries: ReadonlyArray<readonly [number, Float32Array]>) {
      yield* writable
      const units = yield* checkEntries(entries, dimensions)
      if (units.size > 0) yield* put(`could not insert ${units.size} vectors`, units)
    }
  )

  const remove = Effect.fn("VectorIndex.remove")(function*(key: number) {
    if (readOnly) return yield* Effect.die(readOnlyError())
    if (isKey(key)) yield* attempt(`could not remove key ${key}`, () => index.remove(BigInt(key))).pipe(Effect.orDie)
  })

  const search = Effect.fn("VectorIndex.search")(function*(query: Float32Array, k: number) {
    const unit = yield* toUnit(query, dimensions, "query")
    const wanted = Math.min(Math.floor(k), index.size())
    if (!(wanted >= 1)) return []
    const matches = yield* attempt("search failed", () => index.search(unit, wanted, 1))
    const hits: Array<Hit> = []
    for (let i = 0; i < matches.keys.length; i++) {
      hits.push({ key: Number(matches.keys[i]), similarity: clampCosine(1 - matches.distances[i]!) })
    }
    return hits
  })

  const save = Effect.fn("VectorIndex.save")(function*(path: string) {
    yield* writeAtomically(path, (temporary) => index.save(temporary))
  })

  return {
    upsert,
    upsertMany,
    remove,
    search,
    has: (key) => isKey(key) && index.contains(BigInt(key)) === true,
    size: () => index.size(),
    save
  }
}

// The dense-index file: [rows u32][bytes per vector u32][vectors][64-byte head][graph].
const USEARCH_MAGIC = "usearch"
const USEARCH_HEAD_BYTES = 64
const USEARCH_COS = "c".charCodeAt(0)
const USEARCH_KEY_U64 = 14
const USEARCH_SCALARS = new Map<number, { readonly quantization: Quantization; readonly bytes: number }>([
  [11, { quantization: "f32", bytes: 4 }],
  [12, { quantization: "f16", bytes: 2 }],
  [23, { quantization: "i8", bytes: 1 }]
])

const readUsearchHeader = (path: string) =>
  Effect.gen(function*() {
    const foreign = (why: string) => new IndexError({ message: `${path} is not a usearch cosine index: ${why}` })
    const raw = yield* attempt(`could not read ${path}`, () => {
      const fd = Fs.openSync(path, "r")
      try {
        const size = Fs.fstatSync(fd).size
        if (size < 8 + USEARCH_HEAD_BYTES) return undefined
        const prefix = Buffer.alloc(8)
        Fs.readSync(fd, prefix, 0, 8, 0)
        const rows = prefix.readUInt32LE(0)
        const bytesPerVector = prefix.readUInt32LE(4)
        const headAt = 8 + rows * bytesPerVector
        if (headAt + USEARCH_HEAD_BYTES > size) return undefined
        const head = Buffer.alloc(USEARCH_HEAD_BYTES)
        Fs.readSync(fd, head, 0, USEARCH_HEAD_BYTES, headAt)
        return { rows, bytesPerVector, head }
      } finally {
        Fs.closeSync(fd)
      }
    })
    if (raw === undefined) return yield* foreign("too short for its own vector block and header")
    const { bytesPerVector, head, rows } = raw
    if (head.toString("latin1", 0, 7) !== USEARCH_MAGIC) return yield* foreign("no usearch magic")
    if (head.readUInt16LE(7) !== 2) return yield* foreign(`format version ${head.readUInt16LE(7)}, expected 2`)
    if (head[13] !== USEARCH_COS) return yield* foreign(`metric '${String.fromCharCode(head[13]!)}', expected 'c'`)
    const scalar = USEARCH_SCALARS.get(head[14]!)
    if (scalar === undefined) return yield* foreign(`unsupported scalar kind ${head[14]}`)
    if (head[15] !== USEARCH_KEY_U64) return yield* foreign(`key kind ${head[15]}, expected u64`)
    if (head[41] !== 0) return yield* foreign("multi-vector keys are not supported")
    const dimensions = Number(head.readBigUInt64LE(33))
    if (rows > 0 && bytesPerVector !== dimensions * scalar.bytes) return yield* foreign("vector width mismatch")
    return { dimensions, quantization: scalar.quantization }
  })

// ---------------------------------------------------------------------------------------------
// Brute force

const BRUTE_MAGIC = "OMEGAVEC"
const BRUTE_VERSION = 1
// [magic 8][version u32][dimensions u32][count u32][reserved u32][keys u64 × n][f32 × n × d]
const BRUTE_HEAD_BYTES = 24

/** Exact cosine search over unit vectors in one contiguous Float32Array; a view is a read-only copy. */
function makeBruteForce(): VectorIndex["Service"] {
  const create = Effect.fn("VectorIndex.create")(function*(options: IndexOptions) {
    yield* checkOptions(options)
    return bruteForceHandle(options.dimensions, options.capacity ?? DEFAULT_CAPACITY)
  })

  const load = Effect.fn("VectorIndex.load")(function*(path: string, options: LoadOptions) {
    yield* checkOptions(options)
    const bytes = yield* attempt(`could not read ${path}`, () => Fs.readFileSync(path))
    const corrupt = (why: string) => new IndexError({ message: `${path} is not a brute-force index: ${why}` })
    if (bytes.length < BRUTE_HEAD_BYTES) return yield* corrupt("file too short")
    const data = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    if (bytes.subarray(0, 8).toString("latin1") !== BRUTE_MAGIC) return yield* corrupt("no magic")
    if (data.getUint32(8, true) !== BRUTE_VERSION) return yield* corrupt(`version ${data.getUint32(8, true)}`)
    const dimensions = data.getUint32(12, true)
    const count = data.getUint32(16, true)
    if (dimensions !== options.dimensions) {
      return yield* new IndexError({ message: `${path} holds ${dimensions}-d vectors, expected ${options.dimensions}` })
    }
    if (bytes.length !== BRUTE_HEAD_BYTES + count * 8 + count * dimensions * 4) {
      return yield* corrupt(`length ${bytes.length} does not match ${count} vectors of ${dimensions} dimensions`)
    }
    const entries: Array<readonly [number, Float32Array]> = []
    const seen = new Set<number>()
    const vectorsAt = BRUTE_HEAD_BYTES + count * 8
    for (let slot = 0; slot < count; slot++) {
      const key = Number(data.getBigUint64(BRUTE_HEAD_BYTES + slot * 8, true))
      if (seen.has(key)) return yield* corrupt(`key ${key} appears twice`)
      seen.add(key)
      const vector = new Float32Array(dimensions)
      for (let i = 0; i < dimensions; i++) vector[i] = data.getFloat32(vectorsAt + (slot * dimensions + i) * 4, true)
      entries.push([key, vector])
    }
    const handle = bruteForceHandle(dimensions, Math.max(count, options.capacity ?? DEFAULT_CAPACITY))
    yield* handle.upsertMany(entries).pipe(Effect.mapError((e) => corrupt(e.message)))
    return options.view === true ? readOnlyView(handle) : handle
  })

  return VectorIndex.of({ kind: "brute-force", create, load })
}

const bruteForceHandle = (dimensions: number, capacity: number): IndexHandle => {
  let vectors = new Float32Array(Math.max(1, capacity) * dimensions)
  const keys: Array<number> = [] // slot -> key
  const slots = new Map<number, number>() // key -> slot

  const put = (key: number, unit: Float32Array) => {
    let slot = slots.get(key)
    if (slot === undefined) {
      slot = keys.length
      if ((slot + 1) * dimensions > vectors.length) {
        const grown = new Float32Array(vectors.length * 2)
        grown.set(vectors)
        vectors = grown
      }
      keys.push(key)
      slots.set(key, slot)
    }
    vectors.set(unit, slot * dimensions)
  }

  const upsert = Effect.fn("VectorIndex.upsert")(function*(key: number, vector: Float32Array) {
    put(key, yield* checkEntry(key, vector, dimensions))
  })

  const upsertMany = Effect.fn("VectorIndex.upsertMany")(
    function*(entries: ReadonlyArray<readonly [number, Float32Array]>) {
      for (const [key, unit] of yield* checkEntries(entries, dimensions)) put(key, unit)
    }
  )

  const remove = (key: number) =>
    Effect.sync(() => {
      const slot = slots.get(key)
      if (slot === undefined) return
      // Swap-remove keeps the store dense: the last vector moves into the freed slot.
      const last = keys.length - 1
      if (slot !== last) {
        const moved = keys[last]!
        vectors.copyWithin(slot * dimensions, last * dimensions, (last + 1) * dimensions)
        keys[slot] = moved
        slots.set(moved, slot)
      }
      keys.pop()
      slots.delete(key)
    })

  const search = Effect.fn("VectorIndex.search")(function*(query: Float32Array, k: number) {
    const unit = yield* toUnit(query, dimensions, "query")
    const wanted = Math.min(Math.floor(k), keys.length)
    if (!(wanted >= 1)) return []
    const top = new TopK(wanted)
    for (let slot = 0; slot < keys.length; slot++) {
      const at = slot * dimensions
      let dot = 0
      for (let i = 0; i < dimensions; i++) dot += unit[i]! * vectors[at + i]!
      top.offer(slot, dot)
    }
    return top.sorted().map(({ score, slot }): Hit => ({ key: keys[slot]!, similarity: clampCosine(score) }))
  })

  const save = Effect.fn("VectorIndex.save")(function*(path: string) {
    const count = keys.length
    const bytes = Buffer.alloc(BRUTE_HEAD_BYTES + count * 8 + count * dimensions * 4)
    const data = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    bytes.write(BRUTE_MAGIC, 0, "latin1")
    data.setUint32(8, BRUTE_VERSION, true)
    data.setUint32(12, dimensions, true)
    data.setUint32(16, count, true)
    const vectorsAt = BRUTE_HEAD_BYTES + count * 8
    for (let slot = 0; slot < count; slot++) {
      data.setBigUint64(BRUTE_HEAD_BYTES + slot * 8, BigInt(keys[slot]!), true)
      for (let i = 0; i < dimensions; i++) {
        data.setFloat32(vectorsAt + (slot * dimensions + i) * 4, vectors[slot * dimensions + i]!, true)
      }
    }
    yield* writeAtomically(path, (temporary) => Fs.writeFileSync(temporary, bytes))
  })

  return { upsert, upsertMany, remove, search, has: (key) => slots.has(key), size: () => keys.length, save }
}

const readOnlyView = (handle: IndexHandle): IndexHandle => ({
  ...handle,
  upsert: () => Effect.failSync(readOnlyError),
  upsertMany: () => Effect.failSync(readOnlyError),
  remove: () => Effect.die(readOnlyError())
})

/** Bounded min-heap keeping the `k` highest scores seen. */
class TopK {
  private readonly slots: Array<number> = []
  private readonly scores: Array<number> = []
  private readonly k: number
  constructor(k: number) {
    this.k = k
  }

  offer(slot: number, score: number): void {
    const { slots, scores } = this
    if (slots.length < this.k) {
      slots.push(slot)
      scores.push(score)
      this.up(slots.length - 1)
    } else if (score > scores[0]!) {
      slots[0] = slot
      scores[0] = score
      this.down(0)
    }
  }

  sorted(): Array<{ readonly slot: number; readonly score: number }> {
    return this.slots.map((slot, i) => ({ slot, score: this.scores[i]! })).toSorted((a, b) => b.score - a.score)
  }

  private up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (this.scores[parent]! <= this.scores[i]!) return
      this.swap(i, parent)
      i = parent
    }
  }

  private down(i: number): void {
    const n = this.slots.length
    for (;;) {
      const left = 2 * i + 1
      const right = left + 1
      let smallest = i
      if (left < n && this.scores[left]! < this.scores[smallest]!) smallest = left
      if (right < n && this.scores[right]! < this.scores[smallest]!) smallest = right
      if (smallest === i) return
      this.swap(i, smallest)
      i = smallest
    }
  }

  private swap(a: number, b: number): void {
    const { slots, scores } = this
    const slot = slots[a]!
    const score = scores[a]!
    slots[a] = slots[b]!
    scores[a] = scores[b]!
    slots[b] = slot
    scores[b] = score
  }
}

// ---------------------------------------------------------------------------------------------
// Shared validation and file handling

const readOnlyError = () =>
  new IndexError({ message: "read-only view: this index was memory-mapped and cannot change" })

const attempt = <A>(message: string, f: () => A) =>
  Effect.try({ try: f, catch: (cause) => new IndexError({ message: `${message}: ${describe(cause)}`, cause }) })

const describe = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

// Rounding in f32 (and f16) storage can push a cosine just past ±1.
const clampCosine = (similarity: number): number => Math.min(1, Math.max(-1, similarity))

const isKey = (key: number): boolean => Number.isSafeInteger(key) && key >= 0

const checkEntry = (key: number, vector: Float32Array, dimensions: number): Effect.Effect<Float32Array, IndexError> =>
  isKey(key) ?
    toUnit(vector, dimensions, "vector") :
    Effect.fail(new IndexError({ message: `key ${key} is not a non-negative safe integer` }))

/** Unit copies of every entry's vector by key, last one winning; fails on the first bad entry. */
const checkEntries = (entries: ReadonlyArray<readonly [number, Float32Array]>, dimensions: number) =>
  Effect.gen(function*() {
    const units = new Map<number, Float32Array>()
    for (let i = 0; i < entries.length; i++) {
      const [key, vector] = entries[i]!
      const unit = yield* checkEntry(key, vector, dimensions).pipe(
        Effect.mapError((e) => new IndexError({ message: `entry ${i}: ${e.message}` }))
      )
      units.set(key, unit)
    }
    return units
  })

const QUANTIZATIONS: ReadonlySet<string> = new Set<Quantization>(["f32", "f16", "i8"])

const isCount = (n: number | undefined, min: number) => n === undefined || (Number.isSafeInteger(n) && n >= min)

const checkOptions = (options: IndexOptions): Effect.Effect<void, IndexError> => {
  if (!isCount(options.dimensions, 1)) {
    return Effect.fail(new IndexError({ message: `dimensions must be a positive integer, got ${options.dimensions}` }))
  }
  for (const name of ["capacity", "connectivity", "expansionAdd", "expansionSearch"] as const) {
    if (!isCount(options[name], 0)) {
      return Effect.fail(new IndexError({ message: `${name} must be a non-negative integer, got ${options[name]}` }))
    }
  }
  if (options.quantization !== undefined && !QUANTIZATIONS.has(options.quantization)) {
    return Effect.fail(new IndexError({ message: `unknown quantization ${String(options.quantization)}` }))
  }
  return Effect.void
}

/** A unit-length copy of `v`, or why it has no direction to compare by. */
const toUnit = (
  v: Float32Array,
  dimensions: number,
  what: "vector" | "query"
): Effect.Effect<Float32Array, IndexError> => {
  if (!(v instanceof Float32Array) || v.length !== dimensions) {
    const got = v instanceof Float32Array ? `${v.length}` : typeof v
    return Effect.fail(new IndexError({ message: `${what} must have ${dimensions} dimensions, got ${got}` }))
  }
  let norm = 0
  for (let i = 0; i < v.length; i++) {
    const x = v[i]!
    if (!Number.isFinite(x)) {
      return Effect.fail(
        new IndexError({ message: `${what} component ${i} is ${x}; every component must be finite` })
      )
    }
    norm += x * x
  }
  if (norm === 0) return Effect.fail(new IndexError({ message: `${what} is all zeros and has no direction` }))
  const inv = 1 / Math.sqrt(norm)
  const unit = new Float32Array(dimensions)
  for (let i = 0; i < dimensions; i++) unit[i] = v[i]! * inv
  return Effect.succeed(unit)
}

// A rename never disturbs a reader: a memory-mapped view of the old file keeps its own inode.
const writeAtomically = (path: string, write: (temporary: string) => void) =>
  attempt(`could not save to ${path}`, () => {
    const temporary = `${path}.${process.pid}.${Date.now()}.tmp`
    try {
      write(temporary)
      Fs.renameSync(temporary, path)
    } catch (error) {
      Fs.rmSync(temporary, { force: true })
      throw error
    }
  })
