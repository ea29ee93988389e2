/** Writable indexed items: an array or a typed array. */
interface Indexed<A> {
  [index: number]: A
  readonly length: number
}

/**
 * Moves `count` items drawn without replacement to the front of `items`, in place (a partial
 * Fisher-Yates shuffle: the first `count` draws of a full one).
 */
export const shuffleFront = <A>(items: Indexed<A>, count: number, random: () => number): void => {
  const n = Math.min(count, items.length)
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(random() * (items.length - i))
    const swap = items[i]!
    items[i] = items[j]!
    items[j] = swap
  }
}
