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

/** A UUID (version nibble 4) drawn from a seeded generator: the same ids on every run. */
export const seededUuid = (random: () => number): string => {
  const hex = Array.from({ length: 32 }, () => Math.floor(random() * 16).toString(16))
  hex[12] = "4"
  return `${hex.slice(0, 8).join("")}-${hex.slice(8, 12).join("")}-${hex.slice(12, 16).join("")}-${
    hex.slice(16, 20).join("")
  }-${hex.slice(20).join("")}`
}
