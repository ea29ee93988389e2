/** Small dense-vector helpers shared by shard aggregation and the federation algorithms. */

/** The dot product of `a` and `b` over their first `length` components (all of `a` by default). */
export const dot = (a: ArrayLike<number>, b: ArrayLike<number>, length: number = a.length): number => {
  let s = 0
  for (let i = 0; i < length; i++) s += a[i]! * b[i]!
  return s
}

export const norm = (v: ArrayLike<number>): number => Math.sqrt(dot(v, v))

/** A unit copy of `v`, or undefined for a zero or non-finite vector (it has no direction). */
export const unit = (v: ArrayLike<number>): Float32Array | undefined => {
  const n = norm(v)
  if (n === 0 || !Number.isFinite(n)) return undefined
  const out = new Float32Array(v.length)
  for (let i = 0; i < v.length; i++) out[i] = v[i]! / n
  return out
}

/** Cosine similarity; 0 when either side has no direction. */
export const cosine = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  const d = norm(a) * norm(b)
  return d === 0 ? 0 : dot(a, b) / d
}

// Seeded randomness lives with the protocol (the quantizer's rotation depends on it).
export { gaussian, seededRandom } from "@omega/protocol"
