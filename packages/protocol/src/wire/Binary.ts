/**
 * A compact binary layout derived from a schema's encoded form, so the wire format is the
 * schema and nothing else. Struct fields are written in declaration order without names,
 * optional fields behind a presence bitmap, union members and literals as an index,
 * integers (schemas with `isInt`) as varints, other numbers as float32, strings as UTF-8
 * (canonical lowercase UUIDs as 16 raw bytes), `Uint8Array` as length-prefixed bytes.
 *
 * The layout is positional: reordering fields, members or literals of a schema that travels
 * changes the format, which is why frames carry a protocol version. Reading is bounded by the
 * input (every length is checked against the bytes left) and only produces the encoded value;
 * validation is the schema's job, except an array's maximum length (its own `isMaxLength` or
 * `isBetweenLength` check), which is enforced before any element is read so that a small frame
 * cannot make the reader and the schema decode thousands of elements only to refuse them.
 */
import { Data, type Schema, SchemaAST } from "effect"

/**
 * The bytes do not follow the layout. `kind` says how: "unknown-variant" for an out-of-range
 * top-level union index (a newer peer), "too-long" for an array longer than its schema allows
 * (the value could never pass the schema), "layout" for anything else.
 */
export class BinaryReadError extends Data.TaggedError("BinaryReadError")<{
  readonly message: string
  readonly kind: "layout" | "unknown-variant" | "too-long"
}> {}

/** The value does not fit the layout (it was not produced by encoding with the schema). */
export class BinaryWriteError extends Data.TaggedError("BinaryWriteError")<{
  readonly message: string
}> {}

/** Writes and reads values of a schema's encoded form. */
export interface BinaryLayout {
  /** Serializes an encoded value; throws BinaryWriteError when it does not fit the schema. */
  readonly write: (encoded: unknown) => Uint8Array
  /** Parses bytes to an encoded value (not yet validated); throws BinaryReadError. */
  readonly read: (bytes: Uint8Array) => unknown
}

/** Nesting beyond this depth is rejected on read (the protocol schemas nest about 6 deep). */
const MAX_DEPTH = 32

/** Derives the binary layout of `schema`'s encoded form; throws on a schema it cannot lay out. */
export const makeBinaryLayout = (schema: Schema.Top): BinaryLayout => {
  const root = SchemaAST.toEncoded(schema.ast)
  assertSupported(root, new Set())
  // The schema is walked once, here: reading and writing run functions compiled for each node,
  // with the path to a node kept as a stack of segments that becomes a string only in an error.
  const fits = memoized(fitsOf)
  const writeRoot = memoized<WriteFn>((ast, compile) => writerOf(ast, compile, fits))(root)
  const readRoot = memoized(readerOf)(root)
  return {
    write: (encoded) => {
      const out = new Writer()
      writeRoot(encoded, out)
      return out.finish()
    },
    read: (bytes) => {
      const input = new Reader(bytes)
      const value = readRoot(input, 0)
      if (input.offset !== bytes.length) {
        throw new BinaryReadError({
          message: `${bytes.length - input.offset} trailing bytes after the value`,
          kind: "layout"
        })
      }
      return value
    }
  }
}

const assertSupported = (ast: SchemaAST.AST, seen: Set<SchemaAST.AST>): void => {
  if (seen.has(ast)) return
  seen.add(ast)
  switch (ast._tag) {
    case "String":
    case "Number":
    case "Boolean":
    case "Null":
    case "Undefined":
    case "Void":
    case "Literal":
      return
    case "Declaration":
      if (!isBytes(ast)) throw new Error(`no binary layout for the declaration ${ast.annotations?.expected ?? "?"}`)
      return
    case "Objects":
      if (ast.indexSignatures.length > 0) throw new Error("no binary layout for records (index signatures)")
      for (const p of ast.propertySignatures) {
        if (typeof p.name !== "string") throw new Error("no binary layout for symbol keys")
        assertSupported(p.type, seen)
      }
      return
    case "Arrays":
      if (ast.rest.length > 1) throw new Error("no binary layout for elements after a rest element")
      for (const e of ast.elements) {
        if (SchemaAST.isOptional(e)) throw new Error("no binary layout for optional tuple elements")
        assertSupported(e, seen)
      }
      for (const r of ast.rest) assertSupported(r, seen)
      return
    case "Union":
      for (const t of ast.types) assertSupported(t, seen)
      return
    case "Suspend":
      return assertSupported(ast.thunk(), seen)
    default:
      throw new Error(`no binary layout for ${ast._tag}`)
  }
}

