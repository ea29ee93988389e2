/**
 * Splitting lists into frames: at most so many items per frame, and at most so many bytes, so a
 * frame stays under the wire's caps (MAX_FRAME_BYTES compressed) even when its deflate gains
 * nothing and every id is as long as the schema allows.
 */

/** Body bytes a frame of items is filled to: below MAX_FRAME_BYTES (64 KiB) with room for the rest. */
export const FRAME_BODY_BUDGET = 48 * 1024

/**
 * `items` in runs of at most `maxItems`, each run's `bytesOf` adding up to at most `maxBytes`
 * (an item larger than that alone goes in a run of its own).
 */
export const chunks = <A>(
  items: ReadonlyArray<A>,
  maxItems: number,
  maxBytes: number = Number.POSITIVE_INFINITY,
  bytesOf: (item: A) => number = () => 0
): Array<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  let run: Array<A> = []
  let bytes = 0
  for (const item of items) {
    const size = bytesOf(item)
    if (run.length > 0 && (run.length >= maxItems || bytes + size > maxBytes)) {
      out.push(run)
      run = []
      bytes = 0
    }
    run.push(item)
    bytes += size
  }
  if (run.length > 0) out.push(run)
  return out
}

/**
 * An upper bound on the layout bytes of a co-watch row or count: each id with its length prefix,
 * each number as a varint of at most 6 bytes (weights to 1000, device counts to 2^31), and up to
 * 3 UTF-8 bytes for every UTF-16 unit of an id.
 */
export const coWatchRowBytes = (
  row: { readonly contentId: string; readonly neighbours: ReadonlyArray<{ readonly contentId: string }> }
): number => {
  let bytes = 4 + 3 * row.contentId.length + 6
  for (const n of row.neighbours) bytes += 4 + 3 * n.contentId.length + 6
  return bytes
}

/**
 * Co-watch rows or counts in frame-sized slices, each with `last` set on the final one; at least
 * one slice (empty when there are no rows), since the receiver waits for `last`.
 */
export const coWatchSlices = <A extends Parameters<typeof coWatchRowBytes>[0]>(
  rows: ReadonlyArray<A>,
  maxRows: number
): Array<{ readonly rows: ReadonlyArray<A>; readonly last: boolean }> => {
  const parts = chunks(rows, maxRows, FRAME_BODY_BUDGET, coWatchRowBytes)
  const slices = parts.length > 0 ? parts : [[]]
  return slices.map((slice, i) => ({ rows: slice, last: i === slices.length - 1 }))
}
