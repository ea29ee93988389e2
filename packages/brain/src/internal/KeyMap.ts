/** Stable numeric keys for string ids (vector indices key by integer). */
export class KeyMap<Id> {
  private readonly byId = new Map<Id, number>()
  private readonly byKey = new Map<number, Id>()
  private next = 1

  keyOf(id: Id): number {
    let key = this.byId.get(id)
    if (key === undefined) {
      key = this.next++
      this.byId.set(id, key)
      this.byKey.set(key, id)
    }
    return key
  }

  idOf(key: number): Id | undefined {
    return this.byKey.get(key)
  }

  release(id: Id): number | undefined {
    const key = this.byId.get(id)
    if (key !== undefined) {
      this.byId.delete(id)
      this.byKey.delete(key)
    }
    return key
  }

  /** Turns index hits into the values they stand for, dropping keys no longer known. */
  resolve<A>(
    hits: ReadonlyArray<{ readonly key: number; readonly similarity: number }>,
    values: ReadonlyMap<Id, A>
  ): Array<{ readonly value: A; readonly similarity: number }> {
    const out: Array<{ readonly value: A; readonly similarity: number }> = []
    for (const hit of hits) {
      const id = this.byKey.get(hit.key)
      const value = id === undefined ? undefined : values.get(id)
      if (value !== undefined) out.push({ value, similarity: hit.similarity })
    }
    return out
  }

  entries(): Array<readonly [Id, number]> {
    return [...this.byId.entries()]
  }

  /** Replaces the mapping with saved entries; new ids continue after the largest key. */
  restore(entries: ReadonlyArray<readonly [Id, number]>): void {
    this.clear()
    for (const [id, key] of entries) {
      this.byId.set(id, key)
      this.byKey.set(key, id)
      this.next = Math.max(this.next, key + 1)
    }
  }

  clear(): void {
    this.byId.clear()
    this.byKey.clear()
  }
}
