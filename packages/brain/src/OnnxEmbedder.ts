/** Live `Embedder`: a MiniLM-class sentence-transformer in ONNX, run on the CPU with onnxruntime-node. */
import { Tokenizer } from "@huggingface/tokenizers"
import { type Embedding, EMBEDDING_DIMENSIONS } from "@omega/protocol"
import { Effect, Layer } from "effect"
import type { Stats } from "node:fs"
import { readFile, stat } from "node:fs/promises"
import { basename, join, resolve } from "node:path"
import type { InferenceSession, Tensor } from "onnxruntime-node"
import { type ContentText, Embedder, EmbedError, normalize } from "./Embedder.ts"

/** Where the model lives and how much of each text it reads. */
export interface OnnxEmbedderOptions {
  /** Holds model.onnx (or onnx/model.onnx), tokenizer.json and optionally tokenizer_config.json. */
  readonly modelDir: string
  /** Tokens per text, special tokens included; defaults to the tokenizer's model_max_length capped at 256. */
  readonly maxLength?: number
  /** Texts per ONNX run in `embedTexts`; defaults to 32. */
  readonly batchSize?: number
}

/** The ONNX `Embedder` plus batched embedding for bulk work such as indexing a catalog. */
export type OnnxEmbedderService = Embedder["Service"] & {
  /** Tokens each text is truncated to, special tokens included. */
  readonly maxLength: number
  /** Embeds many texts, `batchSize` per model run; the result is in input order. */
  readonly embedTexts: (texts: ReadonlyArray<string>) => Effect.Effect<Array<Embedding>, EmbedError>
}

/** Layers that provide `Embedder` from a sentence-transformer ONNX model on disk. */
export const OnnxEmbedder = {
  /** Loads the model when the layer is built; the ONNX session is released when it is torn down. */
  layer: (options: OnnxEmbedderOptions): Layer.Layer<Embedder, EmbedError> => Layer.effect(Embedder, makeOnnx(options))
} as const

// MiniLM sentence-transformers were trained on at most 256 tokens, and attention cost grows with
// the square of the length, so longer inputs buy nothing but latency on a TV CPU.
const DEFAULT_MAX_LENGTH = 256
const DEFAULT_BATCH_SIZE = 32
const INPUT_IDS = "input_ids"
const ATTENTION_MASK = "attention_mask"
const TOKEN_TYPE_IDS = "token_type_ids"
const KNOWN_INPUTS: ReadonlySet<string> = new Set([INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS])