const isBytes = (ast: SchemaAST.Declaration): boolean =>
  (ast.annotations?.["representation"] as { readonly id?: unknown } | undefined)?.id === "effect/schema/Uint8Array"

/** Whether a number node is an integer (written as a varint); asked once per node, when it is compiled. */
const isIntNode = (ast: SchemaAST.AST): boolean =>
  ast.checks !== undefined && hasCheck(ast.checks, "effect/schema/isInt")
const hasCheck = (checks: ReadonlyArray<SchemaAST.Check<unknown>>, id: string): boolean =>
  checks.some((check) =>
    (check.annotations?.["representation"] as { readonly id?: unknown } | undefined)?.id === id ||
    (check._tag === "FilterGroup" && hasCheck(check.checks, id))
  )

/**
 * The most elements an array node's own checks allow (`isMaxLength`, `isBetweenLength`, also inside
 * a group), or Infinity: read from the schema so the wire keeps no limits of its own.
 */
const maxLengthOf = (checks: ReadonlyArray<SchemaAST.Check<unknown>> | undefined): number => {
  let max = Number.POSITIVE_INFINITY
  for (const check of checks ?? []) {
    if (check._tag === "FilterGroup") {
      max = Math.min(max, maxLengthOf(check.checks))
      continue
    }
    const representation = check.annotations?.["representation"] as
      | { readonly id?: unknown; readonly payload?: { readonly maxLength?: unknown; readonly maximum?: unknown } }
      | undefined
    const bound = representation?.id === "effect/schema/isMaxLength"
      ? representation.payload?.maxLength
      : representation?.id === "effect/schema/isBetweenLength"
      ? representation.payload?.maximum
      : undefined
    if (typeof bound === "number") max = Math.min(max, bound)
  }
  return max
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const HEX_DIGITS = Array.from("0123456789abcdef", (c) => c.charCodeAt(0))
const UUID_TEXT = new Uint8Array(36)

/**
 * The canonical text of a 16-byte UUID as one flat string. (Joining 20 pieces with `+` gives V8 a
 * tree of cons strings, about 490 bytes per id held in a Map, against about 80 flat: a shard keeps
 * tens of thousands of decoded pattern ids.)
 */
const uuidText = (b: Uint8Array): string => {
  let o = 0
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) UUID_TEXT[o++] = 45 // "-"
    UUID_TEXT[o++] = HEX_DIGITS[b[i]! >> 4]!
    UUID_TEXT[o++] = HEX_DIGITS[b[i]! & 15]!
  }
  return String.fromCharCode.apply(null, UUID_TEXT as unknown as Array<number>)
}
const utf8 = new TextEncoder()
const strictUtf8 = new TextDecoder("utf-8", { fatal: true })
const describe = (u: unknown) => (u === null ? "null" : Array.isArray(u) ? "an array" : typeof u)
const isObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u) && !(u instanceof Uint8Array)

/** The path segments to a node (field names and array indexes) as `a.b[2].c`, or `<root>`. */
const renderPath = (segments: ReadonlyArray<string | number>): string => {
  let path = ""
  for (const segment of segments) {
    path += typeof segment === "number" ? `[${segment}]` : path === "" ? segment : `.${segment}`
  }
  return path || "<root>"
}

type Fits = (value: unknown) => boolean

