import { assert, describe, it } from "@effect/vitest"
import { seededRandom } from "@omega/protocol"
import { shuffleFront } from "./Shuffle.ts"

describe("shuffleFront", () => {
  it("moves distinct items to the front and keeps every item", () => {
    const items = Array.from({ length: 50 }, (_, i) => i)
    shuffleFront(items, 10, seededRandom(3))
    assert.strictEqual(new Set(items.slice(0, 10)).size, 10)
    assert.deepStrictEqual([...items].sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i))
    assert.notDeepEqual(items.slice(0, 10), Array.from({ length: 10 }, (_, i) => i))
  })

  it("draws every item about equally often, and handles typed arrays and counts beyond the length", () => {
    const random = seededRandom(11)
    const drawn = Array.from({ length: 20 }, () => 0)
    for (let r = 0; r < 4_000; r++) {
      const pool = Int32Array.from({ length: 20 }, (_, i) => i)
      shuffleFront(pool, 5, random)
      for (const i of pool.subarray(0, 5)) drawn[i]! += 1
    }
    // 1,000 expected per item.
    for (const count of drawn) assert.isTrue(count > 850 && count < 1_150, `drawn ${count} times`)
    const all = [1, 2, 3]
    shuffleFront(all, 10, random)
    assert.deepStrictEqual([...all].sort(), [1, 2, 3])
  })
})