/** Loads tokenizer and ONNX session from `options.modelDir` and checks the model yields 384-d vectors. */
export const makeOnnx = Effect.fn("OnnxEmbedder.make")(function*(options: OnnxEmbedderOptions) {
  // Loaded only when a model is configured: the native runtime costs tens of MB of RSS on a TV,
  // and it is an optional peer dependency (288 MB installed), so a TV app without a model skips it.
  const ort = yield* Effect.tryPromise({
    try: () => import("onnxruntime-node"),
    catch: (cause) =>
      new EmbedError({
        message: isModuleNotFound(cause)
          ? `modelDir needs onnxruntime-node, an optional peer dependency that is not installed (npm install onnxruntime-node@${ONNXRUNTIME_RANGE})`
          : `cannot load onnxruntime-node: ${describe(cause)}`,
        cause
      })
  })
  const dir = resolve(options.modelDir)
  const tokenizer = yield* loadTokenizer(dir)
  const maxLength = yield* resolveMaxLength(options.maxLength, tokenizer)
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    return yield* new EmbedError({ message: `batchSize must be a positive integer, got ${batchSize}` })
  }
  const modelPath = yield* findModel(dir)
  const session = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: () => ort.InferenceSession.create(modelPath),
      catch: (cause) => new EmbedError({ message: `cannot load ONNX model ${modelPath}: ${describe(cause)}`, cause })
    }),
    // A release that fails at shutdown leaves nothing for a caller to do; it is only worth a log line.
    (opened) =>
      Effect.tryPromise(() => opened.release()).pipe(
        Effect.catch((error) => Effect.logWarning(`releasing ONNX session for ${modelPath} failed`, error))
      )
  )
  const outputName = yield* checkSignature(session, modelPath)

  const runBatch = (texts: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const encoded = yield* Effect.forEach(texts, (text) => encode(tokenizer, text, maxLength))
      const feeds = toFeeds(ort.Tensor, encoded, tokenizer.padId, session.inputNames)
      const outputs = yield* Effect.tryPromise({
        try: () => session.run(feeds),
        catch: (cause) =>
          new EmbedError({ message: `ONNX model ${modelPath} failed to run: ${describe(cause)}`, cause })
      })
      return yield* meanPool(outputs[outputName], encoded, modelPath)
    })

  const embedTexts = Effect.fn("OnnxEmbedder.embedTexts")(function*(texts: ReadonlyArray<string>) {
    const batches: Array<ReadonlyArray<string>> = []
    for (let i = 0; i < texts.length; i += batchSize) batches.push(texts.slice(i, i + batchSize))
    return (yield* Effect.forEach(batches, runBatch)).flat()
  })

  const embedText = Effect.fn("OnnxEmbedder.embedText")(function*(text: string) {
    const [embedding] = yield* runBatch([text])
    return embedding!
  })

  const embedContent = Effect.fn("OnnxEmbedder.embedContent")(function*(item: ContentText) {
    return yield* embedText(contentText(item))
  })

  // One run at load time turns a wrong hidden size or a broken graph into a load error, not a
  // failure on the first real request.
  yield* runBatch([""])

  const service: OnnxEmbedderService = {
    model: `onnx:${basename(dir)}`,
    dimensions: EMBEDDING_DIMENSIONS,
    maxLength,
    embedText,
    embedContent,
    embedTexts
  }
  return service
})

/** The sentence a catalog item is embedded as: its title, then its genres in words. */
export const contentText = (item: ContentText): string =>
  item.genres.length === 0 ? item.title : `${item.title}. Genres: ${item.genres.join(", ")}.`

// ---------------------------------------------------------------------------------------------
// Loading

interface LoadedTokenizer {
  readonly tokenizer: Tokenizer
  readonly config: Readonly<Record<string, unknown>>
  /** Any id works for padding since the mask hides it; the pad token keeps inputs BERT-like. */
  readonly padId: number
  /** How many tokens the post-processor adds ([CLS] and [SEP] for BERT). */
  readonly specialTokens: number
}

const loadTokenizer = Effect.fnUntraced(function*(dir: string) {
  if (!(yield* isDirectory(dir))) {
    return yield* new EmbedError({ message: `model directory ${dir} does not exist` })
  }
  const tokenizerPath = join(dir, "tokenizer.json")
  if (!(yield* isFile(tokenizerPath))) {
    return yield* new EmbedError({ message: `no tokenizer.json in ${dir}; it must sit next to the ONNX model` })
  }
  const json = yield* readJsonObject(tokenizerPath)
  const configPath = join(dir, "tokenizer_config.json")
  const config = (yield* isFile(configPath)) ? yield* readJsonObject(configPath) : {}
  const tokenizer = yield* Effect.try({
    try: () => new Tokenizer(json, config),
    catch: (cause) =>
      new EmbedError({ message: `cannot build a tokenizer from ${tokenizerPath}: ${describe(cause)}`, cause })
  })
  const specialTokens = yield* Effect.try({
    try: () => tokenizer.encode("").ids.length,
    catch: (cause) => new EmbedError({ message: `tokenizer from ${tokenizerPath} fails: ${describe(cause)}`, cause })
  })
  const padToken = typeof config["pad_token"] === "string" ? config["pad_token"] : "[PAD]"
  const loaded: LoadedTokenizer = { tokenizer, config, padId: tokenizer.token_to_id(padToken) ?? 0, specialTokens }
  return loaded
})