/**
 * A function per schema node, built once however often the node appears: `build` gets the node
 * and a way to compile its children (lazily for a Suspend, so recursive schemas terminate).
 */
const memoized = <F>(build: (ast: SchemaAST.AST, compile: (ast: SchemaAST.AST) => F) => F) => {
  const cache = new Map<SchemaAST.AST, F>()
  const compile = (ast: SchemaAST.AST): F => {
    const known = cache.get(ast)
    if (known !== undefined) return known
    const compiled = build(ast, compile)
    cache.set(ast, compiled)
    return compiled
  }
  return compile
}

/** Whether a value can be written as `ast`: what picks the union member to write. */
const fitsOf = (ast: SchemaAST.AST, compile: (ast: SchemaAST.AST) => Fits): Fits => {
  let fits: Fits
  switch (ast._tag) {
    case "Literal": {
      const literal = ast.literal
      fits = (value) => value === literal
      break
    }
    case "String":
      fits = (value) => typeof value === "string"
      break
    case "Number":
      fits = (value) => typeof value === "number"
      break
    case "Boolean":
      fits = (value) => typeof value === "boolean"
      break
    case "Null":
      fits = (value) => value === null
      break
    case "Undefined":
    case "Void":
      fits = (value) => value === undefined
      break
    case "Declaration":
      fits = (value) => value instanceof Uint8Array
      break
    case "Arrays":
      fits = Array.isArray
      break
    case "Objects": {
      // Present required fields, and literal fields (a frame's _tag) equal to their literal.
      const fields = ast.propertySignatures.map((p) => ({
        key: p.name as string,
        optional: SchemaAST.isOptional(p.type),
        literal: p.type._tag === "Literal" ? { value: p.type.literal } : undefined
      }))
      fits = (value) =>
        isObject(value) &&
        fields.every((f) =>
          Object.hasOwn(value, f.key) ? f.literal === undefined || value[f.key] === f.literal.value : f.optional
        )
      break
    }
    case "Union": {
      const members = ast.types.map(compile)
      fits = (value) => members.some((m) => m(value))
      break
    }
    case "Suspend": {
      let inner: Fits | undefined
      fits = (value) => (inner ??= compile(ast.thunk()))(value)
      break
    }
    default:
      fits = () => false
  }
  return fits
}

type WriteFn = (value: unknown, out: Writer) => void

