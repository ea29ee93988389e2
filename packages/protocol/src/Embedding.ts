/** Embeddings: L2-comparable float vectors of a fixed width, validated on every boundary. */
import { Schema, SchemaTransformation } from "effect"
import { EMBEDDING_DIMENSIONS } from "./Constants.ts"

const isFloat32Array = (u: unknown): u is Float32Array => u instanceof Float32Array

const hasDimensions = (dimensions: number) =>
  Schema.makeFilter<Float32Array>(
    (v) => v.length === dimensions || `expected ${dimensions} dimensions, got ${v.length}`
  )

const finiteAndNonZero = Schema.makeFilter<Float32Array>((v) => {
  // A NaN or infinite component makes the norm NaN or infinite (float32 squares cannot overflow a
  // double), so one check of the norm covers every component; the culprit is looked up only then.
  let norm = 0
  for (let i = 0; i < v.length; i++) norm += v[i]! * v[i]!
  if (!Number.isFinite(norm)) {
    const i = v.findIndex((x) => !Number.isFinite(x))
    return `component ${i} is ${v[i]}; every component must be finite`
  }
  // A zero vector has no direction, so cosine similarity to it is undefined.
  return norm > 0 || "the zero vector is not an embedding"
})

/** A 384-d embedding held as a Float32Array; rejects other widths, NaN, Infinity and the zero vector. */
export const Embedding = Schema.declare(isFloat32Array, {
  identifier: "Embedding",
  description: `a Float32Array of ${EMBEDDING_DIMENSIONS} finite numbers`
}).check(hasDimensions(EMBEDDING_DIMENSIONS), finiteAndNonZero)
export type Embedding = typeof Embedding.Type

/** An embedding written as a JSON array of numbers (REST API), decoded to a Float32Array. */
export const EmbeddingFromNumbers = Schema.Array(Schema.Finite).pipe(
  Schema.check(Schema.isBetweenLength(EMBEDDING_DIMENSIONS, EMBEDDING_DIMENSIONS)),
  Schema.decodeTo(
    Embedding,
    SchemaTransformation.transform<Float32Array, ReadonlyArray<number>>({
      decode: (numbers: ReadonlyArray<number>) => Float32Array.from(numbers),
      encode: (vector: Float32Array) => Array.from(vector)
    })
  )
)