const resolveMaxLength = Effect.fnUntraced(function*(requested: number | undefined, loaded: LoadedTokenizer) {
  const declared = loaded.config["model_max_length"]
  // Tokenizers without a limit declare a huge sentinel (1e30), which the cap below absorbs.
  const modelMax = typeof declared === "number" && declared > 0 ? declared : undefined
  if (requested === undefined) return Math.min(modelMax ?? DEFAULT_MAX_LENGTH, DEFAULT_MAX_LENGTH)
  if (!Number.isInteger(requested) || requested <= loaded.specialTokens) {
    return yield* new EmbedError({
      message: `maxLength must be an integer above the ${loaded.specialTokens} special tokens, got ${requested}`
    })
  }
  if (modelMax !== undefined && requested > modelMax) {
    return yield* new EmbedError({
      message: `maxLength ${requested} exceeds the model's model_max_length of ${modelMax}`
    })
  }
  return requested
})

const findModel = Effect.fnUntraced(function*(dir: string) {
  const candidates = [join(dir, "model.onnx"), join(dir, "onnx", "model.onnx")]
  for (const path of candidates) {
    if (yield* isFile(path)) return path
  }
  return yield* new EmbedError({ message: `no ONNX model in ${dir}: expected model.onnx or onnx/model.onnx` })
})

/** Returns the output to pool, after checking the graph takes only inputs we know how to feed. */
const checkSignature = Effect.fnUntraced(function*(session: InferenceSession, modelPath: string) {
  const unknown = session.inputNames.filter((name) => !KNOWN_INPUTS.has(name))
  if (!session.inputNames.includes(INPUT_IDS) || unknown.length > 0) {
    return yield* new EmbedError({
      message: `ONNX model ${modelPath} takes inputs [${session.inputNames.join(", ")}]; `
        + `expected input_ids with optional attention_mask and token_type_ids`
    })
  }
  // Exports that also emit a pooled vector list it after the per-token states; prefer the name.
  const outputName = session.outputNames.includes("last_hidden_state")
    ? "last_hidden_state"
    : session.outputNames[0]
  if (outputName === undefined) {
    return yield* new EmbedError({ message: `ONNX model ${modelPath} has no outputs` })
  }
  return outputName
})

const isFile = (path: string) => statIs(path, (info) => info.isFile())

const isDirectory = (path: string) => statIs(path, (info) => info.isDirectory())

const statIs = (path: string, test: (info: Stats) => boolean) =>
  Effect.tryPromise(() => stat(path)).pipe(
    Effect.map(test),
    Effect.orElseSucceed(() => false)
  )

const readJsonObject = (path: string) =>
  Effect.tryPromise({
    try: async () => JSON.parse(await readFile(path, "utf8")) as unknown,
    catch: (cause) => new EmbedError({ message: `${path} is not readable JSON: ${describe(cause)}`, cause })
  }).pipe(
    Effect.filterOrFail(
      (json): json is Record<string, unknown> => typeof json === "object" && json !== null && !Array.isArray(json),
      () => new EmbedError({ message: `${path} must hold a JSON object` })
    )
  )

// ---------------------------------------------------------------------------------------------
// Running

interface PostProcessed {
  readonly tokens: ReadonlyArray<string>
  readonly token_type_ids?: ReadonlyArray<number> | undefined
}

interface Encoded {
  readonly ids: ReadonlyArray<number>
  readonly typeIds: ReadonlyArray<number>
}

/**
 * Tokenizes with [CLS]/[SEP] (or whatever the post-processor adds) kept after truncation:
 * tokenizers.js has no truncation, so the content tokens are cut before post-processing.
 */
