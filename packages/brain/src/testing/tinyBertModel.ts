/**
 * A seeded, BERT-shaped toy encoder written as an ONNX file plus a WordPiece tokenizer, so the
 * ONNX embedder can be tested without downloading weights; `tinyBertHiddenStates` is the same
 * network in plain JS, the reference the ONNX output is checked against.
 */
import { Effect } from "effect"
import { mkdir, writeFile } from "node:fs/promises"
import { join } from "node:path"

/** Choices for `makeTinyBert`; every default yields a model the protocol accepts. */
export interface TinyBertOptions {
  readonly seed?: number
  /** Width of `last_hidden_state`; anything but 384 must be rejected by the embedder. */
  readonly hiddenSize?: number
  /** Width of the token embeddings before projection to `hiddenSize`. */
  readonly embeddingSize?: number
  /** Older exports omit `token_type_ids`; the embedder must then not feed it. */
  readonly withTokenTypeIds?: boolean
  /** Written to tokenizer_config.json as `model_max_length`. */
  readonly modelMaxLength?: number
}

/** The generated model: its weights (for the JS reference), the ONNX bytes and tokenizer files. */
export interface TinyBert {
  readonly vocab: ReadonlyArray<string>
  readonly hiddenSize: number
  readonly embeddingSize: number
  /** [vocab, embeddingSize], row-major. */
  readonly wordEmbeddings: Float32Array
  /** [2, embeddingSize], or undefined when the model has no `token_type_ids` input. */
  readonly tokenTypeEmbeddings: Float32Array | undefined
  /** [embeddingSize, hiddenSize]: projects each token. */
  readonly tokenProjection: Float32Array
  /** [embeddingSize, hiddenSize]: projects the masked mean of all tokens, mixing context in. */
  readonly contextProjection: Float32Array
  readonly onnx: Uint8Array
  readonly tokenizerJson: Record<string, unknown>
  readonly tokenizerConfig: Record<string, unknown>
}

/** Special tokens first, so their ids match the usual BERT layout ([PAD] = 0). */
export const TINY_BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] as const

const WORDS = [
  "the",
  "a",
  "of",
  "and",
  "in",
  "toy",
  "story",
  "star",
  "wars",
  "space",
  "war",
  "love",
  "night",
  "day",
  "comedy",
  "drama",
  "romance",
  "animation",
  "action",
  "adventure",
  "horror",
  "children",
  "sci",
  "fi",
  "ship",
  "dog",
  ",",
  ".",
  "-",
  "(",
  ")",
  "##s",
  "##ing",
  "##er",
  ..."0123456789".split(""),
  ..."0123456789".split("").map((digit) => `##${digit}`)
]

/** Builds the toy encoder; the same options always give the same bytes. */
export const makeTinyBert = (options: TinyBertOptions = {}): TinyBert => {
  const hiddenSize = options.hiddenSize ?? 384
  const embeddingSize = options.embeddingSize ?? 8
  const random = seededUniform(options.seed ?? 7)
  const vocab = [...TINY_BERT_SPECIAL_TOKENS, ...WORDS]
  const weights = (count: number, scale: number) => Float32Array.from({ length: count }, () => random() * scale)
  // Projections scaled by 1/sqrt(fan-in) keep Tanh away from saturation, so outputs stay distinct.
  const projectionScale = 1 / Math.sqrt(embeddingSize)
  const model = {
    vocab,
    hiddenSize,
    embeddingSize,
    wordEmbeddings: weights(vocab.length * embeddingSize, 1),
    tokenTypeEmbeddings: options.withTokenTypeIds === false ? undefined : weights(2 * embeddingSize, 0.5),
    tokenProjection: weights(embeddingSize * hiddenSize, projectionScale),
    contextProjection: weights(embeddingSize * hiddenSize, projectionScale)
  }
  return {
    ...model,
    onnx: encodeModel(model),
    tokenizerJson: bertTokenizerJson(vocab),
    tokenizerConfig: {
      tokenizer_class: "BertTokenizer",
      do_lower_case: true,
      model_max_length: options.modelMaxLength ?? 512,
      unk_token: "[UNK]",
      cls_token: "[CLS]",
      sep_token: "[SEP]",
      pad_token: "[PAD]",
      mask_token: "[MASK]"
    }
  }
}

/** Where `writeTinyBert` puts the ONNX file: the directory root or `onnx/` (Hub "Xenova" layout). */
export type TinyBertLayout = "root" | "onnx-subdir"

/** Writes model.onnx (or onnx/model.onnx), tokenizer.json and tokenizer_config.json into `dir`. */
export const writeTinyBert = (dir: string, model: TinyBert, layout: TinyBertLayout = "root"): Effect.Effect<void> =>
  // Test support: a failed write is a broken test environment, so it is a defect, not a typed error.
  Effect.promise(async () => {
    const modelDir = layout === "root" ? dir : join(dir, "onnx")
    await mkdir(modelDir, { recursive: true })
    await writeFile(join(modelDir, "model.onnx"), model.onnx)
    await writeFile(join(dir, "tokenizer.json"), JSON.stringify(model.tokenizerJson))
    await writeFile(join(dir, "tokenizer_config.json"), JSON.stringify(model.tokenizerConfig))
  })

