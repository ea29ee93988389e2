import { assert, describe, it } from "@effect/vitest"
import { Schema } from "effect"
import { BinaryReadError, BinaryWriteError, makeBinaryLayout } from "./Binary.ts"

const Sample = Schema.Struct({
  int: Schema.Int,
  float: Schema.Finite,
  text: Schema.String,
  flag: Schema.Boolean,
  kind: Schema.Literals(["a", "b", "c"]),
  bytes: Schema.Uint8Array,
  list: Schema.Array(Schema.Int),
  pair: Schema.Tuple([Schema.String, Schema.Int]),
  maybe: Schema.optionalKey(Schema.String),
  nullable: Schema.NullOr(Schema.Int),
  either: Schema.Union([Schema.Struct({ x: Schema.Int }), Schema.String])
})

const sample = {
  int: -12345,
  float: 0.5,
  text: "Amélie (2001) — 天気の子",
  flag: true,
  kind: "c",
  bytes: Uint8Array.of(1, 2, 3),
  list: [1, 2, 3],
  pair: ["p", 9],
  nullable: null,
  either: { x: 4 }
}

const layout = makeBinaryLayout(Sample)
const trip = (value: unknown) => layout.read(layout.write(value))

describe("makeBinaryLayout", () => {
  it("round-trips every kind of node, optional fields present or absent", () => {
    assert.deepStrictEqual(trip(sample), sample)
    const other = { ...sample, maybe: "here", nullable: 3, either: "text", kind: "a", list: [] }
    assert.deepStrictEqual(trip(other), other)
  })

  it("writes integers exactly across the safe range and fractions as float32", () => {
    const Ints = makeBinaryLayout(Schema.Array(Schema.Int))
    const ints = [
      0,
      1,
      -1,
      63,
      64,
      -64,
      -65,
      127,
      128,
      2 ** 31,
      -(2 ** 31) - 1,
      2 ** 40 + 3,
      Number.MAX_SAFE_INTEGER,
      Number.MIN_SAFE_INTEGER
    ]
    assert.deepStrictEqual(Ints.read(Ints.write(ints)), ints)
    assert.strictEqual(Ints.write([5]).length, 2)
    const Floats = makeBinaryLayout(Schema.Array(Schema.Number))
    const floats = [0.1, -2.5, 1e-30, 3e38, Number.NaN, Infinity]
    assert.deepStrictEqual(Floats.read(Floats.write(floats)), floats.map(Math.fround))
    assert.throws(() => Floats.write([1e39]), BinaryWriteError)
  })

  it("packs canonical UUIDs into 16 bytes and leaves other strings alone", () => {
    const Text = makeBinaryLayout(Schema.String)
    const id = "0e5c1a4e-5d7e-4c8e-9a53-2f1b7d9c0a11"
    assert.strictEqual(Text.write(id).length, 17)
    assert.strictEqual(Text.read(Text.write(id)), id)
    assert.strictEqual(Text.read(Text.write(id.toUpperCase())), id.toUpperCase())
    assert.strictEqual(Text.write(id.toUpperCase()).length, 37)
    assert.throws(() => Text.write("\ud800"), BinaryWriteError)
  })

  it("refuses values that do not fit", () => {
    assert.throws(() => layout.write({ ...sample, int: 1.5 }), BinaryWriteError)
    assert.throws(() => layout.write({ ...sample, kind: "z" }), BinaryWriteError)
    const { text: _, ...missing } = sample
    assert.throws(() => layout.write(missing), /missing required field "text"/)
    assert.throws(() => layout.write([]), BinaryWriteError)
  })

  it("refuses bytes that do not follow the layout", () => {
    const bytes = layout.write(sample)
    for (let n = 0; n < bytes.length; n++) assert.throws(() => layout.read(bytes.subarray(0, n)), BinaryReadError)
    assert.throws(() => layout.read(Uint8Array.from([...bytes, 0])), /trailing/)
    const Text = makeBinaryLayout(Schema.String)
    assert.throws(() => Text.read(Uint8Array.of(3)), /string kind/)
    assert.throws(() => Text.read(Uint8Array.of(4, 0xc3, 0x28)), /UTF-8/)
    const List = makeBinaryLayout(Schema.Array(Schema.Int))
    assert.throws(() => List.read(Uint8Array.of(0xff, 0xff, 0xff, 0x0f, 0)), /array of/)
    assert.throws(() => List.read(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)), /varint/)
    const Flag = makeBinaryLayout(Schema.Boolean)
    assert.throws(() => Flag.read(Uint8Array.of(2)), /boolean/)
    const Optional = makeBinaryLayout(Schema.Struct({ a: Schema.optionalKey(Schema.Int) }))
    assert.throws(() => Optional.read(Uint8Array.of(0b10)), /presence bits/)
    const Int = makeBinaryLayout(Schema.Int)
    assert.throws(() => Int.read(Uint8Array.of(1)), /negative zero/)
  })

  it("keeps the presence of every optional field apart, beyond 32 of them too", () => {
    const fields = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`f${i}`, Schema.optionalKey(Schema.Int)]))
    const Wide = makeBinaryLayout(Schema.Struct(fields))
    for (const present of [[0], [32], [0, 39], [7, 8, 31, 33], []]) {
      const value = Object.fromEntries(present.map((i) => [`f${i}`, 100 + i]))
      assert.deepStrictEqual(Wide.read(Wide.write(value)), value)
    }
  })

  it("reads nesting down to 32 levels and refuses deeper, naming the place", () => {
    // 33 arrays, one inside the other: the innermost is 32 levels down, its elements 33.
    let schema: Schema.Top = Schema.Array(Schema.Int)
    let empty: unknown = []
    let full: unknown = [1]
    for (let i = 0; i < 32; i++) {
      schema = Schema.Array(schema)
      empty = [empty]
      full = [full]
    }
    const Deep = makeBinaryLayout(schema)
    assert.deepStrictEqual(Deep.read(Deep.write(empty)), empty)
    assert.throws(() => Deep.read(Deep.write(full)), /at (\[0\]){33}: nesting deeper than 32/)
  })

  it("marks an unknown top-level union member so a newer peer can be told apart", () => {
    const Frames = makeBinaryLayout(Schema.Union([Schema.Struct({ a: Schema.Int }), Schema.String]))
    try {
      Frames.read(Uint8Array.of(5))
      assert.fail("expected a read error")
    } catch (error) {
      assert.instanceOf(error, BinaryReadError)
      assert.strictEqual((error as BinaryReadError).kind, "unknown-variant")
    }
  })

  it("refuses an array longer than its schema's maximum before reading its elements", () => {
    const Capped = makeBinaryLayout(Schema.Struct({
      few: Schema.Array(Schema.Int).check(Schema.isMaxLength(3)),
      some: Schema.Array(Schema.Int).check(Schema.isBetweenLength(1, 2).and(Schema.isMinLength(1)))
    }))
    const value = { few: [1, 2, 3], some: [4, 5] }
    assert.deepStrictEqual(Capped.read(Capped.write(value)), value)
    // Four elements claimed, none of them present: only the count was looked at.
    const readError = (bytes: Uint8Array) => {
      try {
        Capped.read(bytes)
      } catch (error) {
        assert.instanceOf(error, BinaryReadError)
        return error as BinaryReadError
      }
      return assert.fail("expected a read error")
    }
    const few = readError(Uint8Array.of(4, 0, 0, 0, 0, 0, 0))
    assert.strictEqual(few.kind, "too-long")
    assert.include(few.message, "at few: array of 4 elements, expected at most 3")
    const some = readError(Uint8Array.of(0, 3, 0, 0, 0))
    assert.include(some.message, "at some: array of 3 elements, expected at most 2")
  })

  it("refuses schemas it has no layout for, at construction", () => {
    assert.throws(() => makeBinaryLayout(Schema.Record(Schema.String, Schema.Int)), /records/)
    assert.throws(() => makeBinaryLayout(Schema.BigInt), /BigInt/)
    assert.throws(() => makeBinaryLayout(Schema.Date), /declaration/)
  })
})