const encode = ({ specialTokens, tokenizer }: LoadedTokenizer, text: string, maxLength: number) =>
  Effect.try({
    try: (): Encoded => {
      const content = tokenizer.tokenize(text)
      const budget = maxLength - specialTokens
      const kept = content.length > budget ? content.slice(0, budget) : content
      const processed: PostProcessed = tokenizer.post_processor?.post_process(kept, null, true) ?? { tokens: kept }
      const unknownId = tokenizer.model?.unk_token_id
      const ids = processed.tokens.map((token) => {
        const id = tokenizer.token_to_id(token) ?? unknownId
        if (id === undefined) throw new Error(`token ${JSON.stringify(token)} is not in the vocabulary`)
        return id
      })
      return { ids, typeIds: processed.token_type_ids ?? ids.map(() => 0) }
    },
    catch: (cause) => new EmbedError({ message: `cannot tokenize text: ${describe(cause)}`, cause })
  })

/**
 * Right-pads a batch into int64 [batch, sequence] tensors for just the inputs the graph declares,
 * since older exports drop token_type_ids (onnxruntime-node ignores extra feeds, but need not).
 */
const toFeeds = (
  TensorClass: typeof Tensor,
  batch: ReadonlyArray<Encoded>,
  padId: number,
  inputNames: ReadonlyArray<string>
): Record<string, Tensor> => {
  const sequence = Math.max(...batch.map((e) => e.ids.length))
  const ids = new BigInt64Array(batch.length * sequence).fill(BigInt(padId))
  const mask = new BigInt64Array(batch.length * sequence)
  const types = new BigInt64Array(batch.length * sequence)
  batch.forEach((encoded, row) => {
    encoded.ids.forEach((id, t) => {
      ids[row * sequence + t] = BigInt(id)
      mask[row * sequence + t] = 1n
      types[row * sequence + t] = BigInt(encoded.typeIds[t] ?? 0)
    })
  })
  const data: Record<string, BigInt64Array> = { [INPUT_IDS]: ids, [ATTENTION_MASK]: mask, [TOKEN_TYPE_IDS]: types }
  const dims = [batch.length, sequence]
  // checkSignature admitted only names in KNOWN_INPUTS, so every name has data.
  return Object.fromEntries(inputNames.map((name) => [name, new TensorClass("int64", data[name]!, dims)]))
}

/** Sentence-transformers pooling: mean of the unpadded token states, then unit length. */
const meanPool = Effect.fnUntraced(function*(
  output: Tensor | undefined,
  batch: ReadonlyArray<Encoded>,
  modelPath: string
) {
  if (output === undefined || output.type !== "float32" || output.dims.length !== 3) {
    return yield* new EmbedError({
      message: `ONNX model ${modelPath} must output float32 [batch, sequence, hidden] token states, got `
        + (output === undefined ? "nothing" : `${output.type} [${output.dims.join(", ")}]`)
    })
  }
  const [, sequence, hidden] = output.dims as [number, number, number]
  if (hidden !== EMBEDDING_DIMENSIONS) {
    return yield* new EmbedError({
      message: `ONNX model ${modelPath} produces ${hidden}-d token states; `
        + `the protocol requires ${EMBEDDING_DIMENSIONS}-d embeddings (a MiniLM-class model)`
    })
  }
  const states = output.data as Float32Array
  const embeddings: Array<Embedding> = []
  for (const [row, encoded] of batch.entries()) {
    const sum = new Float64Array(hidden)
    // Padding sits after the real tokens, so the first ids.length states are exactly the masked ones.
    for (let t = 0; t < encoded.ids.length; t++) {
      const offset = (row * sequence + t) * hidden
      for (let j = 0; j < hidden; j++) sum[j]! += states[offset + j]!
    }
    const embedding = normalize(Float32Array.from(sum, (v) => v / encoded.ids.length))
    if (!embedding.every(Number.isFinite)) {
      return yield* new EmbedError({ message: `ONNX model ${modelPath} produced non-finite values` })
    }
    embeddings.push(embedding)
  }
  return embeddings
})

const describe = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

/** The range brain's package.json asks of its optional peer, for the install hint. */
const ONNXRUNTIME_RANGE = "^1.30.0"

const isModuleNotFound = (cause: unknown): boolean =>
  typeof cause === "object" && cause !== null && "code" in cause && cause.code === "ERR_MODULE_NOT_FOUND"