/**
 * The ONNX graph computed in plain JS (float64 arithmetic over the float32 weights): one
 * `hiddenSize` vector per token of one sequence.
 */
export const tinyBertHiddenStates = (
  model: TinyBert,
  inputIds: ReadonlyArray<number>,
  tokenTypeIds: ReadonlyArray<number>,
  attentionMask: ReadonlyArray<number>
): Array<Float64Array> => {
  const { embeddingSize: e, hiddenSize: h } = model
  const embeddings = inputIds.map((id, t) => {
    const v = new Float64Array(e)
    for (let i = 0; i < e; i++) {
      v[i] = model.wordEmbeddings[id * e + i]!
        + (model.tokenTypeEmbeddings === undefined ? 0 : model.tokenTypeEmbeddings[tokenTypeIds[t]! * e + i]!)
    }
    return v
  })
  const context = new Float64Array(e)
  let count = 0
  embeddings.forEach((v, t) => {
    const m = attentionMask[t]!
    count += m
    for (let i = 0; i < e; i++) context[i]! += m * v[i]!
  })
  for (let i = 0; i < e; i++) context[i]! /= count
  const contextTerm = project(context, model.contextProjection, h)
  return embeddings.map((v) => {
    const out = project(v, model.tokenProjection, h)
    for (let j = 0; j < h; j++) out[j] = Math.tanh(out[j]! + contextTerm[j]!)
    return out
  })
}

const project = (v: Float64Array, matrix: Float32Array, columns: number): Float64Array => {
  const out = new Float64Array(columns)
  for (let i = 0; i < v.length; i++) {
    for (let j = 0; j < columns; j++) out[j]! += v[i]! * matrix[i * columns + j]!
  }
  return out
}

// xorshift32 mapped to [-1, 1): deterministic weights without a dependency.
const seededUniform = (seed: number) => {
  let state = (seed >>> 0) || 0x9e3779b9
  return (): number => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    state >>>= 0
    return (state / 0x100000000) * 2 - 1
  }
}

const special = (token: string, typeId: number) => ({ SpecialToken: { id: token, type_id: typeId } })

