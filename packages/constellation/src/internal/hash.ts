/** A 32-bit hash of an id (FNV-1a over its UTF-16 code units), for remembering ids compactly. */
export const idHash = (id: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193)
  return h >>> 0
}
