/** Small dense-vector helpers shared by the federation algorithms. */

export const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let s = 0
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!
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

/** mulberry32: a uniform generator in [0, 1) from a 32-bit seed (the same numbers on every platform). */
export const seededRandom = (seed: number): () => number => {
  let state = seed | 0
  return () => {
    state = (state + 0x6d2b79f5) | 0
    let t = Math.imul(state ^ (state >>> 15), 1 | state)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A standard normal sample (Box-Muller) from a uniform generator. */
export const gaussian = (random: () => number): number => {
  let u = 0
  while (u === 0) u = random()
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random())
}
