/** Seeded randomness that gives the same numbers on every platform (integer arithmetic only). */

/** mulberry32: a uniform generator in [0, 1) from a 32-bit seed. */
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