const writerOf = (
  ast: SchemaAST.AST,
  compile: (ast: SchemaAST.AST) => WriteFn,
  fits: (ast: SchemaAST.AST) => Fits
): WriteFn => {
  switch (ast._tag) {
    case "Literal": {
      const literal = ast.literal
      return (value, out) => {
        if (value !== literal) throw out.mismatch(JSON.stringify(literal), value)
      }
    }
    case "Null":
      return (value, out) => {
        if (value !== null) throw out.mismatch("null", value)
      }
    case "Undefined":
    case "Void": {
      const expected = ast._tag.toLowerCase()
      return (value, out) => {
        if (value !== undefined) throw out.mismatch(expected, value)
      }
    }
    case "Boolean":
      return (value, out) => {
        if (typeof value !== "boolean") throw out.mismatch("a boolean", value)
        out.byte(value ? 1 : 0)
      }
    case "Number":
      return isIntNode(ast)
        ? (value, out) => {
          if (typeof value !== "number") throw out.mismatch("a number", value)
          if (!Number.isSafeInteger(value)) throw out.mismatch("a safe integer", value)
          out.signedVarint(value)
        }
        : (value, out) => {
          if (typeof value !== "number") throw out.mismatch("a number", value)
          if (Number.isFinite(value) && !Number.isFinite(Math.fround(value))) {
            throw out.error(`${value} is outside the float32 range`)
          }
          out.float32(value)
        }
    case "String":
      return (value, out) => {
        if (typeof value !== "string") throw out.mismatch("a string", value)
        if (!value.isWellFormed()) throw out.error("string has lone surrogates")
        if (value.length === 36 && UUID.test(value)) {
          out.varint(1)
          for (let i = 0; i < 36; i++) {
            if (i === 8 || i === 13 || i === 18 || i === 23) continue
            out.byte(parseInt(value.slice(i, i + 2), 16))
            i++
          }
        } else {
          const bytes = utf8.encode(value)
          out.varint(bytes.length * 2)
          out.bytes(bytes)
        }
      }
    case "Declaration":
      return (value, out) => {
        if (!(value instanceof Uint8Array)) throw out.mismatch("a Uint8Array", value)
        out.varint(value.length)
        out.bytes(value)
      }
    case "Arrays": {
      const elements = ast.elements.map(compile)
      const rest = ast.rest[0] === undefined ? undefined : compile(ast.rest[0])
      const fixed = elements.length
      return (value, out) => {
        if (!Array.isArray(value)) throw out.mismatch("an array", value)
        if (rest === undefined ? value.length !== fixed : value.length < fixed) {
          throw out.mismatch(`${fixed} elements`, value)
        }
        for (let i = 0; i < fixed; i++) {
          out.path.push(i)
          elements[i]!(value[i], out)
          out.path.pop()
        }
        if (rest !== undefined) {
          out.varint(value.length - fixed)
          for (let i = fixed; i < value.length; i++) {
            out.path.push(i)
            rest(value[i], out)
            out.path.pop()
          }
        }
      }
    }
    case "Objects": {
      const fields = ast.propertySignatures.map((p) => ({
        key: p.name as string,
        optional: SchemaAST.isOptional(p.type),
        write: compile(p.type)
      }))
      const optional = fields.filter((f) => f.optional)
      return (value, out) => {
        if (!isObject(value)) throw out.mismatch("an object", value)
        // Optional fields behind a presence bitmap, eight per byte.
        for (let i = 0; i < optional.length; i += 8) {
          let mask = 0
          for (let j = 0; j < 8 && i + j < optional.length; j++) {
            if (Object.hasOwn(value, optional[i + j]!.key)) mask |= 1 << j
          }
          out.byte(mask)
        }
        for (const field of fields) {
          if (!Object.hasOwn(value, field.key)) {
            if (field.optional) continue
            throw out.error(`missing required field "${field.key}"`)
          }
          out.path.push(field.key)
          field.write(value[field.key], out)
          out.path.pop()
        }
      }
    }
    case "Union": {
      const members = ast.types.map((t) => ({ fits: fits(t), write: compile(t) }))
      return (value, out) => {
        const index = members.findIndex((m) => m.fits(value))
        if (index < 0) throw out.mismatch("a member of the union", value)
        if (members.length > 1) out.varint(index)
        members[index]!.write(value, out)
      }
    }
    case "Suspend": {
      let inner: WriteFn | undefined
      return (value, out) => (inner ??= compile(ast.thunk()))(value, out)
    }
    default: {
      const tag = ast._tag
      return (_value, out) => {
        throw out.error(`no binary layout for ${tag}`)
      }
    }
  }
}

type ReadFn = (input: Reader, depth: number) => unknown