// The tokenizer.json layout of a Hugging Face BERT tokenizer, cut down to this vocabulary.
const bertTokenizerJson = (vocab: ReadonlyArray<string>): Record<string, unknown> => {
  const ids = (token: string) => vocab.indexOf(token)
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: TINY_BERT_SPECIAL_TOKENS.map((token) => ({
      id: ids(token),
      content: token,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true
    })),
    normalizer: {
      type: "BertNormalizer",
      clean_text: true,
      handle_chinese_chars: true,
      strip_accents: null,
      lowercase: true
    },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: {
      type: "TemplateProcessing",
      single: [special("[CLS]", 0), { Sequence: { id: "A", type_id: 0 } }, special("[SEP]", 0)],
      pair: [
        special("[CLS]", 0),
        { Sequence: { id: "A", type_id: 0 } },
        special("[SEP]", 0),
        { Sequence: { id: "B", type_id: 1 } },
        special("[SEP]", 1)
      ],
      special_tokens: Object.fromEntries(
        ["[CLS]", "[SEP]"].map((token) => [token, { id: token, ids: [ids(token)], tokens: [token] }])
      )
    },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: {
      type: "WordPiece",
      unk_token: "[UNK]",
      continuing_subword_prefix: "##",
      max_input_chars_per_word: 100,
      vocab: Object.fromEntries(vocab.map((token, id) => [token, id]))
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ONNX protobuf encoding: only the messages and fields this graph needs (field numbers from onnx.proto).

const IR_VERSION = 8
const OPSET_VERSION = 14
const FLOAT = 1
const INT64 = 7
const ATTRIBUTE_INT = 2

type Message = ReadonlyArray<Uint8Array>

const encodeModel = (model: Omit<TinyBert, "onnx" | "tokenizerJson" | "tokenizerConfig">): Uint8Array => {
  const { embeddingSize: e, hiddenSize: h } = model
  const hasTypes = model.tokenTypeEmbeddings !== undefined
  const sequence = ["batch", "sequence"]
  const nodes: Array<Message> = [
    node("Gather", ["word_embeddings", "input_ids"], [hasTypes ? "words" : "embeddings"]),
    ...(hasTypes
      ? [
        node("Gather", ["token_type_embeddings", "token_type_ids"], ["types"]),
        node("Add", ["words", "types"], ["embeddings"])
      ]
      : []),
    // Masked mean of the embeddings: a stand-in for attention, so padding must not change outputs.
    node("Cast", ["attention_mask"], ["mask"], [intAttribute("to", FLOAT)]),
    node("Unsqueeze", ["mask", "last_axis"], ["mask3"]),
    node("Mul", ["embeddings", "mask3"], ["masked"]),
    node("ReduceSum", ["masked", "sequence_axis"], ["context_sum"], [intAttribute("keepdims", 1)]),
    node("ReduceSum", ["mask3", "sequence_axis"], ["context_count"], [intAttribute("keepdims", 1)]),
    node("Div", ["context_sum", "context_count"], ["context"]),
    node("MatMul", ["embeddings", "token_projection"], ["token_term"]),
    node("MatMul", ["context", "context_projection"], ["context_term"]),
    node("Add", ["token_term", "context_term"], ["pre_activation"]),
    node("Tanh", ["pre_activation"], ["last_hidden_state"])
  ]
  const initializers: Array<Message> = [
    floatTensor("word_embeddings", [model.vocab.length, e], model.wordEmbeddings),
    ...(model.tokenTypeEmbeddings === undefined
      ? []
      : [floatTensor("token_type_embeddings", [2, e], model.tokenTypeEmbeddings)]),
    floatTensor("token_projection", [e, h], model.tokenProjection),
    floatTensor("context_projection", [e, h], model.contextProjection),
    int64Tensor("last_axis", [2]),
    int64Tensor("sequence_axis", [1])
  ]
  const inputs = [
    valueInfo("input_ids", INT64, sequence),
    valueInfo("attention_mask", INT64, sequence),
    ...(hasTypes ? [valueInfo("token_type_ids", INT64, sequence)] : [])
  ]
  const graph: Message = [
    ...nodes.map((n) => messageField(1, n)),
    stringField(2, "tiny_bert"),
    ...initializers.map((t) => messageField(5, t)),
    ...inputs.map((i) => messageField(11, i)),
    messageField(12, valueInfo("last_hidden_state", FLOAT, [...sequence, h]))
  ]
  return concat([
    intField(1, IR_VERSION),
    stringField(2, "omega-tiny-bert"),
    messageField(7, graph),
    messageField(8, [intField(2, OPSET_VERSION)])
  ])
}

// NodeProto: input = 1, output = 2, name = 3, op_type = 4, attribute = 5.
const node = (
  opType: string,
  inputs: ReadonlyArray<string>,
  outputs: ReadonlyArray<string>,
  attributes: ReadonlyArray<Message> = []
): Message => [
  ...inputs.map((name) => stringField(1, name)),
  ...outputs.map((name) => stringField(2, name)),
  stringField(3, outputs[0]!),
  stringField(4, opType),
  ...attributes.map((attribute) => messageField(5, attribute))
]

// AttributeProto: name = 1, i = 3, type = 20.
const intAttribute = (name: string, value: number): Message => [
  stringField(1, name),
  intField(3, value),
  intField(20, ATTRIBUTE_INT)
]

// TensorProto: dims = 1, data_type = 2, name = 8, raw_data = 9 (little-endian).
const floatTensor = (name: string, dims: ReadonlyArray<number>, values: Float32Array): Message => {
  const raw = new DataView(new ArrayBuffer(values.length * 4))
  values.forEach((v, i) => raw.setFloat32(i * 4, v, true))
  return tensor(name, FLOAT, dims, new Uint8Array(raw.buffer))
}

const int64Tensor = (name: string, values: ReadonlyArray<number>): Message => {
  const raw = new DataView(new ArrayBuffer(values.length * 8))
  values.forEach((v, i) => raw.setBigInt64(i * 8, BigInt(v), true))
  return tensor(name, INT64, [values.length], new Uint8Array(raw.buffer))
}

const tensor = (name: string, dataType: number, dims: ReadonlyArray<number>, raw: Uint8Array): Message => [
  ...dims.map((d) => intField(1, d)),
  intField(2, dataType),
  stringField(8, name),
  bytesField(9, raw)
]

// ValueInfoProto { name = 1, type = 2 } > TypeProto { tensor_type = 1 } > Tensor { elem_type = 1,
// shape = 2 } > TensorShapeProto { dim = 1 } > Dimension { dim_value = 1, dim_param = 2 }.
const valueInfo = (name: string, elemType: number, dims: ReadonlyArray<number | string>): Message => [
  stringField(1, name),
  messageField(2, [
    messageField(1, [
      intField(1, elemType),
      messageField(2, dims.map((d) => messageField(1, [typeof d === "number" ? intField(1, d) : stringField(2, d)])))
    ])
  ])
]

// Protobuf wire format: a key is (field << 3 | wire type); 0 = varint, 2 = length-delimited.
const intField = (field: number, value: number): Uint8Array => concat([varint(field * 8), varint(value)])

const bytesField = (field: number, bytes: Uint8Array): Uint8Array =>
  concat([varint(field * 8 + 2), varint(bytes.length), bytes])

const stringField = (field: number, text: string): Uint8Array => bytesField(field, new TextEncoder().encode(text))

const messageField = (field: number, message: Message): Uint8Array => bytesField(field, concat(message))

const varint = (value: number): Uint8Array => {
  // Negative int64s need ten-byte two's complement; nothing in this graph is negative.
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`varint expects a non-negative integer: ${value}`)
  const bytes: Array<number> = []
  let rest = value
  while (rest >= 0x80) {
    bytes.push((rest % 0x80) | 0x80)
    rest = Math.floor(rest / 0x80)
  }
  bytes.push(rest)
  return Uint8Array.from(bytes)
}

const concat = (parts: Message): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0))
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.length
  }
  return out
}
