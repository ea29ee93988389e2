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
 * validation is the schema's job.
 */
import { Data, type Schema, SchemaAST } from "effect"

/** The bytes do not follow the layout. `unknownVariant` marks an out-of-range top-level union index. */
export class BinaryReadError extends Data.TaggedError("BinaryReadError")<{
  readonly message: string
  readonly unknownVariant: boolean
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
  return {
    write: (encoded) => {
      const out = new Writer()
      write(root, encoded, out, "")
      return out.finish()
    },
    read: (bytes) => {
      const input = new Reader(bytes)
      const value = read(root, input, 0, "")
      if (input.offset !== bytes.length) {
        throw new BinaryReadError({
          message: `${bytes.length - input.offset} trailing bytes after the value`,
          unknownVariant: false
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

const intNodes = new WeakMap<SchemaAST.AST, boolean>()
const isIntNode = (ast: SchemaAST.AST): boolean => {
  let known = intNodes.get(ast)
  if (known === undefined) {
    known = ast.checks !== undefined && hasCheck(ast.checks, "effect/schema/isInt")
    intNodes.set(ast, known)
  }
  return known
}
const hasCheck = (checks: ReadonlyArray<SchemaAST.Check<unknown>>, id: string): boolean =>
  checks.some((check) =>
    (check.annotations?.["representation"] as { readonly id?: unknown } | undefined)?.id === id ||
    (check._tag === "FilterGroup" && hasCheck(check.checks, id))
  )

const optionalFields = new WeakMap<SchemaAST.Objects, ReadonlyArray<SchemaAST.PropertySignature>>()
const optionalOf = (ast: SchemaAST.Objects): ReadonlyArray<SchemaAST.PropertySignature> => {
  let known = optionalFields.get(ast)
  if (known === undefined) {
    known = ast.propertySignatures.filter((p) => SchemaAST.isOptional(p.type))
    optionalFields.set(ast, known)
  }
  return known
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const utf8 = new TextEncoder()
const strictUtf8 = new TextDecoder("utf-8", { fatal: true })
const isObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u) && !(u instanceof Uint8Array)

/** Whether `value` can be written as `ast`; picks the union member to write. */
const fits = (ast: SchemaAST.AST, value: unknown): boolean => {
  switch (ast._tag) {
    case "Literal":
      return value === ast.literal
    case "String":
      return typeof value === "string"
    case "Number":
      return typeof value === "number"
    case "Boolean":
      return typeof value === "boolean"
    case "Null":
      return value === null
    case "Undefined":
    case "Void":
      return value === undefined
    case "Declaration":
      return value instanceof Uint8Array
    case "Arrays":
      return Array.isArray(value)
    case "Objects":
      return isObject(value) && ast.propertySignatures.every((p) => {
        const present = Object.hasOwn(value, p.name as string)
        if (!present) return SchemaAST.isOptional(p.type)
        return p.type._tag !== "Literal" || value[p.name as string] === p.type.literal
      })
    case "Union":
      return ast.types.some((t) => fits(t, value))
    case "Suspend":
      return fits(ast.thunk(), value)
    default:
      return false
  }
}

const mismatch = (path: string, expected: string, value: unknown) =>
  new BinaryWriteError({ message: `at ${path || "<root>"}: expected ${expected}, got ${describe(value)}` })
const describe = (u: unknown) => (u === null ? "null" : Array.isArray(u) ? "an array" : typeof u)

const write = (ast: SchemaAST.AST, value: unknown, out: Writer, path: string): void => {
  switch (ast._tag) {
    case "Literal":
      if (value !== ast.literal) throw mismatch(path, JSON.stringify(ast.literal), value)
      return
    case "Null":
    case "Undefined":
    case "Void":
      if (!fits(ast, value)) throw mismatch(path, ast._tag.toLowerCase(), value)
      return
    case "Boolean":
      if (typeof value !== "boolean") throw mismatch(path, "a boolean", value)
      out.byte(value ? 1 : 0)
      return
    case "Number":
      if (typeof value !== "number") throw mismatch(path, "a number", value)
      if (isIntNode(ast)) {
        if (!Number.isSafeInteger(value)) throw mismatch(path, "a safe integer", value)
        out.signedVarint(value)
      } else {
        if (Number.isFinite(value) && !Number.isFinite(Math.fround(value))) {
          throw new BinaryWriteError({ message: `at ${path}: ${value} is outside the float32 range` })
        }
        out.float32(value)
      }
      return
    case "String":
      if (typeof value !== "string") throw mismatch(path, "a string", value)
      if (!value.isWellFormed()) throw new BinaryWriteError({ message: `at ${path}: string has lone surrogates` })
      if (UUID.test(value)) {
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
      return
    case "Declaration":
      if (!(value instanceof Uint8Array)) throw mismatch(path, "a Uint8Array", value)
      out.varint(value.length)
      out.bytes(value)
      return
    case "Arrays": {
      if (!Array.isArray(value)) throw mismatch(path, "an array", value)
      const fixed = ast.elements.length
      if (ast.rest.length === 0 ? value.length !== fixed : value.length < fixed) {
        throw mismatch(path, `${fixed} elements`, value)
      }
      ast.elements.forEach((e, i) => write(e, value[i], out, `${path}[${i}]`))
      const rest = ast.rest[0]
      if (rest !== undefined) {
        out.varint(value.length - fixed)
        for (let i = fixed; i < value.length; i++) write(rest, value[i], out, `${path}[${i}]`)
      }
      return
    }
    case "Objects": {
      if (!isObject(value)) throw mismatch(path, "an object", value)
      const optional = optionalOf(ast)
      for (let i = 0; i < optional.length; i += 8) {
        let mask = 0
        for (let j = 0; j < 8 && i + j < optional.length; j++) {
          if (Object.hasOwn(value, optional[i + j]!.name as string)) mask |= 1 << j
        }
        out.byte(mask)
      }
      for (const p of ast.propertySignatures) {
        const key = p.name as string
        if (!Object.hasOwn(value, key)) {
          if (SchemaAST.isOptional(p.type)) continue
          throw new BinaryWriteError({ message: `at ${path}: missing required field "${key}"` })
        }
        write(p.type, value[key], out, path === "" ? key : `${path}.${key}`)
      }
      return
    }
    case "Union": {
      const index = ast.types.findIndex((t) => fits(t, value))
      if (index < 0) throw mismatch(path, "a member of the union", value)
      if (ast.types.length > 1) out.varint(index)
      write(ast.types[index]!, value, out, path)
      return
    }
    case "Suspend":
      return write(ast.thunk(), value, out, path)
    default:
      throw new BinaryWriteError({ message: `at ${path}: no binary layout for ${ast._tag}` })
  }
}

const read = (ast: SchemaAST.AST, input: Reader, depth: number, path: string): unknown => {
  if (depth > MAX_DEPTH) input.fail(path, `nesting deeper than ${MAX_DEPTH}`)
  switch (ast._tag) {
    case "Literal":
      return ast.literal
    case "Null":
      return null
    case "Undefined":
    case "Void":
      return undefined
    case "Boolean": {
      const b = input.byte(path)
      if (b > 1) input.fail(path, `boolean byte ${b}`)
      return b === 1
    }
    case "Number":
      return isIntNode(ast) ? input.signedVarint(path) : input.float32(path)
    case "String": {
      const header = input.varint(path)
      if (header === 1) {
        const b = input.bytes(16, path)
        const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")
        return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
      }
      if (header % 2 === 1) input.fail(path, `unknown string kind ${header}`)
      const bytes = input.bytes(header / 2, path)
      try {
        return strictUtf8.decode(bytes)
      } catch {
        return input.fail(path, "invalid UTF-8")
      }
    }
    case "Declaration":
      return input.bytes(input.varint(path), path).slice()
    case "Arrays": {
      const out: Array<unknown> = ast.elements.map((e, i) => read(e, input, depth + 1, `${path}[${i}]`))
      const rest = ast.rest[0]
      if (rest !== undefined) {
        const count = input.varint(path)
        // Every element takes at least one byte in the protocol schemas; a larger count is a lie.
        if (count > input.remaining) input.fail(path, `array of ${count} elements in ${input.remaining} bytes`)
        for (let i = 0; i < count; i++) out.push(read(rest, input, depth + 1, `${path}[${out.length}]`))
      }
      return out
    }
    case "Objects": {
      const optional = optionalOf(ast)
      const present = new Set<SchemaAST.PropertySignature>()
      for (let i = 0; i < optional.length; i += 8) {
        const mask = input.byte(path)
        const width = Math.min(8, optional.length - i)
        if (mask >> width !== 0) input.fail(path, "presence bits for fields that do not exist")
        for (let j = 0; j < width; j++) if (mask & (1 << j)) present.add(optional[i + j]!)
      }
      const out: Record<string, unknown> = {}
      for (const p of ast.propertySignatures) {
        if (SchemaAST.isOptional(p.type) && !present.has(p)) continue
        const key = p.name as string
        out[key] = read(p.type, input, depth + 1, path === "" ? key : `${path}.${key}`)
      }
      return out
    }
    case "Union": {
      const index = ast.types.length > 1 ? input.varint(path) : 0
      const member = ast.types[index]
      if (member === undefined) {
        throw new BinaryReadError({
          message: `at ${path || "<root>"}: variant ${index} of ${ast.types.length}`,
          unknownVariant: depth === 0
        })
      }
      return read(member, input, depth, path)
    }
    case "Suspend":
      return read(ast.thunk(), input, depth + 1, path)
    default:
      return input.fail(path, `no binary layout for ${ast._tag}`)
  }
}

class Writer {
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
  finish(): Uint8Array {
    return this.buffer.slice(0, this.length)
  }
}

class Reader {
  offset = 0
  private readonly input: Uint8Array
  private readonly view: DataView
  constructor(input: Uint8Array) {
    this.input = input
    this.view = new DataView(input.buffer, input.byteOffset, input.byteLength)
  }
  get remaining() {
    return this.input.length - this.offset
  }
  fail(path: string, message: string): never {
    throw new BinaryReadError({ message: `at ${path || "<root>"}: ${message}`, unknownVariant: false })
  }
  byte(path: string): number {
    if (this.offset >= this.input.length) this.fail(path, "unexpected end of input")
    return this.input[this.offset++]!
  }
  bytes(n: number, path: string): Uint8Array {
    if (n > this.remaining) this.fail(path, `${n} bytes announced, ${this.remaining} left`)
    const out = this.input.subarray(this.offset, this.offset + n)
    this.offset += n
    return out
  }
  varint(path: string): number {
    let result = 0
    let scale = 1
    for (let i = 0; i < 8; i++) {
      const b = this.byte(path)
      result += (b & 0x7f) * scale
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(result)) this.fail(path, "varint beyond 2^53")
        return result
      }
      scale *= 0x80
    }
    return this.fail(path, "varint longer than 8 bytes")
  }
  signedVarint(path: string): number {
    const first = this.byte(path)
    const low = (first >> 1) & 0x3f
    const magnitude = first & 0x80 ? low + this.varint(path) * 0x40 : low
    if (!Number.isSafeInteger(magnitude)) this.fail(path, "integer beyond 2^53")
    if (first & 1) {
      if (magnitude === 0) this.fail(path, "negative zero")
      return -magnitude
    }
    return magnitude
  }
  float32(path: string): number {
    if (this.remaining < 4) this.fail(path, "unexpected end of input")
    const x = this.view.getFloat32(this.offset, true)
    this.offset += 4
    return x
  }
}