const readerOf = (ast: SchemaAST.AST, compile: (ast: SchemaAST.AST) => ReadFn): ReadFn => {
  switch (ast._tag) {
    case "Literal": {
      const literal = ast.literal
      return () => literal
    }
    case "Null":
      return () => null
    case "Undefined":
    case "Void":
      return () => undefined
    case "Boolean":
      return (input) => {
        const b = input.byte()
        if (b > 1) input.fail(`boolean byte ${b}`)
        return b === 1
      }
    case "Number":
      return isIntNode(ast) ? (input) => input.signedVarint() : (input) => input.float32()
    case "String":
      return (input) => {
        const header = input.varint()
        if (header === 1) {
          return uuidText(input.bytes(16))
        }
        if (header % 2 === 1) input.fail(`unknown string kind ${header}`)
        const bytes = input.bytes(header / 2)
        try {
          return strictUtf8.decode(bytes)
        } catch {
          return input.fail("invalid UTF-8")
        }
      }
    case "Declaration":
      return (input) => input.bytes(input.varint()).slice()
    case "Arrays": {
      const elements = ast.elements.map(compile)
      const rest = ast.rest[0] === undefined ? undefined : compile(ast.rest[0])
      const maxLength = maxLengthOf(ast.checks)
      return (input, depth) => {
        const out: Array<unknown> = []
        for (let i = 0; i < elements.length; i++) {
          input.path.push(i)
          input.enter(depth + 1)
          out.push(elements[i]!(input, depth + 1))
          input.path.pop()
        }
        if (rest !== undefined) {
          const count = input.varint()
          // Every element takes at least one byte in the protocol schemas; a larger count is a lie.
          if (count > input.remaining) input.fail(`array of ${count} elements in ${input.remaining} bytes`)
          // Refused before any element is read: decoding them all first cost a shard ~0.5 s per frame.
          const length = out.length + count
          if (length > maxLength) {
            throw new BinaryReadError({
              message: `at ${renderPath(input.path)}: array of ${length} elements, expected at most ${maxLength}`,
              kind: "too-long"
            })
          }
          for (let i = 0; i < count; i++) {
            input.path.push(out.length)
            input.enter(depth + 1)
            out.push(rest(input, depth + 1))
            input.path.pop()
          }
        }
        return out
      }
    }
    case "Objects": {
      let optionals = 0
      const fields = ast.propertySignatures.map((p) => {
        // An optional field's place in the presence bitmap: the first 32 bits are kept in one
        // number (bit n is 1 << n), any further bytes apart (byte and mask).
        const bit = SchemaAST.isOptional(p.type) ? optionals++ : -1
        return {
          key: p.name as string,
          optional: bit >= 0,
          low: bit >= 0 && bit < 32 ? 1 << bit : 0,
          byte: bit >> 3,
          mask: 1 << (bit & 7),
          read: compile(p.type)
        }
      })
      const bitmapBytes = Math.ceil(optionals / 8)
      return (input, depth) => {
        // Presence bits, eight per byte.
        let low = 0
        let high: Array<number> | undefined
        for (let i = 0; i < bitmapBytes; i++) {
          const mask = input.byte()
          const width = Math.min(8, optionals - 8 * i)
          if (mask >> width !== 0) input.fail("presence bits for fields that do not exist")
          if (i < 4) low |= mask << (8 * i)
          else (high ??= []).push(mask)
        }
        const out: Record<string, unknown> = {}
        for (const field of fields) {
          if (
            field.optional && (field.low !== 0 ? (low & field.low) === 0 : (high![field.byte - 4]! & field.mask) === 0)
          ) {
            continue
          }
          input.path.push(field.key)
          input.enter(depth + 1)
          out[field.key] = field.read(input, depth + 1)
          input.path.pop()
        }
        return out
      }
    }
    case "Union": {
      const members = ast.types.map(compile)
      const count = members.length
      return (input, depth) => {
        const index = count > 1 ? input.varint() : 0
        const member = members[index]
        if (member === undefined) {
          throw new BinaryReadError({
            message: `at ${renderPath(input.path)}: variant ${index} of ${count}`,
            kind: depth === 0 ? "unknown-variant" : "layout"
          })
        }
        return member(input, depth)
      }
    }
    case "Suspend": {
      let inner: ReadFn | undefined
      return (input, depth) => {
        input.enter(depth + 1)
        return (inner ??= compile(ast.thunk()))(input, depth + 1)
      }
    }
    default: {
      const tag = ast._tag
      return (input) => input.fail(`no binary layout for ${tag}`)
    }
  }
}

class Writer {
  /** Segments of the path to the value being written, for error messages. */
  readonly path: Array<string | number> = []
  private buffer = new Uint8Array(256)
  private view = new DataView(this.buffer.buffer)
  private length = 0

