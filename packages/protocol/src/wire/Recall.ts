/**
 * How well quantized embeddings keep nearest neighbours, measured the way the TV uses them:
 * it holds decoded global patterns (and catalog items) in its index and searches them with
 * its own full-precision context embedding.
 */

const dot = (a: Float32Array, b: Float32Array): number => {
  let s = 0
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!
  return s
}

/**
 * recall@k of `decoded` against `originals` (same order, unit vectors). For each query q =
 * originals[i] (the first `queries` of them), the true top-k are the k originals most similar
 * to q by cosine, q itself excluded; the found top-k are the k DECODED vectors most similar to
 * the ORIGINAL q, q's own code excluded. recall = |found ∩ true| / k, averaged over queries.
 * A found item whose true similarity ties the k-th best counts as a hit.
 */
export const recallAtK = (
  originals: ReadonlyArray<Float32Array>,
  decoded: ReadonlyArray<Float32Array>,
  k = 10,
  queries = originals.length
): number => {
  const n = originals.length
  const count = Math.min(queries, n)
  if (count === 0 || n <= k) return 1
  let total = 0
  const truth = new Float64Array(n)
  const found = new Float64Array(n)
  for (let q = 0; q < count; q++) {
    const query = originals[q]!
    for (let i = 0; i < n; i++) {
      truth[i] = i === q ? -Infinity : dot(query, originals[i]!)
      found[i] = i === q ? -Infinity : dot(query, decoded[i]!)
    }
    const kth = [...truth].sort((a, b) => b - a)[k - 1]!
    const top = Array.from(found.keys()).sort((a, b) => found[b]! - found[a]!).slice(0, k)
    let hits = 0
    for (const i of top) if (truth[i]! >= kth - 1e-9) hits++
    total += hits / k
  }
  return total / count
}