  private ensure(n: number) {
    if (this.length + n <= this.buffer.length) return
    const next = new Uint8Array(Math.max(this.buffer.length * 2, this.length + n))
    next.set(this.buffer.subarray(0, this.length))
    this.buffer = next
    this.view = new DataView(next.buffer)
  }
  byte(b: number) {
    this.ensure(1)
    this.buffer[this.length++] = b
  }
  bytes(b: Uint8Array) {
    this.ensure(b.length)
    this.buffer.set(b, this.length)
    this.length += b.length
  }
  /** Unsigned LEB128 for 0..2^53; arithmetic, not bit operations, past 32 bits. */
  varint(n: number) {
    while (n >= 0x80) {
      this.byte((n % 0x80) | 0x80)
      n = Math.floor(n / 0x80)
    }
    this.byte(n)
  }
  /** Sign in bit 0 of the first byte, then the magnitude: exact for every safe integer. */
  signedVarint(n: number) {
    const negative = n < 0 ? 1 : 0
    const magnitude = Math.abs(n)
    const low = magnitude % 0x40
    const high = Math.floor(magnitude / 0x40)
    this.byte((high > 0 ? 0x80 : 0) | (low << 1) | negative)
    if (high > 0) this.varint(high)
  }
  float32(x: number) {
    this.ensure(4)
    this.view.setFloat32(this.length, x, true)
    this.length += 4
  }
  error(message: string): BinaryWriteError {
    return new BinaryWriteError({ message: `at ${renderPath(this.path)}: ${message}` })
  }
  mismatch(expected: string, value: unknown): BinaryWriteError {
    return this.error(`expected ${expected}, got ${describe(value)}`)
  }
  finish(): Uint8Array {
    return this.buffer.slice(0, this.length)
  }
}

class Reader {
  offset = 0
  /** Segments of the path to the value being read, for error messages. */
  readonly path: Array<string | number> = []
  private readonly input: Uint8Array
  private readonly view: DataView
  constructor(input: Uint8Array) {
    this.input = input
    this.view = new DataView(input.buffer, input.byteOffset, input.byteLength)
  }
  get remaining() {
    return this.input.length - this.offset
  }
  fail(message: string): never {
    throw new BinaryReadError({ message: `at ${renderPath(this.path)}: ${message}`, kind: "layout" })
  }
  /** Before reading a node `depth` levels down (its path already pushed): refuses one too deep. */
  enter(depth: number): void {
    if (depth > MAX_DEPTH) this.fail(`nesting deeper than ${MAX_DEPTH}`)
  }
  byte(): number {
    if (this.offset >= this.input.length) this.fail("unexpected end of input")
    return this.input[this.offset++]!
  }
  bytes(n: number): Uint8Array {
    if (n > this.remaining) this.fail(`${n} bytes announced, ${this.remaining} left`)
    const out = this.input.subarray(this.offset, this.offset + n)
    this.offset += n
    return out
  }
  varint(): number {
    let result = 0
    let scale = 1
    for (let i = 0; i < 8; i++) {
      const b = this.byte()
      result += (b & 0x7f) * scale
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(result)) this.fail("varint beyond 2^53")
        return result
      }
      scale *= 0x80
    }
    return this.fail("varint longer than 8 bytes")
  }
  signedVarint(): number {
    const first = this.byte()
    const low = (first >> 1) & 0x3f
    const magnitude = first & 0x80 ? low + this.varint() * 0x40 : low
    if (!Number.isSafeInteger(magnitude)) this.fail("integer beyond 2^53")
    if (first & 1) {
      if (magnitude === 0) this.fail("negative zero")
      return -magnitude
    }
    return magnitude
  }
  float32(): number {
    if (this.remaining < 4) this.fail("unexpected end of input")
    const x = this.view.getFloat32(this.offset, true)
    this.offset += 4
    return x
  }
}
